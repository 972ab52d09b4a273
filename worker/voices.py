"""Voices: a reference clip and its transcript, stored under ``voices/`` in the same storage as the audio."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from worker.speech import DEFAULT_MAX_REFERENCE_SECONDS, MIN_REFERENCE_SECONDS, planning_seconds
from worker.storage import ObjectNotFound, Storage

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class VoiceError(ValueError):
    pass


@dataclass(frozen=True)
class Voice:
    name: str
    ref_audio: str  # storage key of the clip
    ref_text: str
    seconds: float  # duration of the clip as uploaded
    sample_rate: int
    sha256: str = ""  # the clip's bytes: what a book's audio keys and skip checks follow (not the voice's name)

    @property
    def planning_seconds(self) -> float:
        return planning_seconds(self.seconds)


def clip_info(data: bytes, where: str) -> tuple[float, int]:
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:
        raise VoiceError(f"{where} is not a readable audio file ({exc})") from None
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if not MIN_REFERENCE_SECONDS <= seconds <= DEFAULT_MAX_REFERENCE_SECONDS:
        raise VoiceError(f"{where} is {seconds:.1f} s long; use a clip of {MIN_REFERENCE_SECONDS} to "
                         f"{DEFAULT_MAX_REFERENCE_SECONDS:.0f} s (ideally 5 to 12 s)")
    return seconds, int(info.samplerate)


def add_voice(storage: Storage, name: str, clip: Path, text: str, transcribed: bool = False) -> Voice:
    """Upload a clip and its transcript (``transcribed``: the words come from a recogniser, kept in the record for
    review)."""
    if not NAME.match(name):
        raise VoiceError(f"voice name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    if not text.strip():
        raise VoiceError("the transcript (--text) must not be empty: F5-TTS needs the exact words of the clip")
    data = clip.read_bytes()
    seconds, rate = clip_info(data, str(clip))
    key = f"voices/{name}{clip.suffix.lower() or '.wav'}"
    storage.put(key, data, {"f5-voice": name}, content_type="audio/wav" if key.endswith(".wav") else "audio/*")
    voice = Voice(name, key, text.strip(), seconds, rate, hashlib.sha256(data).hexdigest())
    record = {"name": name, "ref_audio": key, "ref_text": voice.ref_text, "seconds": seconds, "sample_rate": rate,
              "sha256": voice.sha256, "transcribed": transcribed}
    storage.put(f"voices/{name}.json", json.dumps(record, ensure_ascii=False, indent=2).encode(),
                content_type="application/json")
    return voice


def load_voice(storage: Storage, name: str) -> Voice:
    if not NAME.match(name):
        raise VoiceError(f"voice name {name!r} is not valid")
    try:
        record = json.loads(storage.get(f"voices/{name}.json"))
    except ObjectNotFound:
        raise VoiceError(f"no voice named {name!r} in {storage.url}; add it with `f5-batch voice add`") from None
    sha256 = record.get("sha256") or _stored_sha256(storage, record["ref_audio"])
    return Voice(name, record["ref_audio"], record["ref_text"], float(record["seconds"]), int(record["sample_rate"]),
                 sha256)


def _stored_sha256(storage: Storage, key: str) -> str:
    try:
        return hashlib.sha256(storage.get(key)).hexdigest()
    except ObjectNotFound:
        raise VoiceError(f"the clip {key!r} of this voice is missing from {storage.url}; add the voice again") from None


def voice_from_key(storage: Storage, key: str, ref_text: str) -> Voice:
    """A clip given by key (``--ref-audio``): fetched once to learn its length for chunk planning."""
    try:
        data = storage.get(key)
    except ObjectNotFound:
        raise VoiceError(f"no reference audio at {key!r} in {storage.url}") from None
    seconds, rate = clip_info(data, key)
    return Voice(Path(key).stem, key, ref_text, seconds, rate, hashlib.sha256(data).hexdigest())


def list_voice_names(storage: Storage) -> list[str]:
    """The names of the voices added with ``f5-batch voice add`` (one listing, no reads)."""
    return [info.key[len("voices/") : -len(".json")] for info in storage.list("voices/")
            if info.key.endswith(".json") and info.key.count("/") == 1]


def list_voices(storage: Storage) -> list[Voice]:
    voices = []
    for info in storage.list("voices/"):
        if info.key.endswith(".json") and info.key.count("/") == 1:
            voices.append(load_voice(storage, info.key[len("voices/") : -len(".json")]))
    return voices
