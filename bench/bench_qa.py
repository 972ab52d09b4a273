"""QA cost on CPU: seconds of compute per second of audio for the signal checks, the CER score, pocketsphinx, and
faster-whisper at Whisper's real ``tiny`` and ``base`` sizes, on the same clips (espeak-ng sentences in English and
Spanish, and F5-TTS's own English example clips). Writes bench/results/qa-cpu.json.

The Whisper models have random weights (the Hugging Face hub cannot be reached from the bench machines; they are
built and converted with CTranslate2's converter by tests/qa_models.py). A random model never emits its end token, so
it decodes up to the cap it is given; the bench sets that cap to the number of tokens a real transcript of each clip
would have (read speech: the texts' length at ~4 characters per Whisper token, over their audio), which makes the
cost that of real transcripts of that length. One row per model also shows the production cap (16 tokens + 8 per
second): what a real model stuck in a hallucination loop costs at most.

    python bench/bench_qa.py [--sizes tiny,base] [--compute int8[,float32]] [--threads 2] [--repeat 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results
from tests.qa_models import REF_EN_TEXT, espeak, multi_clips, random_whisper, read_mono, ref_en
from worker.qa.asr import ASROptions, Clip, Recognizer, make_recognizer
from worker.qa.signal import check_signal
from worker.qa.textnorm import score

EN = [
    "The weather today is sunny with a light breeze from the west.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like to read a book about the history of the city before we travel there next spring.",
    "A town mouse and a country mouse were acquaintances, and the country mouse invited his friend to dinner.",
]
ES = [
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía un hidalgo.",
    "Una olla de algo más vaca que carnero, salpicón las más noches, duelos y quebrantos los sábados.",
    "Frisaba la edad de nuestro hidalgo con los cincuenta años; era de complexión recia, seco de carnes.",
]
CHARS_PER_TOKEN = 4.0  # Whisper's byte-level BPE on English and Spanish prose, roughly


class Sample:
    def __init__(self, name: str, clip: Clip, text: str | None) -> None:
        self.name, self.clip, self.text = name, clip, text


def samples(folder: Path) -> list[Sample]:
    found = [Sample("f5:basic_ref_en", Clip(*read_mono(ref_en()), "en"), REF_EN_TEXT)]
    found += [Sample(f"f5:{p.stem}", Clip(*read_mono(p), "en"), None) for p in multi_clips()]
    for lang, texts, voice in (("en", EN, "en-us"), ("es", ES, "es")):
        for i, text in enumerate(texts):
            audio, rate = espeak(text, folder, voice=voice)
            found.append(Sample(f"espeak:{lang}{i + 1}", Clip(audio, rate, lang), text))
    return found


def seconds(items: Sequence[Sample]) -> float:
    return sum(s.clip.duration_s for s in items)


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeat`` runs. CPU time (all threads of this process) is reported
    too because the bench machines are shared: it moves less than wall time when other work competes."""
    times = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def row(backend: str, mode: str, items: Sequence[Sample], measured: tuple[float, float],
        **extra: object) -> dict[str, object]:
    audio, (wall, cpu) = seconds(items), measured
    return {"backend": backend, "mode": mode, "clips": len(items), "audio_s": round(audio, 1),
            "wall_s": round(wall, 3), "s_per_audio_s": round(wall / audio, 4),
            "cpu_s_per_audio_s": round(cpu / audio, 4), "ms_per_clip": round(1000 * wall / len(items), 1), **extra}


def bench_cheap(items: list[Sample], repeat: int) -> list[dict[str, object]]:
    signal = best_of(repeat, lambda: [check_signal(s.clip.samples, s.clip.rate) for s in items])
    scored = [s for s in items if s.text]
    cer = best_of(repeat, lambda: [score(s.text or "", "some of the words " + (s.text or ""), s.clip.language)
                                   for s in scored])
    return [row("signal checks", "numpy", items, signal), row("CER score", "jiwer", scored, cer)]


def transcribe_each(recognizer: Recognizer, items: Sequence[Sample]) -> list[str]:
    return [recognizer.transcribe([s.clip])[0] for s in items]


def transcribe_batched(recognizer: Recognizer, items: Sequence[Sample]) -> list[str]:
    return recognizer.transcribe([s.clip for s in items])  # one call; the backend groups by language


def bench_pocketsphinx(items: list[Sample], repeat: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    english = [s for s in items if s.clip.language == "en"]
    recognizer = make_recognizer("pocketsphinx")
    transcribe_each(recognizer, english[:1])  # warm-up
    runs: list[list[str]] = []
    wall = best_of(repeat, lambda: runs.append(transcribe_each(recognizer, english)))
    heard = runs[-1]
    observed: list[dict[str, object]] = [
        {"clip": s.name, "text": s.text, "heard": h,
         "cer": None if s.text is None else round(score(s.text, h, "en").cer, 3)}
        for s, h in zip(english, heard, strict=True)]
    return [row("pocketsphinx", "one clip at a time (English only)", english, wall, threads=1)], observed


def whisper_rows(folder: Path, size: str, compute: str, threads: int, tokens_per_s: float, items: list[Sample],
                 repeat: int) -> list[dict[str, object]]:
    realistic = ASROptions(compute_type=compute, cpu_threads=threads, batch_size=8, min_new_tokens=0,
                           max_tokens_per_second=tokens_per_s)
    recognizer = make_recognizer(f"faster-whisper:{folder}", realistic)
    transcribe_batched(recognizer, items[:2])  # warm-up
    label = f"faster-whisper {size} ({compute}, random weights)"
    extra = {"threads": threads, "cap": f"{tokens_per_s:.2f} tokens/s (real transcript length)"}
    rows = [row(label, "one clip at a time", items, best_of(repeat, lambda: transcribe_each(recognizer, items)),
                **extra),
            row(label, "one batched call (8 per pass)", items,
                best_of(repeat, lambda: transcribe_batched(recognizer, items)), **extra)]
    worst = make_recognizer(f"faster-whisper:{folder}", ASROptions(compute_type=compute, cpu_threads=threads))
    transcribe_batched(worst, items[:2])
    rows.append(row(label, "one batched call (8 per pass)", items,
                    best_of(repeat, lambda: transcribe_batched(worst, items)), threads=threads,
                    cap="16 + 8 tokens/s (production cap: a hallucination's worst case)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--compute", default="int8", help="CTranslate2 compute types, e.g. int8,float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="keep the converted random Whispers here")
    args = parser.parse_args()
    load_before = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="f5bench-qa-"))
    cache = args.cache or work / "models"
    items = samples(work / "espeak")
    known = [s for s in items if s.text]
    tokens_per_s = sum(len(s.text or "") / CHARS_PER_TOKEN for s in known) / seconds(known)
    print(f"{len(items)} clips, {seconds(items):.1f} s of audio; real-transcript cap {tokens_per_s:.2f} tokens/s")

    rows = bench_cheap(items, max(3, args.repeat))
    sphinx_rows, observed = bench_pocketsphinx(items, args.repeat)
    rows += sphinx_rows
    for size in args.sizes.split(","):
        start = time.perf_counter()
        folder = random_whisper(cache / f"whisper-{size}-random", architecture=size)
        print(f"random Whisper {size} ready in {time.perf_counter() - start:.0f} s")
        for compute in args.compute.split(","):
            rows += whisper_rows(folder, size, compute, args.threads, tokens_per_s, items, args.repeat)

    columns = ["backend", "mode", "clips", "audio_s", "wall_s", "s_per_audio_s", "cpu_s_per_audio_s", "ms_per_clip",
               "cap"]
    print_table(rows, columns)
    print_table(observed, ["clip", "cer", "heard"])
    cers = [o["cer"] for o in observed if isinstance(o["cer"], float)]
    path = write_results("qa-cpu", {
        "clips": [{"name": s.name, "language": s.clip.language, "seconds": round(s.clip.duration_s, 2),
                   "rate": s.clip.rate} for s in items],
        "real_transcript_tokens_per_s": round(tokens_per_s, 3),
        "rows": rows,
        "pocketsphinx_observed": observed,
        "pocketsphinx_cer_median": round(statistics.median(cers), 3) if cers else None,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "note": ("s_per_audio_s: compute seconds per second of audio (lower is better), best of "
                 f"{args.repeat}. Whisper weights are random (no hub access): decoding runs to the cap, set to "
                 f"the token count of a real transcript of each clip ({CHARS_PER_TOKEN:g} chars/token) except in "
                 "the production-cap rows. Clips: espeak-ng sentences (en, es) and F5-TTS's example clips (en)."),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
