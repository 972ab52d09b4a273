"""A short soak in CI (the 2,000-job soak is ``bench/bench_soak.py``): random SIGKILLs of pool processes, then
storage counted against the manifest: nothing lost, nothing duplicated, no corrupt or mis-sized WAV."""

from __future__ import annotations

import pytest

from tests.faults.soak import run_soak

pytestmark = pytest.mark.timeout(900)


def test_short_soak_with_random_kills(prepared_random_weights, tmp_path, quijote_path, ref_wav_path, engine):
    report = run_soak(60, tmp_path, prepared_random_weights, quijote_path, ref_wav_path, engine, kill_every_s=4.0)
    assert report.kills >= 1
    assert (report.lost, report.duplicates, report.corrupt, report.wrong_length) == (0, 0, 0, 0), report
