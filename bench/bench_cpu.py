"""On a CPU, side by side in one run: ``f5-batch synth`` against upstream's ``infer_batch_process`` (whole process, the
same sentences and random mid-size weights), and the default worker against prefork with concurrency 2
(concurrent singles, the same code, the same jobs; given as ``--pool processes``, since Celery reads ``--pool prefork``
as no pool given and takes the app's threads pool).

Part A runs each contender as its own process, alternately, ``--rounds`` times: upstream one item at a time (its text
chunking, then ``infer_batch_process``, as ``infer_process`` runs it); ``f5-batch synth`` with one row per pass and
with 8 (``--batch-size``, which synth also uses on a CPU), so the choice is measured, not assumed. Part B
runs a real worker both ways against a private Redis and a local folder, with the tiny random model. Writes
``bench/results/cpu.json``.

    python bench/bench_cpu.py --sentences 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REF_TEXT, RESULTS, print_table, quijote_segments, write_results

REPO = Path(__file__).resolve().parents[1]

UPSTREAM = r'''
import sys, time, json
start = time.perf_counter()
import torch, soundfile as sf
import f5_tts.infer.utils_infer as upstream
from worker.engine.config import EngineConfig
from worker.engine import build
model_path, ckpt, vocoder, ref, ref_text, sentences, nfe = sys.argv[1:8]
loaded = build.load(EngineConfig(model=model_path, ckpt_file=ckpt, vocoder_path=vocoder, device="cpu",
                                 precision="fp32", compile=False))
samples, rate = sf.read(ref, dtype="float32", always_2d=True)
audio = torch.from_numpy(samples.T.copy())
ref_text = ref_text + " "
max_chars = int(len(ref_text.encode()) / (audio.shape[-1] / rate) * (22 - audio.shape[-1] / rate))
produced = 0.0
for seed, text in enumerate(open(sentences, encoding="utf-8").read().splitlines()):
    torch.manual_seed(seed)
    wave, _, _ = next(upstream.infer_batch_process((audio, rate), ref_text, upstream.chunk_text(text, max_chars),
                      loaded.model, loaded.vocoder, nfe_step=int(nfe), device="cpu", progress=None))
    produced += len(wave) / 24000
print(json.dumps({"audio_s": produced, "wall_s": time.perf_counter() - start}))
'''


def _ours(model: dict, ref: Path, sentences: Path, out: Path, nfe: int, rows: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(Path(sys.executable).with_name("f5-batch")), "synth", "--text-file", str(sentences),
               "--ref-audio", str(ref), "--ref-text", REF_TEXT, "-o", str(out), "--model", model["model"], "--ckpt",
               model["ckpt_file"], "--vocoder", model["vocoder_path"], "--nfe-step", str(nfe),
               "--batch-size", str(rows), "--precision", "fp32", "--device", "cpu", "--no-compile"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    audio = float(done.stdout.split("audio ")[1].split(" s")[0])
    return {"audio_s": audio, "wall_s": wall}


def _upstream(model: dict, ref: Path, sentences: Path, nfe: int) -> dict:
    import json

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", UPSTREAM, model["model"], model["ckpt_file"], model["vocoder_path"],
                           str(ref), REF_TEXT, str(sentences), str(nfe)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"audio_s": result["audio_s"], "wall_s": time.perf_counter() - start}


MID_ARCH = {"dim": 512, "depth": 8, "heads": 8, "dim_head": 64, "ff_mult": 2, "text_dim": 256,
            "text_mask_padding": True, "conv_layers": 4}  # the mid-size model (dim 512, depth 8)


def mid_model(cache: Path) -> dict:
    """Random mid-size weights written as a real checkpoint, vocos folder and upstream-style YAML."""
    from dataclasses import replace

    import yaml

    from worker.engine.loading import packaged_vocab
    from worker.engine.presets import load_preset, random_variant
    from worker.engine.random_weights import write_random_files

    preset = replace(random_variant(load_preset("F5TTS_v1_Base"), vocoder_size="full"), name="mid512-random",
                     arch=dict(MID_ARCH))
    ckpt, vocoder = write_random_files(preset, packaged_vocab(), cache)
    config = cache / f"{preset.name}.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": preset.backbone, "arch": preset.arch,
                                                "mel_spec": preset.mel_spec}}))
    return {"model": str(config), "ckpt_file": str(ckpt), "vocoder_path": str(vocoder)}


def part_a(args, work: Path) -> list[dict]:
    from importlib.resources import files

    model = mid_model(work / "weights")
    ref = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
    sentences = work / "sentences.txt"
    sentences.write_text("\n".join(quijote_segments(args.sentences)) + "\n", encoding="utf-8")
    runs: dict[str, list[dict]] = {"upstream infer_batch_process": [], "f5-batch synth --batch-size 1": [],
                                   "f5-batch synth --batch-size 8": []}
    for _ in range(args.rounds):  # alternately, so that the machine's load falls on all of them alike
        runs["upstream infer_batch_process"].append(_upstream(model, ref, sentences, args.nfe))
        runs["f5-batch synth --batch-size 1"].append(_ours(model, ref, sentences, work / "a", args.nfe, 1))
        runs["f5-batch synth --batch-size 8"].append(_ours(model, ref, sentences, work / "b", args.nfe, 8))
    upstream_wall = statistics.median(r["wall_s"] for r in runs["upstream infer_batch_process"])
    rows = []
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        rows.append({"part": "A", "contender": name, "sentences": args.sentences, "rounds": args.rounds,
                     "wall_s": round(wall, 2), "audio_s": round(results[0]["audio_s"], 2),
                     "speed_vs_upstream": round(upstream_wall / wall, 3)})
    return rows


def _throughput(env: dict, log_dir: Path, redis_url: str, jobs: int, extra: list[str], label: str,
                concurrency: int | None) -> dict:
    from celery import Celery

    from tests.services import WorkerProcess

    worker = WorkerProcess(env, log_dir, concurrency=concurrency, extra_args=extra).start()
    client = Celery("bench", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    queue = env["F5_QUEUE"]
    try:
        texts = quijote_segments(jobs + 2)

        def job(i: int) -> dict:
            return {"text": texts[i], "voice": {"ref_audio": "voices/narrador.wav", "ref_text": REF_TEXT},
                    "output": {"key": f"{queue}/{i:04d}.wav"}, "params": {"nfe_step": 16, "seed": i}}

        for i in range(2):  # warm every process
            client.send_task("f5tts.synthesize", kwargs={"job": job(jobs + i)}, queue=queue).get(timeout=300)
        start = time.perf_counter()
        results = [r.get(timeout=900) for r in [client.send_task("f5tts.synthesize", kwargs={"job": job(i)},
                                                                 queue=queue) for i in range(jobs)]]
        wall = time.perf_counter() - start
    finally:
        worker.stop()
    audio = sum(r["duration_s"] for r in results)
    return {"part": "B", "contender": label, "jobs": jobs, "wall_s": round(wall, 2),
            "audio_s_per_s": round(audio / wall, 3)}


def part_b(args, work: Path) -> list[dict]:
    from importlib.resources import files

    from tests.conftest import worker_env
    from tests.services import RedisServer

    redis = RedisServer(work / "redis").start()
    store = work / "store"
    (store / "voices").mkdir(parents=True)
    (store / "voices" / "narrador.wav").write_bytes(
        Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))).read_bytes())
    rows: list[dict[str, Any]] = []
    try:
        base = worker_env(redis.url, f"file://{store}", work / "tiny-weights")
        for name in ("F5_DEVICE", "F5_CPU_ROWS_PER_PASS", "OMP_NUM_THREADS"):  # the default deployment
            base.pop(name, None)
        for round_ in range(args.rounds):
            for label, extra, concurrency in (
                    ("default worker (threads pool)", [], None),
                    ("prefork --concurrency 2 (--pool processes)", ["--pool", "processes"], 2)):
                env = {**base, "F5_QUEUE": f"cpu-{round_}-{len(rows)}"}
                rows.append(_throughput(env, work / "logs", redis.url, args.jobs, extra, label, concurrency))
    finally:
        redis.stop()
    merged = []
    for label in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == label]
        merged.append({**mine[0], "wall_s": round(statistics.median(r["wall_s"] for r in mine), 2),
                       "audio_s_per_s": round(statistics.median(r["audio_s_per_s"] for r in mine), 3),
                       "rounds": len(mine)})
    return merged


def _with_earlier_parts(rows: list[dict], ran: set[str]) -> list[dict]:
    """The rows of the parts not run this time, kept from the results file and marked with when they were measured
    (each part's contenders are side by side within that part's own run)."""
    path = RESULTS / "cpu.json"
    if not path.exists():
        return rows
    earlier = json.loads(path.read_text())
    kept = [{**row, "measured": row.get("measured", earlier["when"])} for row in earlier["rows"]
            if row["part"] not in ran]
    return sorted(kept + rows, key=lambda row: row["part"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--parts", default="A,B")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="f5bench-cpu-"))
    rows = []
    if "A" in args.parts:
        rows += part_a(args, work)
    if "B" in args.parts:
        rows += part_b(args, work)
    rows = _with_earlier_parts(rows, {part for part in "AB" if part in args.parts})
    print_table(rows, ["part", "contender", "sentences", "jobs", "rounds", "wall_s", "audio_s", "speed_vs_upstream",
                       "audio_s_per_s"])
    path = write_results("cpu", {"model_a": "mid-size random (dim 512, depth 8), fp32, NFE 16",
                                 "model_b": "tiny-random, NFE 16", "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
