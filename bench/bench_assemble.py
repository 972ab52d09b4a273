"""Assembly benchmark: one hour of segments (600 × 6 s of speech-like audio at 24 kHz) stitched into one chapter in
each format. Reports seconds per hour of audio, output size and peak memory. Writes bench/results/assemble.json."""

from __future__ import annotations

import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results
from worker.assembly.stitch import AssembleOptions, assemble_chapter
from worker.books.manifest import ManifestEntry
from worker.storage.local import LocalStorage

SEGMENTS, SECONDS = 600, 6.0


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="f5bench-assemble-"))
    storage = LocalStorage(work / "store")
    rng = np.random.default_rng(0)
    entries = []
    for index in range(1, SEGMENTS + 1):
        t = np.arange(int(SECONDS * 24000)) / 24000
        voice = 0.1 * np.sin(2 * np.pi * (140 + 20 * np.sin(t)) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
        buffer = io.BytesIO()
        sf.write(buffer, (voice + 0.003 * rng.standard_normal(t.size)).astype(np.float32), 24000, format="WAV",
                 subtype="PCM_16")
        key = f"books/bench/001/{index:05d}.wav"
        storage.put(key, buffer.getvalue())
        entries.append(ManifestEntry(id=f"b-{index}", book="bench", chapter=1, index=index, text="x",
                                     normalized="x", key=key, task_id="t", task="f5tts.synthesize",
                                     paragraph_end=index % 5 == 0))
    rows = []
    for fmt in ("wav", "flac", "ogg", "opus", "mp3"):
        start = time.perf_counter()
        result = assemble_chapter(storage, "books", "bench", entries, AssembleOptions(fmt=fmt), work)
        wall = time.perf_counter() - start
        hours = result.duration_s / 3600
        rows.append({"format": fmt, "audio_h": round(hours, 3), "wall_s": round(wall, 2),
                     "s_per_audio_hour": round(wall / hours, 2), "mb": round(result.bytes / 2**20, 1),
                     "mb_per_audio_hour": round(result.bytes / 2**20 / hours, 1)})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table(rows, list(rows[0]))
    print(f"peak RSS {peak:.0f} MB")
    path = write_results("assemble", {"segments": SEGMENTS, "segment_s": SECONDS, "rows": rows,
                                      "peak_rss_mb": round(peak, 1),
                                      "note": "default pauses (0.3 s / 0.8 s every 5th), levelling on, one process"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
