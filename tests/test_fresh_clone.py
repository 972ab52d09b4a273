"""A new user's first command on a fresh clone with nothing beside it: ``git clone`` into an empty folder, then
README's quickstart, up to the first enqueued book (``QUICKSTART_UNTIL=enqueued``; a full render takes minutes).

The clone reuses this test run's virtual environment (``VENV``), with the clone's own code first on the path, so the
test checks the repository's scripts, defaults and demo text rather than a second 7 GB install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(600)

NOT_SCANNED = {"tests/test_fresh_clone.py", "tests/interop/node/package-lock.json"}  # this pattern; npm's lock
MACHINE_PATHS = re.compile(r"(?<![\w.])(/work/|/root/|/home/\w|\.\./shared)")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    empty = tmp_path_factory.mktemp("fresh")
    target = empty / "f5-batch"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=120)
    assert sorted(p.name for p in empty.iterdir()) == ["f5-batch"]  # nothing beside it
    return target


def test_no_file_names_a_path_of_a_build_machine(clone):
    tracked = subprocess.run(["git", "ls-files"], cwd=clone, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.splitlines():
        path = clone / name
        if name in NOT_SCANNED or path.suffix == ".wav":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        offenders += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                      if MACHINE_PATHS.search(line)]
    assert offenders == []


def test_quickstart_on_a_fresh_clone_reaches_the_first_enqueued_job(clone, prepared_random_weights):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("F5_", "BROKER_", "RESULT_", "STORAGE_", "S3_", "CELERY_"))}
    env.update({"VENV": sys.prefix, "PYTHONPATH": str(clone), "QUICKSTART_UNTIL": "enqueued",
                "F5_RANDOM_CACHE_DIR": str(prepared_random_weights), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    done = subprocess.run(["scripts/quickstart.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=500)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "enqueued; stopping here" in output
    match = re.search(r"quijote: (\d+) segments, \d+ messages published", output)
    assert match and int(match.group(1)) >= 150, output[-2000:]
    log = (clone / "output" / "logs" / "worker.log").read_text()
    assert "ready." in log and str(clone) in log  # the worker ran the clone's code
    assert (clone / "manifests" / "quijote.jsonl").is_file()
