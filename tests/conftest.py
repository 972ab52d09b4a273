"""Shared test fixtures: the tiny random F5 model, real reference audio, the corpora, and (below) real services.

Nothing here fakes the model: ``tiny-random`` is the real f5_tts DiT/CFM and vocos classes at tiny size, written to a
checkpoint file and loaded through the same code path as a real checkpoint.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REF_TEXT = "Some call me nature, others call me mother nature."
QUIJOTE_OPENING = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía un hidalgo de los de "
    "lanza en astillero, adarga antigua, rocín flaco y galgo corredor."
)


def corpora_dir() -> Path:
    """The shared public-domain corpora (``../shared/corpora`` beside the checkout, or ``F5_CORPORA_DIR``)."""
    candidates = [Path(os.environ["F5_CORPORA_DIR"])] if os.environ.get("F5_CORPORA_DIR") else []
    candidates += [REPO.parent / "shared" / "corpora", REPO / "shared" / "corpora"]
    for candidate in candidates:
        if (candidate / "don-quijote.es.txt").is_file():
            return candidate
    raise FileNotFoundError(f"don-quijote.es.txt not found in {[str(c) for c in candidates]}; set F5_CORPORA_DIR")


@pytest.fixture(scope="session")
def quijote_path() -> Path:
    return corpora_dir() / "don-quijote.es.txt"


@pytest.fixture(scope="session")
def ref_wav_path() -> Path:
    """A real speech clip (5.3 s, 24 kHz, PCM_16) shipped with f5-tts, with its transcript in REF_TEXT."""
    return Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))


@pytest.fixture(scope="session")
def ref_wav_bytes(ref_wav_path: Path) -> bytes:
    return ref_wav_path.read_bytes()


@pytest.fixture(scope="session")
def random_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-weights")


@pytest.fixture(scope="session")
def engine_settings(random_cache: Path):
    from worker.settings import EngineSettings

    return EngineSettings(model="tiny-random", random_cache_dir=str(random_cache), device="cpu", compile=False)


@pytest.fixture(scope="session")
def engine(engine_settings):
    from worker.engine.engine import Engine

    return Engine.build(engine_settings)
