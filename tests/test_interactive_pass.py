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


def test_an_interactive_request_runs_inside_a_book_pass_and_the_book_sounds_the_same(engine_settings, ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    # one sentence: one chunk, one pass (a book of several chunks would let the request in between its passes anyway)
    book = SynthesisRequest("En un lugar de la Mancha, de cuyo nombre no quiero acordarme.", voice,
                            JobParams(nfe_step=64), seed=11)
    request = SynthesisRequest("Hola, esta es una prueba.", voice, JobParams(nfe_step=4), seed=12)
    host = EngineHost(engine_settings, [None], max_wait_s=0.0)
    host.start(timeout_s=300)
    try:
        alone = host.synthesize([book], ["book-alone"], priority=BOOK)[0].waveform
        running = host.submit([book], ["book"], priority=BOOK)
        deadline = time.monotonic() + 60
        while running[1].started_at is None and time.monotonic() < deadline:  # the book's pass has begun
            time.sleep(0.005)
        assert running[1].started_at is not None
        answered = host.wait(host.submit([request], ["tts"], priority=INTERACTIVE))[0]
        assert answered.waveform is not None and answered.waveform.size > 0
        assert not running[1].future.done(), "the request waited for the whole book pass"
        shared = host.wait(running)[0].waveform
    finally:
        host.close()
    assert shared is not None and alone is not None and np.array_equal(shared, alone)
