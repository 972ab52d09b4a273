"""Two chapters of the Quijote enqueued by the producer and rendered by a real worker (every WAV lands), then stitched
into chapter files, in every format, with offsets, pauses and dataset exports; gaps; and flat memory on a long
chapter. (One file for everything that reads the rendered book, so that a test process renders it once.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import cli
from worker.assembly.audio_out import Levelling
from worker.assembly.stitch import AssembleOptions, assemble_chapter
from worker.books.manifest import ManifestEntry
from worker.storage.local import LocalStorage

pytestmark = pytest.mark.timeout(600)

PAUSES = {"sentence": 0.3, "paragraph": 0.8, "title": 1.5}


def _entries(manifests: Path, book: str) -> list[dict]:
    return [json.loads(line) for line in (manifests / f"{book}.jsonl").read_text().splitlines()]


def test_two_chapters_end_to_end_every_wav_lands(rendered_two_chapters):
    env, store, manifests, book, done = rendered_two_chapters
    assert done.returncode == 0, done.stderr[-3000:]
    entries = _entries(manifests, book)
    assert {e["chapter"] for e in entries} == {1, 2}
    stored = sorted(p.relative_to(store).as_posix() for p in (store / "books" / book).glob("[0-9]*/*.wav"))
    assert stored == sorted(e["key"] for e in entries)
    status = cli(env, "status", book, "--json", "--manifest-dir", str(manifests))
    assert json.loads(status.stdout) == {"total": len(entries), "done": len(entries), "failed": 0,
                                         "running": 0, "retrying": 0, "revoked": 0, "queued": 0,
                                         "qa": {"passed": 0, "rerendered": 0, "needs_review": 0, "accepted": 0,
                                                "pending": 0, "unchecked": len(entries)},  # no quality gate here
                                         "failures": {}}


@pytest.fixture(scope="module")
def assembled(rendered_two_chapters):
    env, store, manifests, book, _ = rendered_two_chapters
    done = cli(env, "assemble", book, "--manifest-dir", str(manifests))
    assert done.returncode == 0, done.stderr[-3000:]
    return env, store, manifests, book


def _pause(entry: dict) -> float:
    return PAUSES["title"] if entry["heading"] else PAUSES["paragraph"] if entry["paragraph_end"] else \
        PAUSES["sentence"]


def test_chapter_duration_is_segments_plus_pauses(assembled):
    _, store, manifests, book = assembled
    entries = _entries(manifests, book)
    for chapter in (1, 2):
        items = sorted((e for e in entries if e["chapter"] == chapter), key=lambda e: e["index"])
        segment_samples = sum(sf.info(store / e["key"]).frames for e in items)
        pause_samples = sum(round(_pause(e) * 24000) for e in items[:-1])
        frames = sf.info(store / "books" / book / "chapters" / f"{chapter:03d}.wav").frames
        assert abs(frames - (segment_samples + pause_samples)) <= 1
        assert items[0]["chapter_duration_s"] == pytest.approx(frames / 24000, abs=1 / 24000)


def test_offsets_in_the_manifest_match_the_audio(assembled):
    _, store, manifests, book = assembled
    entries = [e for e in _entries(manifests, book) if e["chapter"] == 1]
    chapter, rate = sf.read(store / "books" / book / "chapters" / "001.wav", dtype="float32")
    levelling = Levelling()
    for entry in sorted(entries, key=lambda e: e["index"])[:25]:
        segment, _ = sf.read(store / entry["key"], dtype="float32")
        start = round(entry["offset_s"] * rate)
        placed = chapter[start : start + segment.size]
        assert entry["duration_s"] == pytest.approx(segment.size / rate, abs=1 / rate)
        assert np.abs(placed - levelling.apply(segment, rate)).max() <= 2 / 32768


def test_levels_are_even_and_edges_click_free(assembled):
    _, store, manifests, book = assembled
    chapter, rate = sf.read(store / "books" / book / "chapters" / "002.wav", dtype="float32")
    entries = sorted((e for e in _entries(manifests, book) if e["chapter"] == 2), key=lambda e: e["index"])
    levels = []
    for entry in entries:
        start, size = round(entry["offset_s"] * rate), round(entry["duration_s"] * rate)
        part = chapter[start : start + size]
        levels.append(20 * np.log10(np.sqrt(np.mean(part**2)) + 1e-9))
        assert abs(part[0]) < 1e-3 and abs(part[-1]) < 1e-3  # faded in and out: no step at the edges
    assert max(levels) - min(levels) < 3.0


@pytest.mark.parametrize("fmt", ["flac", "ogg", "opus", "mp3"])
def test_every_format_parses_back(assembled, fmt):
    env, store, manifests, book = assembled
    done = cli(env, "assemble", book, "--chapters", "1", "--format", fmt, "--quality", "0.6", "--manifest-dir",
               str(manifests))
    assert done.returncode == 0, done.stderr[-2000:]
    wav = sf.info(store / "books" / book / "chapters" / "001.wav")
    encoded = sf.info(store / "books" / book / "chapters" / f"001.{'opus' if fmt == 'opus' else fmt}")
    assert encoded.samplerate == 24000 and encoded.channels == 1
    tolerance = 0 if fmt == "flac" else 1152  # lossy codecs may pad the last frame
    assert abs(encoded.frames - wav.frames) <= tolerance


def test_dataset_exports(assembled):
    _, store, manifests, book = assembled
    entries = _entries(manifests, book)
    rows = (store / "books" / book / "dataset" / "metadata.csv").read_text().splitlines()
    assert len(rows) == len(entries)
    first = rows[0].split("|")
    assert first[0] == entries[0]["id"] and first[2] == entries[0]["normalized"]
    lines = [json.loads(x) for x in (store / "books" / book / "dataset" / "manifest.jsonl").read_text().splitlines()]
    assert [x["audio"] for x in lines] == [e["key"] for e in entries]
    assert all(x["duration"] > 0 for x in lines)
    summary = json.loads((store / "books" / book / "chapters.json").read_text())
    assert [c["chapter"] for c in summary["chapters"]] == [1, 2]


def test_missing_segment_is_a_clear_error_and_gaps_are_filled_on_request(assembled):
    env, store, manifests, book = assembled
    entries = [e for e in _entries(manifests, book) if e["chapter"] == 2]
    victim = sorted(entries, key=lambda e: e["index"])[3]
    (store / victim["key"]).rename(store / "hidden.wav")
    before = (store / "books" / book / "chapters" / "002.wav").stat().st_mtime_ns
    try:
        refused = cli(env, "assemble", book, "--chapters", "2", "--manifest-dir", str(manifests))
        assert refused.returncode != 0 and victim["key"] in refused.stderr and "--allow-gaps" in refused.stderr
        assert (store / "books" / book / "chapters" / "002.wav").stat().st_mtime_ns == before
        filled = cli(env, "assemble", book, "--chapters", "2", "--allow-gaps", "--manifest-dir", str(manifests))
        assert filled.returncode == 0 and "1 gap(s) filled" in filled.stderr.replace("\n", " ")
        annotated = {e["id"]: e for e in _entries(manifests, book)}
        assert annotated[victim["id"]]["gap"] is True and annotated[victim["id"]]["duration_s"] > 0
        chapter, rate = sf.read(store / "books" / book / "chapters" / "002.wav", dtype="float32")
        start = round(annotated[victim["id"]]["offset_s"] * rate)
        hole = chapter[start : start + round(annotated[victim["id"]]["duration_s"] * rate)]
        assert hole.size > 0 and np.abs(hole).max() == 0
    finally:
        (store / "hidden.wav").rename(store / victim["key"])


def test_m4b_without_ffmpeg_says_so(assembled):
    env, _, manifests, book = assembled
    done = cli({**env, "PATH": str(Path(sys.executable).parent)}, "assemble", book, "--chapters", "1", "--m4b",
               "--manifest-dir", str(manifests))
    assert done.returncode != 0 and "needs ffmpeg" in done.stderr


def test_memory_stays_flat_on_a_long_chapter(tmp_path):
    """Two hours of segments: 660 MB as float32 at once; streaming keeps the process far below that."""
    storage = LocalStorage(tmp_path / "store")
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    tone = (0.2 * np.sin(np.arange(6 * 24000) / 9) * (1 + 0.1 * rng.standard_normal(6 * 24000))).astype(np.float32)
    sf.write(buffer, tone, 24000, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    entries = []
    for index in range(1, 1201):  # 1,200 segments × 6 s = 2 h
        key = f"books/long/001/{index:05d}.wav"
        storage.put(key, data)
        entries.append(ManifestEntry(id=f"long-{index}", book="long", chapter=1, index=index, text="x",
                                     normalized="x", key=key, task_id="t", task="f5tts.synthesize"))
    code = f"""
import resource, sys
from pathlib import Path
from worker.assembly.stitch import AssembleOptions, assemble_chapter
from worker.books.manifest import ManifestEntry
from worker.storage.local import LocalStorage
entries = [ManifestEntry(id=f"long-{{i}}", book="long", chapter=1, index=i, text="x", normalized="x",
           key=f"books/long/001/{{i:05d}}.wav", task_id="t", task="f5tts.synthesize") for i in range(1, 1201)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = assemble_chapter(LocalStorage(Path("{tmp_path / 'store'}")), "books", "long", entries,
                          AssembleOptions(sentence_pause_s=0.0, paragraph_pause_s=0.0), Path("{tmp_path}"))
print(result.duration_s, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=500, check=True)
    duration, before_kb, after_kb = (float(x) for x in done.stdout.split())
    assert duration == pytest.approx(7200, abs=0.01)
    assert (after_kb - before_kb) / 1024 < 100, f"assembly grew by {(after_kb - before_kb) / 1024:.0f} MB"
    assert sf.info(tmp_path / "store" / "books" / "long" / "chapters" / "001.wav").frames == 7200 * 24000
    assert AssembleOptions().extension == "wav" and callable(assemble_chapter)


def test_chapters_assemble_automatically_on_the_cpu_queue(redis_server, prepared_random_weights, tmp_path,
                                                          quijote_path, ref_wav_path, service_dir):
    """enqueue --assemble: a synthesis worker renders, a CPU worker (F5_WORKER_ROLE=assembler, -Q f5tts-cpu)
    stitches each chapter as soon as its last segment is stored."""
    from tests.conftest import REF_TEXT, two_chapters, worker_env
    from tests.services import WorkerProcess, wait_until

    env = worker_env(redis_server.url, f"file://{tmp_path / 'store'}", prepared_random_weights, F5_QUEUE="auto")
    assert cli(env, "voice", "add", "narrador", str(ref_wav_path), "--text", REF_TEXT).returncode == 0
    synth = WorkerProcess(env, service_dir / "logs", concurrency=2).start()
    assembler = WorkerProcess({**env, "F5_WORKER_ROLE": "assembler"}, service_dir / "logs", concurrency=1,
                              extra_args=["-Q", "f5tts-cpu", "-P", "solo"]).start(wait=False)
    try:
        done = cli(env, "enqueue", str(two_chapters(quijote_path, tmp_path)), "--book", "auto", "--voice",
                   "narrador", "--nfe-step", "2", "--assemble", "flac", "--chapters", "0-1", "--manifest-dir",
                   str(tmp_path / "m"), "--wait", timeout=500)
        assert done.returncode == 0, done.stderr[-2000:]
        chapters = tmp_path / "store" / "books" / "auto" / "chapters"
        wait_until(lambda: sorted(p.name for p in chapters.glob("*.flac")) == ["001.flac"], 120,
                   "the chapter to be assembled")
        assert "engine ready" not in assembler.log()
        assert assembler.log().count("f5tts.assemble_chapter") >= 1
        rendered = sorted((tmp_path / "store" / "books" / "auto" / "001").glob("*.wav"))
        total = sum(sf.info(p).frames for p in rendered)
        assert sf.info(chapters / "001.flac").frames > total  # every segment, plus the pauses
    finally:
        synth.stop()
        assembler.stop()
