"""pocketsphinx: a small, CPU-only recogniser whose PyPI wheel carries an English model, so QA runs anywhere with no
download. It is weaker than Whisper (it hears "some call me nature" as "someone call me nature", and synthetic voices
worse), which is why the default CER limit leaves room; use faster-whisper where accuracy matters or for Spanish.

Other languages need a CMU Sphinx model folder (``pocketsphinx:/models/es``): an acoustic model (the folder holding
``mdef``), a language model (``*.lm.bin``, ``*.lm``, ``*.lm.gz``, ``*.dmp`` or ``*.arpa``) and a pronouncing
dictionary (``*.dict``/``*.dic``). One decoder per recogniser, used under a lock (pocketsphinx is not thread-safe),
with its feature state reset for every clip, so that each transcript depends on that clip alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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

__all__ = ["PocketSphinxRecognizer"]

log = logging.getLogger(__name__)

_LM_SUFFIXES = (".lm.bin", ".lm", ".lm.gz", ".dmp", ".DMP", ".arpa", ".arpa.gz")
_DICT_SUFFIXES = (".dict", ".dic")


def _model_files(folder: Path) -> dict[str, str]:
    """The acoustic model, language model and dictionary inside a CMU Sphinx model folder."""
    if not folder.is_dir():
        raise ASRUnavailable(f"pocketsphinx model folder {folder} not found; give a folder holding an acoustic model "
                             "(with mdef), a language model and a dictionary, or use 'pocketsphinx' for the bundled "
                             "English model")
    acoustic = sorted(p.parent for p in folder.rglob("mdef"))
    lms = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_LM_SUFFIXES)
                 and "phone" not in p.name)
    dicts = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_DICT_SUFFIXES))
    missing = [what for what, found in (("an acoustic model (a folder with mdef)", acoustic),
                                        ("a language model (*.lm.bin, *.lm, *.arpa...)", lms),
                                        ("a dictionary (*.dict)", dicts)) if not found]
    if missing:
        raise ASRUnavailable(f"pocketsphinx model folder {folder} lacks {', '.join(missing)}")
    return {"hmm": str(acoustic[0]), "lm": str(lms[0]), "dict": str(dicts[0])}


class PocketSphinxRecognizer:
    """:class:`~worker.qa.asr.base.Recognizer` on pocketsphinx 5. ``model``: None for the bundled US English model,
    or a CMU Sphinx model folder (then ``options.languages`` says which languages it serves; None: any)."""

    def __init__(self, model: str | None = None, options: ASROptions | None = None) -> None:
        options = options or ASROptions()
        try:
            import pocketsphinx
        except ImportError as exc:
            raise ASRUnavailable(f"pocketsphinx is not installed: {INSTALL_HINT}") from exc
        check_resampler()
        if model:
            files = _model_files(Path(model).expanduser())
            self._languages = None if options.languages is None else {base_language(x) for x in options.languages}
            self._name = f"pocketsphinx:{model}"
        else:
            files = {}  # pocketsphinx's defaults: the bundled en-us model
            self._languages = {"en"}
            self._name = "pocketsphinx"
        config: dict[str, Any] = {**files, "samprate": ASR_RATE, "loglevel": "FATAL"}
        try:
            self._decoder = pocketsphinx.Decoder(**config)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ASRUnavailable(f"pocketsphinx could not load its model ({files or 'bundled en-us'}): {exc}; "
                                 f"reinstall it ({INSTALL_HINT}) or check the model folder") from exc
        self._lock = threading.Lock()
        log.info("ASR %s ready (%s)", self._name, files or "bundled en-us model")

    @property
    def name(self) -> str:
        return self._name

    def supports(self, language: str) -> bool:
        return self._languages is None or base_language(language) in self._languages

    def transcribe(self, clips: Sequence[Clip]) -> list[str]:
        for clip in clips:
            if not self.supports(clip.language):
                raise UnsupportedLanguage(
                    f"{self._name} recognises {sorted(self._languages or ())}, not {clip.language!r}: use "
                    "faster-whisper (e.g. faster-whisper:large-v3) or a pocketsphinx model folder for that language")
        return [self._one(clip) for clip in clips]

    def _one(self, clip: Clip) -> str:
        audio = resample_16k(clip.samples, clip.rate)
        if audio.size == 0:
            return ""
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self._lock:
            # Fresh feature state per clip: pocketsphinx adapts its cepstral normalisation (and more) across
            # utterances, so without this a clip's transcript depends on what was decoded before it (seen: a clip
            # after white noise gained a word).
            self._decoder.reinit_feat()
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, no_search=False, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        text = str(hypothesis.hypstr) if hypothesis is not None else ""
        log.debug("%s: %.2f s → %r", self._name, clip.duration_s, text)
        return text
