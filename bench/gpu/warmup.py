"""What the full warm-up would take, estimated from a warm-up restricted to some buckets.

Why an estimate: the quick run warms only the buckets it serves, to keep compile time inside one device call, but a
worker warms every bucket. With symbolic sizes the graphs are the same whichever buckets are warmed (the first shape
of each graph carries its compile, measured), so what the other buckets add is runs: each unmeasured shape is costed
at the measured seconds per FLOP of the warmed shapes that compiled nothing (same CFG setting where there is one),
and never below the cheapest such shape (small shapes are bound by overhead, not FLOPs).
"""

from __future__ import annotations

from typing import Any

from measure import useful_flops

from worker.engine.engine import Engine


def shape_flops(arch: dict[str, Any], rows: int, frames: int, use_cfg: bool) -> float:
    """FLOPs of one warm-up shape: ``rows`` rows of ``frames - i`` frames (as ``Sampler.warm_up`` builds them),
    one step."""
    return useful_flops(arch, [frames - i for i in range(rows)], nfe=1, cfg=use_cfg)


def full_shapes(engine: Engine) -> list[tuple[int, int, bool]]:
    """Every (rows, frames, CFG) shape ``Engine.warm_up()`` runs without a bucket restriction."""
    planner = engine.planner
    shapes = []
    for bucket in planner.frame_buckets:
        widest = max(1, min(planner.max_batch, planner.frame_budget // bucket))
        for rows in sorted({1, min(2, widest), widest}):
            shapes += [(rows, bucket, True), (rows, bucket, False)]
    return shapes


def full_warmup_estimate(engine: Engine, warmed: dict[str, Any]) -> dict[str, Any]:
    """The full warm-up's seconds: the measured restricted warm-up plus the estimated runs of every shape it left
    out. ``warmed``: what ``measure.warm`` returned."""
    arch = engine.preset.arch
    measured = {(s["rows"], s["frames"], s["cfg"]): s for s in warmed["warmup_shapes"]}
    runs = [s for s in warmed["warmup_shapes"] if not s["new_graphs"]]
    rate: dict[bool, float] = {}
    for use_cfg in (True, False):
        chosen = [s for s in runs if s["cfg"] == use_cfg] or runs
        flops = sum(shape_flops(arch, s["rows"], s["frames"], s["cfg"]) for s in chosen)
        if flops:
            rate[use_cfg] = sum(s["seconds"] for s in chosen) / flops
    floor = min((s["seconds"] for s in runs), default=0.0)
    missing = [shape for shape in full_shapes(engine) if shape not in measured]
    if not engine.compiled:
        return {"seconds": warmed["warmup_s"], "estimated": False, "why": "not compiled: warm-up runs no shapes"}
    if missing and not rate:
        return {"seconds": None, "estimated": True, "why": "no warmed shape ran without compiling, nothing to scale"}
    added = sum(max(rate[cfg] * shape_flops(arch, rows, frames, cfg), floor) for rows, frames, cfg in missing)
    return {"seconds": round(warmed["warmup_s"] + added, 1), "estimated": True,
            "measured_s": warmed["warmup_s"], "added_runs_s": round(added, 1), "shapes_estimated": len(missing),
            "shapes_measured": len(measured), "buckets": list(engine.planner.frame_buckets),
            "compile_s_cfg_off": round(sum(s["seconds"] for s in warmed["warmup_shapes"]
                                           if s["new_graphs"] and not s["cfg"]), 1),
            "method": "measured warm-up + each unwarmed shape at the measured s/FLOP of warmed shapes that compiled "
                      "nothing (floor: the cheapest of them); the graphs are shared, so no compile is added"}
