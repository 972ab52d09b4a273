"""``f5-batch status`` and ``f5-batch voice add|list``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
from rich.table import Table

from producer.cmd_enqueue import _context, with_common
from producer.manifest import ManifestFiles
from producer.progress import console
from producer.tracking import load_entries
from worker.books.review import qa_counts
from worker.books.status import book_status
from worker.runtime.deadletter import DeadLetters
from worker.runtime.takes import TakeRecords
from worker.voices import VoiceError, add_voice, list_voices


@click.command("status")
@click.argument("book")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and failures as JSON.")
@with_common
def status(book: str, as_json: bool, prefix: str, manifest_dir: Path) -> None:
    """Done, queued, running and failed counts for BOOK, with the reasons for failures."""
    settings, app, storage = _context()
    try:
        entries = load_entries(ManifestFiles(manifest_dir, book), storage, prefix, book)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    result = book_status(app, storage, DeadLetters.for_results(settings.broker), entries, prefix, book)
    summary = result.summary()
    quality = qa_counts(TakeRecords.for_results(settings.broker).by_key(book, [e.key for e in entries]), entries)
    if as_json:
        click.echo(json.dumps({**summary, "qa": quality, "failures": result.failed}, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{book}")
    for column in summary:
        table.add_column(column, justify="right")
    table.add_row(*(str(value) for value in summary.values()))
    console.print(table)
    if quality["unchecked"] < len(entries):
        console.print("quality: " + ", ".join(f"{count} {state.replace('_', ' ')}" for state, count in quality.items()
                                              if count))
        if quality["needs_review"]:
            console.print(f"[yellow]{quality['needs_review']} need review[/]: `f5-batch review {book}`, or the "
                          "gateway's review page")
    if summary["revoked"]:
        console.print(f"[yellow]{summary['revoked']} revoked[/]: `f5-batch resume {book}` enqueues them again")
    reasons = Counter(f"{f['code']}: {f['message']}" for f in result.failed.values())
    for reason, count in reasons.most_common(10):
        console.print(f"[red]{count} failed[/] {reason}")


@click.group("voice")
def voice() -> None:
    """Reference voices kept in storage under voices/."""


@voice.command("add")
@click.argument("name")
@click.argument("clip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", help="Exact transcript of the clip. Left out: transcribed with the configured recogniser "
              "(F5_QA_ASR), as upstream does for an empty ref_text; check it with `f5-batch voice list`.")
@click.option("--lang", default="en", show_default=True, help="The clip's language, for the transcription.")
def voice_add(name: str, clip: Path, text: str | None, lang: str) -> None:
    """Upload CLIP and its transcript as voice NAME."""
    settings, _, storage = _context()
    transcribed = False
    if text is None:
        from producer.transcribe import configured_transcriber

        transcribe = configured_transcriber(settings, lang)
        if transcribe is None:
            raise click.ClickException("no --text, and no speech recogniser is configured to transcribe the clip: "
                                       "give its exact words with --text, or set F5_QA_ASR (pocketsphinx for "
                                       "English; faster-whisper:MODEL for any language)")
        try:
            text = transcribe(clip.read_bytes(), str(clip))
        except Exception as exc:
            raise click.ClickException(f"could not transcribe {clip}: {exc}") from None
        transcribed = True
    try:
        added = add_voice(storage, name, clip, text, transcribed=transcribed)
    except VoiceError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"voice {added.name}: {added.ref_audio} ({added.seconds:.1f} s, {added.sample_rate} Hz)")
    if transcribed:
        console.print(f"[yellow]transcribed[/] (review it: F5-TTS needs the exact words): {added.ref_text!r}")


@voice.command("list")
def voice_list() -> None:
    """The voices in storage."""
    _, _, storage = _context()
    table = Table("name", "key", "seconds", "transcript")
    for item in list_voices(storage):
        table.add_row(item.name, item.ref_audio, f"{item.seconds:.1f}", item.ref_text[:60])
    console.print(table)
