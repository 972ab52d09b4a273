"""A book's cast: the voices its segments are spoken in, resolved to clips in storage before anything is published.

The narrator comes from ``--voice NAME`` (a voice added with ``f5-batch voice add``), ``--ref-audio KEY``, or the
main voice of a voice map (``--voices story.toml``); tags and ``--dialogue-voice`` may name the map's voices or any
stored voice. Each voice is pinned by its clip's SHA-256, which goes into every job (``voice.sha256``): a voice
re-recorded under the same name is new audio, so its segments are rendered again, and a job never runs with a clip it
was not made for. Clips of a voice map are uploaded under ``voices/books/BOOK/`` (only when their bytes changed).

The cast is kept in the book record, so ``resume`` and the worker's skip check see the same voices as ``enqueue``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer.script import Cast
from producer.voicemap import MAIN, VoiceMap
from worker.contract import JobParams, VoiceSpec
from worker.speech import max_chars_for_reference, planning_seconds
from worker.storage import Storage
from worker.voices import VoiceError, clip_info, list_voice_names, load_voice

Transcriber = Callable[[bytes, str], str]  # (clip bytes, where) -> transcript


@dataclass(frozen=True)
class CastVoice:
    name: str
    spec: VoiceSpec  # ref_audio key, ref_text, sha256
    seconds: float  # the clip's length as chunk sizes are planned from it
    speed: float | None = None  # this voice's own speed (a voice map's), else the book's

    def to_record(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json"), "seconds": self.seconds, "speed": self.speed}

    @classmethod
    def from_record(cls, name: str, record: dict[str, Any]) -> CastVoice:
        return cls(name, VoiceSpec.model_validate(record["spec"]), float(record["seconds"]), record.get("speed"))


@dataclass
class BookCast:
    """Every voice the book uses, by name, and how the script chooses among them."""

    narrator: str
    voices: dict[str, CastVoice]
    dialogue: str | None = None
    tags: bool = False
    unknown: str | None = None  # the voice unknown tags fall back to (explicitly asked for), else refused
    storage: Storage | None = field(default=None, repr=False)  # to find stored voices that tags name
    stored_names: frozenset[str] = frozenset()

    def script(self) -> Cast:
        return Cast(self.narrator, frozenset(self.voices) | self.stored_names, self.tags, self.dialogue, self.unknown)

    def voice(self, name: str) -> CastVoice:
        """The voice called ``name``: one of the cast, or a stored voice a tag names (loaded the first time)."""
        found = self.voices.get(name)
        if found is None:
            if self.storage is None:
                raise VoiceError(f"voice {name!r} is not in this book's cast")
            found = self.voices[name] = stored_voice(self.storage, name)
        return found

    def params(self, name: str, base: JobParams) -> JobParams:
        speed = self.voice(name).speed
        return base if speed is None else base.model_copy(update={"speed": speed})

    def limit(self, name: str, base: JobParams, max_chars: int | None) -> int:
        """The segment limit for text in this voice: upstream's rule from its clip, at its speed."""
        voice = self.voice(name)
        return max_chars or max_chars_for_reference(voice.spec.ref_text, voice.seconds,
                                                    self.params(name, base).speed)

    def to_record(self) -> dict[str, Any]:
        return {"narrator": self.narrator, "dialogue": self.dialogue, "tags": self.tags, "unknown": self.unknown,
                "voices": {name: voice.to_record() for name, voice in sorted(self.voices.items())}}

    @classmethod
    def from_record(cls, record: dict[str, Any], storage: Storage | None = None) -> BookCast:
        return cls(record["narrator"], {n: CastVoice.from_record(n, v) for n, v in record["voices"].items()},
                   record.get("dialogue"), bool(record.get("tags")), record.get("unknown"), storage)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_record(), sort_keys=True).encode()).hexdigest()


def stored_voice(storage: Storage, name: str) -> CastVoice:
    voice = load_voice(storage, name)
    return CastVoice(name, VoiceSpec(ref_audio=voice.ref_audio, ref_text=voice.ref_text, sha256=voice.sha256),
                     planning_seconds(voice.seconds))


def _upload_clip(storage: Storage, key: str, data: bytes, digest: str) -> None:
    """Put a voice map's clip where workers read references from, unless the same bytes are already there."""
    info = storage.head(key)
    if info is None or info.metadata.get("f5-sha256") != digest:
        storage.put(key, data, {"f5-sha256": digest}, content_type="audio/*")


def mapped_voices(storage: Storage, book: str, voice_map: VoiceMap,
                  transcribe: Transcriber | None) -> dict[str, CastVoice]:
    voices = {}
    for name, mapped in voice_map.voices.items():
        data = mapped.clip.read_bytes()
        where = f"{voice_map.path} (voice {name!r}, {mapped.clip.name})"
        try:
            seconds, _ = clip_info(data, where)
        except VoiceError as exc:
            raise VoiceError(str(exc)) from None
        ref_text = mapped.ref_text
        if not ref_text:
            if transcribe is None:
                raise VoiceError(f"{where}: ref_text is empty, which asks for a transcription, and no speech "
                                 "recogniser is configured; write the clip's exact words in ref_text, or set "
                                 "F5_QA_ASR (pocketsphinx for English, faster-whisper:MODEL for any language)")
            ref_text = transcribe(data, where).strip()
            if not ref_text:
                raise VoiceError(f"{where}: the recogniser heard no words in the clip; write them in ref_text")
        digest = hashlib.sha256(data).hexdigest()
        key = f"voices/books/{book}/{name}{mapped.clip.suffix.lower() or '.wav'}"
        _upload_clip(storage, key, data, digest)
        speed = mapped.speed if mapped.speed is not None else voice_map.speed
        voices[name] = CastVoice(name, VoiceSpec(ref_audio=key, ref_text=ref_text, sha256=digest),
                                 planning_seconds(seconds), speed)
    return voices


def build_cast(storage: Storage, book: str, *, narrator: CastVoice | None, voice_map: VoiceMap | None,
               dialogue: str | None, tags: bool, unknown: str | None,
               transcribe: Transcriber | None = None) -> BookCast:
    """The cast, every voice resolved (clips uploaded, transcripts known), or a VoiceError saying what is missing."""
    voices = mapped_voices(storage, book, voice_map, transcribe) if voice_map else {}
    if narrator is not None:
        voices[narrator.name] = narrator
    elif MAIN not in voices:
        raise VoiceError("no narrator: give --voice NAME, --ref-audio KEY with --ref-text, or a voice map with a "
                         "main voice (ref_audio at its top level)")
    cast = BookCast(narrator.name if narrator else MAIN, voices, dialogue, tags or voice_map is not None, unknown,
                    storage, frozenset(list_voice_names(storage)))
    for role, name in (("--dialogue-voice", dialogue), ("--unknown-voice", unknown)):
        if name is not None and name not in voices and name not in cast.stored_names:
            raise VoiceError(f"{role} {name}: no such voice in the voice map or in storage; add it with "
                             f"`f5-batch voice add {name} CLIP --text …`")
        if name is not None:
            cast.voice(name)
    return cast
