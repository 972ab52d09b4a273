"""Intelligibility with real recognisers on real speech: pocketsphinx with the English model its wheel ships, and
faster-whisper on a Whisper built here with random weights (see tests/qa_models.py). No recogniser is mocked."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.qa_models import REF_EN_TEXT, espeak, multi_clips, random_whisper, read_mono, ref_en
from worker.qa.asr import ASROptions, ASRUnavailable, Clip, Recognizer, UnsupportedLanguage, make_recognizer, parse_spec
from worker.qa.gate import QALimits, Take, assess, judge
from worker.qa.signal import check_signal

Audio = npt.NDArray[np.float32]
OTHER = "The weather today is sunny with a light breeze from the west."


@pytest.fixture(scope="module")
def sphinx() -> Recognizer:
    pytest.importorskip("pocketsphinx")
    return make_recognizer("pocketsphinx")


@pytest.fixture(scope="module")
def speech() -> tuple[Audio, int]:
    return read_mono(ref_en())


@pytest.fixture(scope="module")
def heard(sphinx: Recognizer, speech: tuple[Audio, int]) -> str:
    """What pocketsphinx hears in F5-TTS's English reference clip (decoded once for the tests below)."""
    return sphinx.transcribe([Clip(speech[0], speech[1], "en")])[0]


def _espeak(text: str, folder: Path) -> tuple[Audio, int]:
    try:
        return espeak(text, folder)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


# -- pocketsphinx -----------------------------------------------------------------------------------------------------

def test_speech_checked_against_its_own_text_passes(heard: str, speech: tuple[Audio, int]) -> None:
    # pocketsphinx 5.1 hears "someone call me nature others call me mother nature": CER 3/48.
    verdict = judge(check_signal(*speech), REF_EN_TEXT, "en", heard, recognizer="pocketsphinx")
    assert verdict.passed, verdict.reasons
    assert verdict.cer is not None and verdict.cer < 0.15
    assert "mother nature" in heard


def test_the_same_speech_checked_against_another_sentence_fails(heard: str, speech: tuple[Audio, int]) -> None:
    verdict = judge(check_signal(*speech), OTHER, "en", heard)
    assert not verdict.passed and [r.code for r in verdict.reasons] == ["high_cer"]
    assert verdict.cer is not None and verdict.cer > 0.6


def test_assess_end_to_end(sphinx: Recognizer, speech: tuple[Audio, int]) -> None:
    """Signal checks and one recogniser batch: the good take passes; the take with 3 s of silence inserted in the
    middle fails the signal check, though it is intelligible (only the signal check catches it)."""
    samples, rate = speech
    middle = samples.size // 2
    gapped = np.concatenate([samples[:middle], np.zeros(3 * rate, dtype=np.float32), samples[middle:]])
    good, gap = assess([Take(samples, rate, REF_EN_TEXT, "en"), Take(gapped, rate, REF_EN_TEXT, "en")], sphinx,
                       QALimits())
    assert good.passed and good.recognizer == "pocketsphinx" and good.transcript
    assert [r.code for r in gap.reasons] == ["internal_silence"]
    assert gap.cer is not None and gap.cer < 0.3
    assert good.score > gap.score


def test_white_noise_fails(sphinx: Recognizer) -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, 3 * 16_000).astype(np.float32)
    (verdict,) = assess([Take(noise, 16_000, REF_EN_TEXT, "en")], sphinx)
    assert not verdict.passed
    assert verdict.transcript == ""  # pocketsphinx hears nothing in it
    assert {r.code for r in verdict.reasons} == {"noise", "no_transcript"}


def test_espeak_speech_scores_better_against_its_own_text(sphinx: Recognizer, tmp_path: Path) -> None:
    """espeak-ng's formant voice is hard for pocketsphinx (CER 0.3-0.8 against its own text, by sentence and voice),
    so only the comparison is asserted: against the wrong text it fails, and scores worse."""
    samples, rate = _espeak(OTHER, tmp_path)
    own, wrong = assess([Take(samples, rate, OTHER, "en"), Take(samples, rate, REF_EN_TEXT, "en")], sphinx)
    assert own.signal.passed and not wrong.passed and own.cer is not None and wrong.cer is not None
    assert wrong.cer > 0.6 and wrong.cer > own.cer


def test_a_transcript_depends_on_its_clip_alone(sphinx: Recognizer, speech: tuple[Audio, int], heard: str) -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, 3 * 16_000).astype(np.float32)
    after_noise = sphinx.transcribe([Clip(noise, 16_000, "en"), Clip(speech[0], speech[1], "en")])
    assert after_noise[1] == heard


def test_the_bundled_model_is_english_only(sphinx: Recognizer, speech: tuple[Audio, int]) -> None:
    assert sphinx.supports("en-US") and not sphinx.supports("es")
    with pytest.raises(UnsupportedLanguage, match="faster-whisper"):
        sphinx.transcribe([Clip(speech[0], speech[1], "es")])
    (verdict,) = assess([Take(speech[0], speech[1], "Algunos me llaman naturaleza.", "es")], sphinx)
    assert verdict.passed and verdict.cer is None and verdict.recognizer is None  # signal checks only


def test_a_missing_pocketsphinx_model_fails_at_construction(tmp_path: Path) -> None:
    pytest.importorskip("pocketsphinx")
    with pytest.raises(ASRUnavailable, match="not found"):
        make_recognizer(f"pocketsphinx:{tmp_path / 'nope'}")
    with pytest.raises(ASRUnavailable, match="acoustic model"):
        make_recognizer(f"pocketsphinx:{tmp_path}")


def test_specs() -> None:
    assert parse_spec("pocketsphinx") == ("pocketsphinx", None)
    assert parse_spec("faster-whisper:large-v3") == ("faster-whisper", "large-v3")
    assert parse_spec("Faster_Whisper:/models/w:1") == ("faster-whisper", "/models/w:1")
    with pytest.raises(ValueError, match="known: faster-whisper, pocketsphinx, whisper"):
        parse_spec("kaldi:x")


# -- faster-whisper ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def whisper_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multilingual Whisper with random weights, converted by CTranslate2's converter (built once per session)."""
    for module in ("faster_whisper", "ctranslate2", "transformers", "torch"):
        pytest.importorskip(module)
    return random_whisper(tmp_path_factory.mktemp("whisper") / "random-test")


@pytest.fixture(scope="module")
def whisper(whisper_folder: Path) -> Recognizer:
    return make_recognizer(f"faster-whisper:{whisper_folder}", ASROptions(cpu_threads=2, batch_size=4))


def test_random_whisper_transcribes_a_batch_through_the_real_path(whisper: Recognizer,
                                                                   speech: tuple[Audio, int]) -> None:
    """The weights are random because the Hugging Face hub cannot be reached from here; everything else is the real
    path: a CTranslate2 model folder, WhisperModel, BatchedInferencePipeline, our windows and decoding cap. Random
    weights cannot transcribe, so the verdict must fail."""
    clips = [Clip(speech[0], speech[1], "en"), *(Clip(*read_mono(p), "en") for p in multi_clips()),
             Clip(speech[0], speech[1], "es"), Clip(np.zeros(0, dtype=np.float32), 16_000, "en")]
    texts = whisper.transcribe(clips)
    assert len(texts) == len(clips) and all(isinstance(t, str) for t in texts)
    assert all(texts[:-1]) and texts[-1] == ""  # gibberish for every clip with audio; nothing for the empty one
    # Decoding is capped by the audio's length (16 + 8 per second tokens; this vocabulary's tokens are ≤ 5 chars).
    assert len(texts[0]) <= 5 * (16 + math.ceil(speech[0].size / speech[1] * 8))
    (verdict,) = assess([Take(speech[0], speech[1], REF_EN_TEXT, "en")], whisper)
    assert verdict.signal.passed and not verdict.passed and [r.code for r in verdict.reasons] == ["high_cer"]
    assert verdict.recognizer == whisper.name and verdict.transcript


def test_whisper_gives_a_clip_the_same_transcript_alone_or_in_a_batch(whisper: Recognizer,
                                                                     speech: tuple[Audio, int]) -> None:
    long = Clip(np.tile(speech[0], 7), speech[1], "en")  # 37 s: two windows
    clips = [Clip(speech[0], speech[1], "en"), long, *(Clip(*read_mono(p), "en") for p in multi_clips()[:1])]
    together = whisper.transcribe(clips)
    assert together == [whisper.transcribe([clip])[0] for clip in clips]
    assert len(together[1]) > len(together[0])


def test_whisper_languages(whisper: Recognizer) -> None:
    assert whisper.supports("es") and whisper.supports("en-GB")
    with pytest.raises(UnsupportedLanguage):
        whisper.transcribe([Clip(np.zeros(16_000, dtype=np.float32), 16_000, "tlh")])


def test_a_missing_whisper_model_fails_at_construction_naming_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    with pytest.raises(ASRUnavailable, match="F5_QA_ASR_MODEL"):
        make_recognizer(f"faster-whisper:{tmp_path / 'no-such-model'}")
    with pytest.raises(ASRUnavailable, match=r"no model\.bin"):
        make_recognizer(f"faster-whisper:{tmp_path}")
    offline = ASROptions(local_files_only=True, download_root=str(tmp_path / "cache"))
    with pytest.raises(ASRUnavailable, match=r"not found locally.*allow downloads"):
        make_recognizer("faster-whisper:tiny", offline)


@pytest.mark.parametrize(("spec", "module"), [("pocketsphinx", "pocketsphinx"), ("faster-whisper", "faster_whisper")])
def test_a_missing_package_fails_at_construction_naming_the_fix(spec: str, module: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is not installed
    with pytest.raises(ASRUnavailable, match=r"pip install 'f5-batch\[qa\]'"):
        make_recognizer(spec)
