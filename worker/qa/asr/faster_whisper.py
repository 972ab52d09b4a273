"""faster-whisper: Whisper on CTranslate2 (no torch), accurate in Spanish and English, on CPU or GPU.

``model`` is a size faster-whisper knows (``large-v3``, ``turbo``, ``small``...; fetched from the Hugging Face hub
unless ``local_files_only``) or a local CTranslate2 folder, as ``ct2-transformers-converter --model
openai/whisper-large-v3 --output_dir DIR --copy_files tokenizer.json preprocessor_config.json`` writes it.

Decoding is set for checking read text, not for subtitles: the language is given (never detected), no timestamps, no
conditioning on earlier text (each clip stands alone), temperature 0 (the same take always gets the same transcript),
no VAD unless asked, and a length cap proportional to the audio (:attr:`ASROptions.max_tokens_per_second`).

Clips go through ``BatchedInferencePipeline`` in one call: laid end to end and cut back apart with
``clip_timestamps``, each clip in equal windows of at most 30 s, every window one row of the batch. A lone clip takes
the same path, as a batch of one, so that a take gets the same transcript alone or in company (each window's tokens
are cut to its own cap, and greedy decoding makes a shorter run the prefix of a longer one); the sequential decoder
would also re-seek inside a clip on any timestamp the model emits. Windows the model judges silent (no-speech
probability over 0.6 with a mean log-probability under -1, faster-whisper's own rule) are dropped. With
``vad_filter`` each clip goes alone through ``WhisperModel.transcribe``, which owns the VAD.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.qa.asr.base import (
    ASR_RATE,
    INSTALL_HINT,
    ASROptions,
    ASRUnavailable,
    Clip,
    UnsupportedLanguage,
    base_language,
    check_resampler,
    resample_16k,
)

__all__ = ["DEFAULT_MODEL", "FasterWhisperRecognizer"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "large-v3"
_NO_SPEECH_PROB = 0.6
_SILENT_LOGPROB = -1.0
_PROMPT_TOKENS = 4  # <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>
_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>
_MIN_CLIP_S = 0.1  # shorter clips hold no word; they are not decoded
_MODEL_HINT = ("set F5_QA_ASR_MODEL to a local CTranslate2 Whisper folder (ct2-transformers-converter --model "
               "openai/whisper-large-v3 --output_dir DIR --copy_files tokenizer.json preprocessor_config.json)")


@dataclass(frozen=True)
class _Window:
    clip: int  # index of the clip this window belongs to
    start: float  # seconds into the concatenated audio
    end: float


def _looks_like_path(model: str) -> bool:
    """A folder, not a size or a hub id ("Systran/faster-whisper-small"): absolute, relative with ./, or existing."""
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().is_dir()


def _load(model: str, options: ASROptions) -> Any:
    """The WhisperModel, or ASRUnavailable naming the fix."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ASRUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}") from exc
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not (folder / "model.bin").is_file():
            raise ASRUnavailable(f"no CTranslate2 Whisper model at {folder} (no model.bin); {_MODEL_HINT}")
        model = str(folder)
    try:
        return WhisperModel(model, device=options.device, compute_type=options.compute_type,
                            cpu_threads=options.cpu_threads, local_files_only=options.local_files_only,
                            download_root=options.download_root)
    # Whatever goes wrong while loading (hub errors, a missing CUDA library, a compute type the device lacks) ends the
    # start-up here, with the cause and the fix in one message, rather than as a traceback from deep in the stack.
    except Exception as exc:
        if _looks_like_path(model):
            fix = f"check that {model} is a CTranslate2 Whisper folder and the device/compute type fit ({exc})"
        elif options.local_files_only:
            fix = f"model {model!r} not found locally; {_MODEL_HINT}, or allow downloads (local_files_only=False)"
        else:
            fix = (f"model {model!r} could not be fetched or loaded ({type(exc).__name__}: {exc}); {_MODEL_HINT}, "
                   "or check the network and the Hugging Face hub")
        raise ASRUnavailable(f"faster-whisper cannot load {model!r} on {options.device}: {fix}") from exc


class FasterWhisperRecognizer:
    """:class:`~worker.qa.asr.base.Recognizer` on faster-whisper. Builds the model now (it raises
    :class:`ASRUnavailable` here, never in :meth:`transcribe`)."""

    def __init__(self, model: str | None = None, options: ASROptions | None = None) -> None:
        self._options = options or ASROptions()
        self._model_name = model or DEFAULT_MODEL
        check_resampler()
        self._model = _load(self._model_name, self._options)
        from faster_whisper import BatchedInferencePipeline
        from faster_whisper.tokenizer import Tokenizer

        self._batched = BatchedInferencePipeline(self._model)
        self._tokenizer_type = Tokenizer
        self._tokenizers: dict[str, Any] = {}
        self._window_s = float(self._model.feature_extractor.chunk_length)
        self._languages = set(self._model.supported_languages)
        log.info("ASR %s ready on %s (%s, beam %d, batch %d)", self.name, self._options.device,
                 self._options.compute_type, self._options.beam_size, self._options.batch_size)

    @property
    def name(self) -> str:
        return f"faster-whisper:{self._model_name}"

    def supports(self, language: str) -> bool:
        return base_language(language) in self._languages

    def transcribe(self, clips: Sequence[Clip]) -> list[str]:
        texts = [""] * len(clips)
        groups: dict[str, list[int]] = {}
        for index, clip in enumerate(clips):
            language = base_language(clip.language)
            if language not in self._languages:
                raise UnsupportedLanguage(f"{self.name} does not know language {clip.language!r}")
            groups.setdefault(language, []).append(index)
        for language, indices in groups.items():
            audio = {i: resample_16k(clips[i].samples, clips[i].rate) for i in indices}
            heard = [i for i in indices if audio[i].size >= _MIN_CLIP_S * ASR_RATE]  # shorter: nothing to say
            if self._options.vad_filter:
                for i in heard:  # VAD needs each clip whole, and the sequential decoder
                    texts[i] = self._with_vad(audio[i], language)
            elif heard:
                for i, text in zip(heard, self._batch([audio[i] for i in heard], language), strict=True):
                    texts[i] = text
        return texts

    def _cap(self, seconds: float) -> int:
        """The most tokens to decode for a window of ``seconds``: proportional to the audio, and at most half of
        Whisper's 448 positions (all that CTranslate2 will decode)."""
        per_second = self._options.max_tokens_per_second
        wanted = self._options.min_new_tokens + math.ceil(min(seconds, self._window_s) * per_second)
        return min(wanted, int(self._model.max_length) // 2)

    @staticmethod
    def _max_new_tokens(cap: int) -> int:
        """faster-whisper's max_new_tokens for ``cap`` decoded tokens. CTranslate2 decodes Whisper up to half the
        max_length it is handed (prompt + max_new_tokens), as Whisper's n_text_ctx // 2 rule; measured on 4.8.5, and
        harmless if that ever changes, since each window's tokens are cut to its cap afterwards."""
        return 2 * cap - _PROMPT_TOKENS

    def _tokenizer(self, language: str) -> Any:
        if language not in self._tokenizers:
            self._tokenizers[language] = self._tokenizer_type(
                self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language=language)
        return self._tokenizers[language]

    def _decode_options(self, language: str) -> dict[str, Any]:
        # Timestamp tokens are suppressed outright, on top of faster-whisper's default non-speech set (-1): told
        # <|notimestamps|>, a trained model does not emit them, but nothing stops a confused one (or random weights),
        # and one would split the window's text into pieces out of order.
        first = int(self._tokenizer(language).timestamp_begin)
        return {"language": language, "task": "transcribe", "beam_size": self._options.beam_size,
                "temperature": 0.0, "without_timestamps": True, "condition_on_previous_text": False,
                "suppress_tokens": [-1, *range(first, first + _TIMESTAMPS)]}

    def _with_vad(self, samples: npt.NDArray[np.float32], language: str) -> str:
        segments, _ = self._model.transcribe(
            samples, vad_filter=True, max_new_tokens=self._max_new_tokens(self._cap(samples.size / ASR_RATE)),
            no_speech_threshold=_NO_SPEECH_PROB, log_prob_threshold=_SILENT_LOGPROB, **self._decode_options(language))
        return " ".join(segment.text.strip() for segment in segments if segment.text.strip())

    def _windows(self, audio: list[npt.NDArray[np.float32]]) -> list[_Window]:
        """The clips laid end to end, each cut into equal windows of at most 30 s (so none is a sliver)."""
        windows: list[_Window] = []
        offset = 0
        for index, samples in enumerate(audio):
            start, seconds = offset / ASR_RATE, samples.size / ASR_RATE
            count = max(1, math.ceil(seconds / self._window_s - 1e-9))
            for k in range(count):
                windows.append(_Window(index, start + k * seconds / count, start + (k + 1) * seconds / count))
            offset += samples.size
        return windows

    def _batch(self, audio: list[npt.NDArray[np.float32]], language: str) -> list[str]:
        """Every window of every clip in one batched call; each window's tokens cut to its own cap, so a clip gets
        the same transcript whatever else shares its batch (greedy decoding: a longer run starts with the shorter)."""
        windows = self._windows(audio)
        segments, _ = self._batched.transcribe(
            np.concatenate(audio), clip_timestamps=[{"start": w.start, "end": w.end} for w in windows],
            batch_size=self._options.batch_size, vad_filter=False,
            max_new_tokens=self._max_new_tokens(self._cap(max(w.end - w.start for w in windows))),
            **self._decode_options(language))
        # Segments carry the frame where their window starts (seek); decoders may emit timestamps even when told
        # not to (random weights do), so a segment's start time cannot be trusted to say which window it came from.
        starts = [w.start for w in windows]
        fps = float(self._model.frames_per_second)
        tokens: list[list[int]] = [[] for _ in windows]
        for segment in segments:
            if segment.no_speech_prob > _NO_SPEECH_PROB and segment.avg_logprob < _SILENT_LOGPROB:
                continue  # faster-whisper's own rule for a silent window
            row = max(0, bisect.bisect_right(starts, (segment.seek + 1.5) / fps) - 1)
            tokens[row].extend(segment.tokens)
        tokenizer = self._tokenizer(language)
        parts: list[list[str]] = [[] for _ in audio]
        for window, ids in zip(windows, tokens, strict=True):
            text = str(tokenizer.decode(ids[: self._cap(window.end - window.start)])).strip()
            if text:
                parts[window.clip].append(text)
        log.debug("%s: %d clips in %d windows, %s", self.name, len(audio), len(windows), language)
        return [" ".join(p) for p in parts]


