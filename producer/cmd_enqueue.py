"""``f5-batch enqueue``: a corpus (and its script: voices, lexicon, pauses) into jobs, one version of the book."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from producer import corpus
from producer.book_run import BookSource, check_script, file_sha256, read_lexicon, run_book
from producer.cast import BookCast, CastVoice, build_cast, stored_voice
from producer.cmd_common import _context, only_chapters, progress_option, resend_option, with_common
from producer.jobs import BOOK_ID, book_record
from producer.manifest import ManifestFiles
from producer.normalize import detect_language
from producer.publish import BrokerUnavailable, check_broker
from producer.reading import CorpusError
from producer.script import ScriptError
from producer.tracking import load_record
from producer.transcribe import configured_transcriber
from producer.voicemap import VoiceMap, VoiceMapError, load_voice_map
from worker.books.manifest import BookRecord
from worker.constants import PRIORITY_BOOKS
from worker.contract import JobParams, QASpec, VoiceSpec
from worker.settings import Settings
from worker.speech import planning_seconds
from worker.storage import Storage
from worker.voices import VoiceError, voice_from_key

# Re-exported: other commands import these from here.
__all__ = ["_context", "enqueue", "only_chapters", "with_common"]


def _narrator(storage: Storage, name: str | None, ref_audio: str | None, ref_text: str | None,
              voice_map: VoiceMap | None) -> CastVoice | None:
    if name and (ref_audio or ref_text):
        raise click.UsageError("give --voice NAME, or --ref-audio KEY with --ref-text, not both")
    if name:
        return stored_voice(storage, name)
    if ref_audio and ref_text:
        voice = voice_from_key(storage, ref_audio, ref_text)
        return CastVoice(voice.name, VoiceSpec(ref_audio=voice.ref_audio, ref_text=voice.ref_text,
                                               sha256=voice.sha256), planning_seconds(voice.seconds))
    if ref_audio or ref_text or voice_map is None:
        raise click.UsageError("give --voice NAME, --ref-audio KEY with --ref-text, or --voices MAP.toml")
    return None


def _cast(storage: Storage, book: str, settings: Settings, voice_name: str | None, ref_audio: str | None,
          ref_text: str | None, voice_map: VoiceMap | None, dialogue_voice: str | None, tags: bool,
          unknown_voice: str | None) -> BookCast:
    narrator = _narrator(storage, voice_name, ref_audio, ref_text, voice_map)
    return build_cast(storage, book, narrator=narrator, voice_map=voice_map, dialogue=dialogue_voice, tags=tags,
                      unknown=unknown_voice, transcribe=configured_transcriber(settings))


@click.command("enqueue")
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(path_type=Path))
@click.option("--book", required=True, help="Book id: letters, digits, '.', '_', '-'.")
@click.option("--voice", "voice_name", help="The narrator: a voice added with `f5-batch voice add`.")
@click.option("--ref-audio", help="Key of a reference clip in storage (instead of --voice).")
@click.option("--ref-text", help="Transcript of --ref-audio.")
@click.option("--voices", "voices_file", type=click.Path(path_type=Path, dir_okay=False),
              help="A voice map in upstream's TOML format (story.toml): its main voice narrates, [voices.NAME] "
                   "tables are the voices [NAME] tags switch to. A .toml given as CORPUS is read as one.")
@click.option("--tags", is_flag=True, help="Read [NAME] voice tags (on with --voices): NAME is a stored voice.")
@click.option("--unknown-voice", help="Read tags naming no known voice in this voice (default: refuse them).")
@click.option("--dialogue-voice", help="Speak quoted speech (Spanish dashes, « », “ ”) in this voice; the narration, "
              "speaker tags included, stays in the narrator's.")
@click.option("--lexicon", "lexicon_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Pronunciations, one `written = spoken` per line (see README, 'Narrating a novel').")
@click.option("--scene-pause", default=2.0, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds of silence at a scene break (* * *, ***, a line of dashes).")
@click.option("--lang", type=click.Choice(["es", "en", "auto"]), default="auto", show_default=True)
@click.option("--max-chars", type=click.IntRange(min=20), help="Segment limit (UTF-8 bytes of spoken text). "
              "Default: upstream's rule from each voice's reference length.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Segments of similar length per f5tts.synthesize_batch message; 1 sends one f5tts.synthesize "
                   "message per segment. Workers gather messages into full passes either way; batches cut the "
                   "publishing cost (about 1.5 ms a message).")
@click.option("--max-queued", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Backpressure: at most this many messages waiting in the queue (resume keeps it).")
@click.option("--priority", type=click.IntRange(0, 9), default=PRIORITY_BOOKS, show_default=True,
              help="Redis priority, 0 (served first) to 9. Books wait behind interactive requests (0) and single "
                   "jobs from the gateway (3).")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--chapter-regex", help="Regex matching chapter headings (at the start of a paragraph).")
@click.option("--chapters", "chapter_range", help="Only these chapters, e.g. 1-2 or 5 (0 is front matter).")
@click.option("--nfe-step", default=16, show_default=True, type=int)
@click.option("--cfg-strength", default=2.0, show_default=True, type=float)
@click.option("--speed", default=1.0, show_default=True, type=float)
@click.option("--seed", type=int, help="One seed for every segment; default: derived per segment from content.")
@click.option("--force", is_flag=True, help="Send every segment again, even those stored or on their way.")
@click.option("--wait", is_flag=True, help="Follow the book until every segment is rendered or failed.")
@click.option("--qa", "qa_mode", type=click.Choice(["off", "signal", "asr"]),
              help="The quality gate: signal checks on every take (default, F5_QA_MODE), asr to also transcribe each "
                   "take on the QA queue (needs a QA worker), or off. Failing takes are rendered again.")
@click.option("--qa-attempts", type=click.IntRange(1, 16), help="Takes a failing segment gets (default 3).")
@click.option("--qa-max-cer", type=click.FloatRange(0, 1), help="Highest character error rate that passes.")
@click.option("--assemble", "auto_assemble", type=click.Choice(["wav", "flac", "ogg", "opus", "mp3"]),
              help="Assemble each chapter automatically (on the f5tts-cpu queue) once its segments are stored.")
@with_common
@progress_option
@resend_option
def enqueue(corpus_path: Path, book: str, voice_name: str | None, ref_audio: str | None, ref_text: str | None,
            voices_file: Path | None, tags: bool, unknown_voice: str | None, dialogue_voice: str | None,
            lexicon_file: Path | None, scene_pause: float, lang: str, max_chars: int | None, batch_size: int,
            max_queued: int, priority: int | None, encoding: str, chapter_regex: str | None,
            chapter_range: str | None, nfe_step: int, cfg_strength: float, speed: float, seed: int | None,
            force: bool, wait: bool, qa_mode: str | None, qa_attempts: int | None, qa_max_cer: float | None,
            auto_assemble: str | None, prefix: str, manifest_dir: Path, interval_s: float,
            resend_after: float) -> None:
    """Split CORPUS (.txt, .md, .jsonl, .epub; or a voice map .toml naming its text) into segments and enqueue one
    job per segment (or per batch). Run again after an edit: only the segments it changed are rendered."""
    if not re.match(BOOK_ID, book):
        raise click.BadParameter(f"{book!r}: use letters, digits, '.', '_' and '-'", param_hint="--book")
    try:
        params = JobParams(nfe_step=nfe_step, cfg_strength=cfg_strength, speed=speed, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    settings, app, storage = _context()
    lexicon = read_lexicon(str(lexicon_file) if lexicon_file else None)
    try:
        check_broker(app)
        if corpus_path.suffix.lower() == ".toml" and voices_file is None:
            voices_file = corpus_path
        voice_map = load_voice_map(voices_file) if voices_file else None
        if corpus_path.suffix.lower() == ".toml":
            if voice_map is None or voice_map.gen_file is None:
                raise click.ClickException(f"{corpus_path}: a voice map given as the corpus must name its text "
                                           "(gen_file = \"story.txt\")")
            corpus_path = voice_map.gen_file
        cast = _cast(storage, book, settings, voice_name, ref_audio, ref_text, voice_map, dialogue_voice, tags,
                     unknown_voice)
        narrator = cast.voice(cast.narrator)
        limit = max_chars or cast.limit(cast.narrator, params, None)
        stream = corpus.segments(corpus_path, lambda v: cast.limit(v or cast.narrator, params, max_chars), lang,
                                 encoding, chapter_regex, cast.script(), lexicon, scene_pause)
        first = next(iter(only_chapters(stream, chapter_range)), None)  # file errors surface here
    except (BrokerUnavailable, CorpusError, VoiceError, VoiceMapError, ScriptError) as exc:
        raise click.ClickException(str(exc)) from None
    if first is None:
        raise click.ClickException(f"{corpus_path}: no text to speak")
    detected = detect_language(first.raw) if lang == "auto" else lang
    record = book_record(book, prefix, narrator.spec, params, detected, limit, batch_size, priority, corpus_path)
    files = ManifestFiles(manifest_dir, book)
    record = _versioned(record, load_record(files, storage, prefix, book), encoding=encoding,
                        chapter_regex=chapter_regex, chapters=chapter_range, cast=cast.to_record(),
                        lexicon=str(lexicon_file.resolve()) if lexicon_file else None,
                        lexicon_sha256=lexicon.digest if lexicon else "",
                        voices_file=str(voices_file.resolve()) if voices_file else None,
                        corpus_sha256=file_sha256(corpus_path), scene_pause_s=scene_pause, max_queued=max_queued)
    record.extra.update({"assemble": auto_assemble, "max_chars_option": max_chars,
                         "narrator_seconds": narrator.seconds,
                         "qa": _qa_spec(settings, qa_mode, qa_attempts, qa_max_cer, detected)})
    from producer.book_meta import stored_book_meta  # title, authors, cover… of an EPUB, for the audiobook files

    record.meta = stored_book_meta(corpus_path, storage, prefix, book)
    source = BookSource(corpus_path, cast, lexicon)
    check_script(source, record)
    run_book(settings, app, storage, record, files, source, max_queued, interval_s, force=force)
    if wait:
        from producer.cmd_resume import follow_book

        follow_book(app, settings, storage, files, record, interval_s, max_queued, resend_after)


def _qa_spec(settings: Settings, mode: str | None, attempts: int | None, max_cer: float | None,
             lang: str) -> dict[str, Any] | None:
    """The quality gate every job of the book carries (``worker.contract.QASpec``), or None when it is off."""
    mode = mode or settings.qa.mode
    if mode == "off":
        return None
    spec = QASpec(max_attempts=attempts or settings.qa.max_attempts, asr=mode == "asr", lang=lang,
                  max_cer=max_cer)
    return spec.model_dump(mode="json", exclude_none=True)


def _versioned(record: BookRecord, previous: BookRecord | None, **fields: Any) -> BookRecord:
    """The new record, numbered after the previous version (``run_book`` raises it when segments changed)."""
    record = record.model_copy(update=fields)
    if previous is not None:
        record.version = previous.version
        if previous.extra.get("overrides"):  # texts fixed on the review page stay fixed
            record.extra["overrides"] = previous.extra["overrides"]
        if not previous.complete and previous.corpus_sha256 and previous.corpus_sha256 != record.corpus_sha256:
            from producer.progress import console

            console.print(f"{record.book}: the corpus changed since the interrupted enqueue; this run is a new "
                          "version, read from the new text (segments already rendered and unchanged are kept)")
    return record
