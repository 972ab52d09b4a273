"""An interactive request runs between two sampling steps of a book's running pass, in a real engine process.

A pass cannot be cut below one row, and one row of a book can take longer than the interactive target (about a second
on this CPU), so the engine runs waiting interactive chunks in a pass of their own between two steps of the running
pass, and then goes on with it. What must hold: the request is answered while the book's pass is still running, and the
book's audio is exactly what it is without the interruption (the sampler's text cache is the book's again after the
nested pass)."""

from __future__ import annotations

import time

import numpy as np

from tests.conftest import REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import SynthesisRequest, VoiceInput
from worker.runtime.host import EngineHost

BOOK, INTERACTIVE = 6, 0
# one sentence: one chunk, one pass (a book of several chunks would let the request in between its passes anyway)
SENTENCE = "En un lugar de la Mancha, de cuyo nombre no quiero acordarme."


def _inside_a_book_pass(settings, book: SynthesisRequest, request: SynthesisRequest) -> dict[str, np.ndarray]:
    """Each request alone, then the request sent while the book's pass runs: the four waveforms."""
    host = EngineHost(settings, [None], max_wait_s=0.0)
    host.start(timeout_s=300)
    try:
        out = {"book alone": host.synthesize([book], ["book-alone"], priority=BOOK)[0].waveform,
               "request alone": host.synthesize([request], ["tts-alone"], priority=INTERACTIVE)[0].waveform}
        running = host.submit([book], ["book"], priority=BOOK)
        deadline = time.monotonic() + 60
        while running[1].started_at is None and time.monotonic() < deadline:  # the book's pass has begun
            time.sleep(0.005)
        assert running[1].started_at is not None
        out["request inside"] = host.wait(host.submit([request], ["tts"], priority=INTERACTIVE))[0].waveform
        assert not running[1].future.done(), "the request waited for the whole book pass"
        out["book interrupted"] = host.wait(running)[0].waveform
    finally:
        host.close()
    return out


def test_an_interactive_request_runs_inside_a_book_pass_and_both_sound_as_alone(engine_settings, ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    audio = _inside_a_book_pass(engine_settings, SynthesisRequest(SENTENCE, voice, JobParams(nfe_step=64), seed=11),
                                SynthesisRequest("Hola, esta es una prueba.", voice, JobParams(nfe_step=4), seed=12))
    assert np.array_equal(audio["book interrupted"], audio["book alone"])
    assert np.array_equal(audio["request inside"], audio["request alone"])


def test_a_full_precision_request_inside_a_bf16_book_pass_keeps_its_precision(engine_settings, ref_wav_bytes):
    """The book's pass samples under bf16 autocast; the request inside it asked for fp32 (``use_fp16: false``), and
    the vocoder always runs in fp32: neither may inherit the book's autocast."""
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    audio = _inside_a_book_pass(engine_settings.model_copy(update={"precision": "bf16"}),
                                SynthesisRequest(SENTENCE, voice, JobParams(nfe_step=64), seed=11),
                                SynthesisRequest("Hola, esta es una prueba.", voice,
                                                 JobParams(nfe_step=4, use_fp16=False), seed=12))
    assert np.array_equal(audio["request inside"], audio["request alone"])
    assert np.array_equal(audio["book interrupted"], audio["book alone"])
