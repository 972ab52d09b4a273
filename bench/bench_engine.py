"""Engine benchmark: upstream ``infer_batch_process`` (one item per pass) against this engine, single and batched.

Same random weights, same reference, same Quijote segments, same run. On CPU a mid-size DiT (speed does not depend on
the weights, but a full-size model takes hours on two cores); on a GPU the full F5TTS_v1_Base architecture. Prints a
table and writes ``bench/results/engine-<device>.json``.

    python bench/bench_engine.py                      # auto: mid-size on CPU, full size on CUDA
    python bench/bench_engine.py --arch full --segments 64 --nfe 16
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import REF_TEXT, print_table, quijote_segments, write_results
from worker.contract import JobParams
from worker.engine.engine import Engine, SynthesisRequest, VoiceInput
from worker.engine.presets import TINY_ARCH, load_preset, random_variant
from worker.settings import EngineSettings

MID_ARCH = {**TINY_ARCH, "dim": 192, "depth": 4, "heads": 3, "dim_head": 64, "text_dim": 96, "conv_layers": 2}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40": 181.0, "L20": 119.5}


def _preset(arch: str):
    base = load_preset("F5TTS_v1_Base")
    if arch == "full":
        return random_variant(base, vocoder_size="full")
    preset = random_variant(base, vocoder_size="full")
    return replace(preset, name=f"{arch}-random", arch=dict(MID_ARCH if arch == "mid" else TINY_ARCH))


def _flops(engine: Engine, frames: list[int], nfe: int) -> float:
    """Useful FLOPs: per mel token per forward 2·(8·d²·L) for the blocks plus 4·T·d·L for attention; ×2 CFG; ×NFE."""
    arch = engine.preset.arch
    d, layers = arch["dim"], arch["depth"]
    return sum(n * (16 * d * d * layers + 4 * n * d * layers) * 2 * nfe for n in frames)


def _upstream(engine: Engine, ref_path: str, segments: list[str], nfe: int, half: bool) -> tuple[float, float]:
    import f5_tts.infer.utils_infer as upstream
    import soundfile as sf

    path, ref_text = upstream.preprocess_ref_audio_text(ref_path, REF_TEXT, show_info=lambda *_: None)
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = torch.from_numpy(samples.T.copy())
    model = engine.model
    if half:  # upstream's default on GPUs of compute capability ≥ 7: the whole model cast to fp16
        model = copy.deepcopy(engine.model).half()
    audio_s, start = 0.0, time.perf_counter()
    for seed, segment in enumerate(segments):
        torch.manual_seed(seed)
        wave, _, _ = next(upstream.infer_batch_process(
            (audio, rate), ref_text, [segment], model, engine.vocoder, nfe_step=nfe, device=str(engine.device),
            progress=None))
        audio_s += len(wave) / 24000
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return audio_s, time.perf_counter() - start


def _ours(engine: Engine, ref: bytes, segments: list[str], nfe: int, batch: int) -> tuple[float, float, list[int]]:
    voice = VoiceInput(ref, REF_TEXT)
    requests = [SynthesisRequest(s, voice, JobParams(nfe_step=nfe), seed=i) for i, s in enumerate(segments)]
    start = time.perf_counter()
    outputs = []
    step = batch if batch > 1 else 1
    for i in range(0, len(requests), step):
        outputs.extend(engine.synthesize(requests[i : i + step]))
    wall = time.perf_counter() - start
    failed = [o.error for o in outputs if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} segments failed: {failed[0]}")
    prepared = engine.voice(ref, True)
    frames = [prepared.ref_frames + int(o.duration_s * 24000 / 256) + 1 for o in outputs]
    return sum(o.duration_s for o in outputs), wall, frames


def _dynamic(engine: Engine, ref: bytes, segments: list[str], nfe: int, wait_s: float) -> tuple[float, float, int]:
    """Every segment as a single job from its own thread, through the dynamic batcher (as ``-P threads`` does)."""
    import threading

    from worker.runtime.batcher import DynamicBatcher

    voice = VoiceInput(ref, REF_TEXT)
    batcher = DynamicBatcher(engine, max_wait_s=wait_s, frame_budget=engine.planner.frame_budget,
                             max_requests=engine.planner.max_batch)
    outputs: list = [None] * len(segments)

    def one(index: int) -> None:
        request = SynthesisRequest(segments[index], voice, JobParams(nfe_step=nfe), seed=index)
        outputs[index] = batcher.synthesize([request])[0]

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(segments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    batcher.close()
    return sum(o.duration_s for o in outputs), wall, batcher.executions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--arch", choices=["tiny", "mid", "full"], default="full" if cuda else "mid")
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64, help="max items per pass for the batched rows")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--compile", default="off,on" if cuda else "off", help="off, on, or off,on")
    parser.add_argument("--skip-upstream-half", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    device = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    segments = quijote_segments(args.segments)
    ref_path = str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))
    ref = Path(ref_path).read_bytes()
    cache = tempfile.mkdtemp(prefix="f5bench-")
    preset = _preset(args.arch)
    rows: list[dict] = []

    def settings(**kw) -> EngineSettings:
        return EngineSettings(model="tiny-random", random_cache_dir=cache, device=device, max_batch=args.batch,
                              frame_budget=args.batch * 2048, **kw)

    def build(**kw) -> Engine:
        import worker.engine.engine as engine_module

        original = engine_module.load_preset
        engine_module.load_preset = lambda _name: preset  # the benchmark's architecture, random weights
        try:
            return Engine.build(settings(**kw))
        finally:
            engine_module.load_preset = original

    def row(mode, precision, batch, compiled, audio_s, wall, frames=None, engine=None, extra=None):
        entry = {"device": device_name, "arch": args.arch, "mode": mode, "precision": precision, "batch": batch,
                 "compile": compiled, "nfe_step": args.nfe, "segments": len(segments), "audio_s": round(audio_s, 2),
                 "wall_s": round(wall, 3), "rtf": wall / audio_s, "audio_s_per_s": audio_s / wall, **(extra or {})}
        if cuda and frames and engine is not None:
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)
            achieved = _flops(engine, frames, args.nfe) / wall / 1e12
            entry["tflops"] = round(achieved, 1)
            entry["mfu"] = round(achieved / peak, 4) if peak else None
        rows.append(entry)
        print(f"  {mode:16s} {precision:5s} batch {batch:3d} compile {compiled!s:5s}: RTF {wall / audio_s:.4f}",
              flush=True)

    base = build(precision="fp32", compile=False)
    base.warm_up()
    audio_s, wall = _upstream(base, ref_path, segments[:2], args.nfe, half=False)  # warm caches, discarded
    audio_s, wall = _upstream(base, ref_path, segments, args.nfe, half=False)
    row("upstream", "fp32", 1, False, audio_s, wall)
    if cuda and not args.skip_upstream_half:
        _upstream(base, ref_path, segments[:2], args.nfe, half=True)
        audio_s, wall = _upstream(base, ref_path, segments, args.nfe, half=True)
        row("upstream", "fp16", 1, False, audio_s, wall)
    upstream_rate = rows[0]["audio_s_per_s"]

    for compiled in [c == "on" for c in args.compile.split(",")]:
        for precision in args.precisions.split(","):
            if precision == "bf16" and not cuda and compiled:
                continue
            engine = build(precision=precision, compile=compiled)
            report = engine.warm_up()
            warm = {"warmup_s": round(report.seconds, 1), "graphs": report.graphs}
            for batch in (1, args.batch):
                _ours(engine, ref, segments[:2], args.nfe, batch)
                audio_s, wall, frames = _ours(engine, ref, segments, args.nfe, batch)
                row("engine-single" if batch == 1 else "engine-batched", precision, batch, compiled, audio_s, wall,
                    frames, engine, warm)
            audio_s, wall, executions = _dynamic(engine, ref, segments, args.nfe, wait_s=0.05)
            row("engine-dynamic", precision, args.batch, compiled, audio_s, wall, frames, engine,
                {**warm, "executions": executions})
            del engine
            if cuda:
                torch.cuda.empty_cache()

    for entry in rows:
        entry["vs_upstream"] = round(entry["audio_s_per_s"] / upstream_rate, 3)
    print()
    print_table(rows, ["device", "mode", "precision", "batch", "compile", "nfe_step", "rtf", "audio_s_per_s",
                       "vs_upstream", "mfu"])
    suffix = "gpu" if cuda else "cpu"
    path = write_results(f"engine-{suffix}{'-' + args.tag if args.tag else ''}", {"arch": preset.arch, "rows": rows,
                                                "note": "random weights; speed does not depend on them"})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
