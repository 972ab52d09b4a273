"""The house has one direction: the worker never imports the producer (or the gateway), and the worker's client-facing
side never imports torch. Checked in fresh interpreters, by importing every module."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import worker
from tests.conftest import REPO

HEAVY = ("torch", "torchaudio", "f5_tts", "vocos")
CLIENTS = ("producer", "gateway")


def _loaded_after(code: str) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(worker.__path__, "worker."))


def test_every_worker_module_imports_without_the_producer_or_the_gateway():
    modules = _worker_modules()
    assert "worker.engine.engine" in modules and "worker.assembly.stitch" in modules  # the walk found the layers
    loaded = _loaded_after("\n".join(f"import {name}" for name in modules))
    assert "worker.engine.engine" in loaded
    assert [m for m in loaded if m.split(".")[0] in CLIENTS] == []


def test_import_worker_is_cheap_until_the_app_is_asked_for():
    loaded = _loaded_after("import worker, worker.contract, worker.speech, worker.engine.config")
    assert [m for m in loaded if m.split(".")[0] in ("celery", "kombu", *HEAVY)] == []
    assert "worker.tasks" in _loaded_after("import worker\nworker.app")  # the app comes with its tasks


def test_import_worker_loads_no_torch():
    loaded = _loaded_after("import worker, worker.tasks, worker.signals")
    assert "worker.tasks" in loaded
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


def test_the_torch_free_core_stays_torch_free():
    core = [name for name in _worker_modules() if not name.startswith("worker.engine.")
            or name.split(".")[-1] in ("config", "precision", "presets")]
    loaded = _loaded_after("\n".join(f"import {name}" for name in core))
    assert [m for m in loaded if m.split(".")[0] in ("torch", "torchaudio", "vocos")] == []
