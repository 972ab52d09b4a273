"""Voice maps in upstream's TOML format (``f5-tts_infer-cli -c story.toml``), accepted as they are.

    ref_audio = "infer/examples/multi/main.flac"   # the main voice ("main")
    ref_text = ""                                  # empty: transcribed (needs an ASR, see README "Quality")
    gen_file = "infer/examples/multi/story.txt"    # the text, when the map itself is given as the corpus
    [voices.town]
    ref_audio = "infer/examples/multi/town.flac"
    ref_text = ""
    speed = 0.8

Clip paths are read relative to the map's folder; a path upstream's examples use (``infer/examples/…``) that is not
there is read from the installed ``f5_tts`` package, as upstream's CLI does. Keys we do not use (``model``,
``output_file``, ``remove_silence``…) are ignored, so the same file serves both tools. A missing clip, an unreadable
file or a voice without ``ref_audio`` stops ``enqueue`` with the file and the fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAIN = "main"
UPSTREAM_EXAMPLES = "infer/examples/"


class VoiceMapError(ValueError):
    """The voice map cannot be used as written; the message names the file and the fix."""


@dataclass(frozen=True)
class MappedVoice:
    name: str
    clip: Path
    ref_text: str  # "" asks for a transcription
    speed: float | None = None


@dataclass(frozen=True)
class VoiceMap:
    path: Path
    voices: dict[str, MappedVoice]  # "main" included
    gen_file: Path | None = None
    speed: float | None = None  # the map's global speed: for voices that set none


def _resolve(path: str, folder: Path, where: str) -> Path:
    candidate = (folder / path).expanduser()
    if candidate.is_file():
        return candidate
    if path.startswith(UPSTREAM_EXAMPLES):
        packaged = Path(str(files("f5_tts").joinpath(path)))
        if packaged.is_file():
            return packaged
    raise VoiceMapError(f"{where}: the clip {path!r} does not exist (looked in {folder}); give a path relative to "
                        "the voice map, or an absolute one")


def _voice(name: str, table: Any, folder: Path, where: str) -> MappedVoice:
    if not isinstance(table, dict) or not isinstance(table.get("ref_audio"), str) or not table["ref_audio"]:
        raise VoiceMapError(f"{where}: voice {name!r} needs ref_audio = \"path/to/clip.wav\"")
    ref_text = table.get("ref_text", "")
    if not isinstance(ref_text, str):
        raise VoiceMapError(f"{where}: voice {name!r}: ref_text must be a string (\"\" to transcribe the clip)")
    speed = table.get("speed")
    if speed is not None and (not isinstance(speed, (int, float)) or not 0 < float(speed) <= 4):
        raise VoiceMapError(f"{where}: voice {name!r}: speed must be a number above 0 and at most 4, got {speed!r}")
    return MappedVoice(name, _resolve(table["ref_audio"], folder, where), ref_text.strip(),
                       None if speed is None else float(speed))


def load_voice_map(path: Path) -> VoiceMap:
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VoiceMapError(f"{path}: no such voice map") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise VoiceMapError(f"{path}: not a readable TOML voice map ({exc})") from None
    folder = path.resolve().parent
    voices: dict[str, MappedVoice] = {}
    speed = config.get("speed")
    if speed is not None and (not isinstance(speed, (int, float)) or not 0 < float(speed) <= 4):
        raise VoiceMapError(f"{path}: speed must be a number above 0 and at most 4, got {speed!r}")
    if "ref_audio" in config:
        voices[MAIN] = _voice(MAIN, {**config, "speed": None}, folder, str(path))
    table = config.get("voices", {})
    if not isinstance(table, dict):
        raise VoiceMapError(f"{path}: [voices.NAME] tables expected")
    for name, entry in table.items():
        voices[name] = _voice(name, entry, folder, f"{path} [voices.{name}]")
    if not voices:
        raise VoiceMapError(f"{path}: no voice: give ref_audio (the main voice) and/or [voices.NAME] tables")
    gen_file = config.get("gen_file")
    return VoiceMap(path, voices, _resolve(gen_file, folder, str(path)) if isinstance(gen_file, str) and gen_file
                    else None, None if speed is None else float(speed))
