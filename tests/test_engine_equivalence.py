"""The engine against upstream F5-TTS, and batched against single, on the real f5_tts model code (tiny, CPU)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import QUIJOTE_OPENING, REF_TEXT
from worker.audio import encode_wav
from worker.contract import JobParams
from worker.engine.engine import SynthesisRequest, VoiceInput
from worker.speech import chunk_text, model_reference_text, planned_frames, reference_text

TEXTS = [
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía un hidalgo.",
    "Hola.",
    "—¿Quién va? —preguntó Sancho, que no veía nada en la oscuridad de la noche.",
    "Dijo el cura que no, y el barbero que sí; y así se quedaron, sin más razones, hasta el amanecer.",
]


def _pcm16(wave: np.ndarray) -> np.ndarray:
    data, _ = sf.read(io.BytesIO(encode_wav(wave, 24000)), dtype="float32")
    return data


@pytest.fixture(scope="module")
def upstream_models(random_cache):
    """Upstream's own loaders (``load_model``, ``load_vocoder``) on the same checkpoint files: pristine upstream."""
    return {}


def _upstream_pair(cache: dict, engine):
    """The engine's checkpoint loaded by upstream's ``load_model`` and vocoder by upstream's ``load_vocoder``."""
    import f5_tts.infer.utils_infer as upstream
    from f5_tts.model import DiT

    from worker.engine.loading import packaged_vocab

    key = engine.preset.name
    if key not in cache:
        ckpt, vocoder = engine.loaded.files.checkpoint, engine.loaded.files.vocoder
        model = upstream.load_model(DiT, dict(engine.preset.arch), str(ckpt), vocab_file=str(packaged_vocab()),
                                    device="cpu")
        cache[key] = (model, upstream.load_vocoder(is_local=True, local_path=str(vocoder), device="cpu"))
    return cache[key]


def _upstream(pair, ref_path, ref_text, text, seed, preprocess, nfe_step=16, speed=1.0):
    """Upstream's own path: preprocess_ref_audio_text, its chunking rule, then infer_batch_process."""
    import f5_tts.infer.utils_infer as upstream

    model, vocoder = pair
    if preprocess:
        path, ref_text = upstream.preprocess_ref_audio_text(str(ref_path), ref_text, show_info=lambda *_: None)
    else:
        path, ref_text = str(ref_path), reference_text(ref_text)
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    seconds = audio.shape[-1] / rate
    chunks = upstream.chunk_text(text, max_chars=int(len(ref_text.encode()) / seconds * (22 - seconds) * speed))
    assert len(chunks) == 1, "upstream's threads draw chunk noise in random order; compare single chunks only"
    torch.manual_seed(seed)
    wave, _, _ = next(upstream.infer_batch_process(
        (audio, rate), ref_text, chunks, model, vocoder, nfe_step=nfe_step, cfg_strength=2.0,
        sway_sampling_coef=-1.0, speed=speed, device="cpu", progress=None))
    return wave


@pytest.mark.parametrize("preprocess", [True, False])
@pytest.mark.parametrize("text", [TEXTS[0], TEXTS[1]])
def test_single_item_equals_upstream(engine, upstream_models, ref_wav_path, ref_wav_bytes, text, preprocess):
    ours = engine.synthesize([SynthesisRequest(text, VoiceInput(ref_wav_bytes, REF_TEXT, preprocess), JobParams(),
                                               seed=1234)])[0]
    theirs = _upstream(_upstream_pair(upstream_models, engine), ref_wav_path, REF_TEXT, text, 1234, preprocess)
    assert ours.ok and ours.waveform.shape == theirs.shape
    assert np.abs(_pcm16(ours.waveform) - _pcm16(theirs)).max() <= 1e-3


def test_speed_and_nfe_match_upstream(engine, upstream_models, ref_wav_path, ref_wav_bytes):
    params = JobParams(speed=1.7, nfe_step=8)
    ours = engine.synthesize([SynthesisRequest(TEXTS[2], VoiceInput(ref_wav_bytes, REF_TEXT), params, seed=5)])[0]
    theirs = _upstream(_upstream_pair(upstream_models, engine), ref_wav_path, REF_TEXT, TEXTS[2], 5, True,
                       nfe_step=8, speed=1.7)
    assert np.abs(_pcm16(ours.waveform) - _pcm16(theirs)).max() <= 1e-3


def test_batch_equals_single(engine, ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    requests = [SynthesisRequest(text, voice, JobParams(), seed=100 + i) for i, text in enumerate(TEXTS)]
    batched = engine.synthesize(requests)
    for request, together in zip(requests, batched, strict=True):
        alone = engine.synthesize([request])[0]
        assert together.waveform.shape == alone.waveform.shape
        assert np.abs(together.waveform - alone.waveform).max() <= 1e-4


def _expected_samples(engine, ref_wav_bytes, text, speed):
    """Upstream's rule end to end: chunks by max_chars, frames per chunk, 0.15 s cross-fades between chunks."""
    from worker.speech import max_chars_for_reference

    prepared = engine.voice(ref_wav_bytes, True)
    pieces = chunk_text(text, max_chars_for_reference(REF_TEXT, prepared.seconds, speed))
    ref_text = model_reference_text(REF_TEXT)
    lengths = [(planned_frames(prepared.ref_frames, ref_text, p, speed) - prepared.ref_frames - 1) * 256
               for p in pieces]
    return len(pieces), sum(lengths) - int(0.15 * 24000) * (len(pieces) - 1)


def test_long_text_is_chunked_and_cross_faded(engine, ref_wav_bytes):
    long_text = " ".join([QUIJOTE_OPENING, *TEXTS, QUIJOTE_OPENING])
    out = engine.synthesize([SynthesisRequest(long_text, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(), seed=9)])[0]
    chunks, samples = _expected_samples(engine, ref_wav_bytes, long_text, 1.0)
    assert out.chunks == chunks > 1
    assert out.waveform.shape[0] == samples


@pytest.mark.parametrize(("text", "speed"), [(TEXTS[0], 1.0), (TEXTS[0], 2.0), (TEXTS[0], 0.5), ("Hola.", 1.0)])
def test_duration_follows_upstream_rule(engine, ref_wav_bytes, text, speed):
    out = engine.synthesize([SynthesisRequest(text, VoiceInput(ref_wav_bytes, REF_TEXT), JobParams(speed=speed),
                                              seed=3)])[0]
    assert out.waveform.shape[0] == _expected_samples(engine, ref_wav_bytes, text, speed)[1]


def test_short_text_uses_upstream_slow_speed(engine, ref_wav_bytes):
    prepared = engine.voice(ref_wav_bytes, True)
    ref_text = model_reference_text(REF_TEXT)
    slow = planned_frames(prepared.ref_frames, ref_text, "Hola.", 1.0) - prepared.ref_frames
    normal = prepared.ref_frames / len(ref_text.encode()) * len(b"Hola.")
    assert slow == int(normal / 0.3)


def test_same_seed_same_bytes_other_seed_differs(engine, ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    first, again, other = (engine.synthesize([SynthesisRequest(TEXTS[0], voice, JobParams(), seed=s)])[0]
                           for s in (11, 11, 12))
    assert encode_wav(first.waveform, 24000) == encode_wav(again.waveform, 24000)
    assert np.abs(first.waveform - other.waveform).max() > 1e-3


def test_noise_is_upstreams_manual_seed_stream():
    from worker.engine.sampler import seeded_noise

    state = torch.random.get_rng_state()
    ours = seeded_noise(77, 50, 100, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG must not move"
    torch.manual_seed(77)
    assert torch.equal(ours, torch.randn(50, 100))


def test_base_like_model_batch_equals_single_and_upstream(base_like_engine, upstream_models, ref_wav_path,
                                                         ref_wav_bytes):
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    requests = [SynthesisRequest(text, voice, JobParams(), seed=40 + i) for i, text in enumerate(TEXTS)]
    batched = base_like_engine.synthesize(requests)
    for request, together in zip(requests, batched, strict=True):
        alone = base_like_engine.synthesize([request])[0]
        assert np.abs(together.waveform - alone.waveform).max() <= 1e-4
    theirs = _upstream(_upstream_pair(upstream_models, base_like_engine), ref_wav_path, REF_TEXT, TEXTS[0], 40,
                       True)
    assert np.abs(_pcm16(batched[0].waveform) - _pcm16(theirs)).max() <= 1e-3
