"""A short soak in CI (the long one is ``bench/bench_soak.py``): random SIGKILLs of the engine process and of the whole
worker while jobs arrive from an interrupted enqueue, ``resume`` and the gateway; then storage is counted against the
manifest and every execution against the S3 endpoint's own request log: nothing lost, nothing executed twice, no
corrupt or mis-sized WAV."""

from __future__ import annotations

import pytest

from tests.faults.soak import run_soak

pytestmark = pytest.mark.timeout(900)


def test_short_soak_with_random_kills(prepared_random_weights, tmp_path, quijote_path, ref_wav_path, engine):
    report = run_soak(60, tmp_path, prepared_random_weights, quijote_path, ref_wav_path, engine, kill_every_s=4.0,
                      max_kills=3)
    assert report.engine_kills >= 1 and report.worker_kills >= 1, report
    assert report.via_resume > 0 and report.via_gateway > 0, report
    assert report.executions >= report.jobs  # the counter sees every store, so it can see a second one
    assert (report.lost, report.duplicated, report.corrupt, report.wrong_length) == (0, 0, 0, 0), report
