"""``bench/gpu/run --quick`` on the tiny model (eager, NFE 4: seconds, not minutes): the shape of the results file a
GPU run writes (rows in the documented order, each measured with its fields or skipped with a reason, ``complete``,
the machine record); that a run killed with SIGKILL after its first row leaves valid JSON holding that row; and that
a row which does not fit the budget is listed as skipped with its estimate. Speed is not asserted here: it is what
``bench/results/engine-gpu-quick*.json`` records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)

RUN = REPO / "bench" / "gpu" / "run"
ORDER = [("engine-compiled", 1), ("upstream-fp16", 2), ("upstream-fp32", 2), ("engine-fp32", 3), ("serving", 4)]
TINY = ["--quick", "--arch", "tiny", "--no-compile", "--nfe", "4", "--extra-nfe", "8", "--max-batch", "2",
        "--upstream-segments", "1", "--steady-s", "2", "--in-flight", "4", "--extra-batches", "1"]
SPEED = {"rtf", "audio_s", "audio_s_per_s", "wall_s", "tflops", "mfu", "peak_allocated_gb", "peak_reserved_gb",
         "batch", "nfe_step", "precision", "compile"}
FIELDS = {
    "engine": SPEED | {"segments", "passes", "rows_per_pass", "frames", "recompiles", "bucket"},
    "upstream": SPEED | {"segments"},
    "engine-serving": {"audio_s_per_s", "rtf", "rows_per_pass", "fill", "idle_over_busy", "busy_s", "idle_s",
                       "passes", "jobs", "seconds", "recompiles", "gpu_util_mean", "warmup_s", "start_s", "buckets"},
}
HEADLINE = {"build_s", "warmup_s", "compile_s", "graphs", "shapes", "buckets_warmed", "warmup_shapes",
            "frame_budget", "parameter_mb", "full_warmup"}
MACHINE = {"platform", "python", "cpus", "device", "torch", "f5-tts", "vocos"}


def start(out: Path, cache: Path, *args: str) -> subprocess.Popen:
    """``bench/gpu/run`` in its own process group (so that a kill reaches the Python under the shell)."""
    # TMPDIR: the run's temporary folder (removed at its exit, but not after a SIGKILL) stays inside ``out``
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(out / "no-wheels"), "TMPDIR": str(out)}
    env.pop("F5_BENCH_STARTED", None)
    return subprocess.Popen([str(RUN), *args, "--out", str(out), "--cache", str(cache)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoint")


def kill_after_first_row(process: subprocess.Popen, path: Path) -> list[dict]:
    """Every version of the results file seen until it holds a row, then SIGKILL to the run's whole group."""
    seen: list[dict] = []
    deadline = time.monotonic() + 200
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists():  # every read must parse: the file is only ever replaced whole
                seen.append(json.loads(path.read_text()))
                if seen[-1]["rows"]:
                    break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    return seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict:
    """Two tiny runs side by side (each uses one torch thread): one to its end, one killed after its first row."""
    done, killed = tmp_path_factory.mktemp("quick"), tmp_path_factory.mktemp("killed")
    name = "engine-gpu-quick-on-cpu.json"
    finishing = start(done, cache, *TINY, "--budget-s", "600")
    seen = kill_after_first_row(start(killed, cache, *TINY, "--budget-s", "600"), killed / name)
    output, _ = finishing.communicate(timeout=280)
    assert finishing.returncode == 0, output[-3000:]
    return {"finished": json.loads((done / name).read_text()), "seen": seen,
            "left": json.loads((killed / name).read_text()) if (killed / name).exists() else None}


@pytest.fixture(scope="module")
def finished(runs: dict) -> dict:
    return runs["finished"]


def check_row(row: dict) -> None:
    assert isinstance(row.get("id"), str) and isinstance(row.get("step"), int) and row.get("label"), row
    if row["status"] == "skipped":
        assert isinstance(row["reason"], str) and len(row["reason"]) > 10, row
        return
    assert row["status"] == "measured", row
    missing = FIELDS[row["mode"]] - set(row)
    assert not missing, f"{row['id']} lacks {sorted(missing)}"
    assert row["audio_s_per_s"] > 0 and row["rtf"] > 0 and row["spent_s"] >= 0
    if row["id"] == "engine-compiled":
        assert not HEADLINE - set(row), f"row 1 lacks {sorted(HEADLINE - set(row))}"
        assert row["buckets_warmed"] == [row["bucket"]]  # warm-up covered only the bucket it served
        assert row["recompiles"] == 0 and row["rows_per_pass"] == row["batch"]


def test_every_planned_row_comes_in_the_documented_order_measured_or_skipped_with_a_reason(finished):
    ids = [(row["id"], row["step"]) for row in finished["rows"]]
    assert ids[: len(ORDER)] == ORDER
    steps = [step for _, step in ids]
    assert steps == sorted(steps) and set(steps[len(ORDER):]) == {5}, ids  # the extras come last
    assert len(ids) > len(ORDER), "the tiny run has time for extras"
    for row in finished["rows"]:
        check_row(row)
    status = {row["id"]: row["status"] for row in finished["rows"]}
    assert status["upstream-fp16"] == "skipped"  # a CPU has no fp16 upstream path; everything else fits here
    assert {k for k, v in status.items() if v == "skipped"} == {"upstream-fp16", "upstream-fp16-nfe8"}
    assert [s["label"] for s in finished["skipped"]] == [r["label"] for r in finished["rows"]
                                                          if r["status"] == "skipped"]


def test_the_file_is_complete_and_records_the_machine_and_the_summary(finished):
    assert finished["complete"] is True and finished["mode"] == "quick"
    assert not MACHINE - set(finished["machine"]) and finished["machine"]["device"] == "cpu"
    assert finished["elapsed_s"] > 0 and finished["budget_s"] == 600 and finished["startup_s"] > 0
    assert [o["id"] for o in finished["order"]][: len(ORDER)] == [i for i, _ in ORDER]
    summary = finished["summary"]
    assert {"headline", "speedup_vs_upstream-fp32", "serving", "spent_s"} <= set(summary)
    assert set(summary["spent_s"]) == {r["id"] for r in finished["rows"] if r["status"] == "measured"}


def test_a_run_killed_after_its_first_row_leaves_valid_json_with_that_row(runs):
    seen, left = runs["seen"], runs["left"]
    assert seen and seen[-1]["rows"], "no row appeared before the deadline"
    assert seen[0]["rows"] == [] and seen[0]["complete"] is False  # written before the first row, too
    assert left is not None and left["complete"] is False
    assert left["rows"][0]["id"] == "engine-compiled" and left["rows"][0]["status"] == "measured"
    check_row(left["rows"][0])


def test_a_row_over_the_budget_is_skipped_with_its_estimate_and_the_file_rewritten(tmp_path):
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    try:
        from record import Results
    finally:
        sys.path.remove(str(REPO / "bench" / "gpu"))
    results = Results(tmp_path / "r.json", 100.0, lambda: {"benchmark": "t"}, started=time.time() - 90)
    assert results.affordable("cheap", 1.0, id="a", step=1)
    assert not results.affordable("dear", 60.0, id="b", step=2)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["complete"] is False and written["rows"][0]["id"] == "b"
    assert written["rows"][0]["status"] == "skipped" and "60 s needed" in written["rows"][0]["reason"]
    results.add({"id": "c", "step": 3, "rtf": 0.5})
    results.finish()
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["complete"] is True and [r["id"] for r in written["rows"]] == ["b", "c"]
    assert list(tmp_path.iterdir()) == [tmp_path / "r.json"]  # no temporary file left behind


def test_warm_up_refuses_buckets_the_engine_does_not_have_and_reports_each_shape(engine):
    """The quick run's restriction (``Engine.warm_up(buckets=...)``) names configured buckets only; on an eager
    engine nothing is compiled, so no shape is run or reported."""
    with pytest.raises(ValueError, match=r"\[999\]"):
        engine.warm_up(buckets=[999])
    shapes: list[tuple] = []
    report = engine.warm_up(buckets=[engine.planner.frame_buckets[0]], on_shape=lambda *shape: shapes.append(shape))
    assert report.shapes == 0 and shapes == []
