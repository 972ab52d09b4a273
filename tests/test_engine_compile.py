"""torch.compile on CPU (inductor; CUDA graphs need a GPU): warm-up builds every path a job can take, then a varied
mix of jobs never compiles again, and compiled audio equals eager audio. Without a C compiler the engine says so in
one line and runs eagerly."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from tests.conftest import REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import Engine
from worker.engine.types import SynthesisRequest, VoiceInput

pytestmark = pytest.mark.timeout(900)

BUCKETS = (512, 1024, 1536)


@pytest.fixture(scope="module")
def compiled(engine_settings):
    engine = Engine.build(engine_settings.model_copy(update={
        "compile": True, "frame_buckets": BUCKETS, "max_batch": 4, "frame_budget": 4096}))
    report = engine.warm_up()
    return engine, report


def test_warm_up_builds_every_path_once(compiled):
    from worker.engine import runtime

    engine, report = compiled
    assert engine.compiled and report.shapes >= 2 * len(BUCKETS)
    # CFG on and off, each for a lone row and for several rows: symbolic sizes, so no graph per shape
    assert 2 <= report.graphs == runtime.compiled_graph_count() <= 4


def test_a_varied_mix_after_warm_up_never_recompiles(compiled, engine, ref_wav_bytes):
    from worker.engine import runtime

    engine_c, _ = compiled
    graphs = runtime.compiled_graph_count()
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    texts = ["Primera frase.", "Una segunda frase algo más larga que la primera, con una coma.",
             "Tercera frase, de cuyo nombre no quiero acordarme, y otra más para alargarla bastante."]
    mix = [JobParams(nfe_step=4), JobParams(nfe_step=2, cfg_strength=0.0), JobParams(nfe_step=8, use_fp16=False),
           JobParams(nfe_step=3, speed=1.5), JobParams(nfe_step=4, cfg_strength=0.0, sway_sampling_coef=0.5)]
    requests = [SynthesisRequest(t, voice, params, seed=i) for i, (t, params) in
                enumerate((text, params) for params in mix for text in texts)]
    outputs = engine_c.synthesize(requests)  # many rows per pass, CFG on and off, four step counts
    singles = [engine_c.synthesize([r])[0] for r in requests[:4]]  # lone rows
    chunk = engine_c.prepare(requests[0]).chunks[0]
    for bucket in BUCKETS:  # a lone row exactly at a bucket length, with and without CFG
        at_bucket = dataclasses.replace(chunk, row=dataclasses.replace(chunk.row, frames=bucket))
        for group in (chunk.group, (*chunk.group[:3], False)):
            assert engine_c.run_pass([dataclasses.replace(at_bucket, group=group)]).recompiles == 0
    assert runtime.compiled_graph_count() == graphs, "a job compiled a new graph after warm-up"
    assert all(output.ok for output in singles)
    for request, output in zip(requests, outputs, strict=True):
        eager = engine.synthesize([request])[0]
        assert np.abs(output.waveform - eager.waveform).max() <= 1e-4


def test_without_a_c_compiler_the_engine_says_so_and_runs_eagerly(engine_settings, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or clang
    with caplog.at_level(logging.WARNING, logger="worker.engine.engine"):
        engine = Engine.build(engine_settings.model_copy(update={"compile": True}))
    assert not engine.compiled
    lines = [r.getMessage() for r in caplog.records if "torch.compile is off" in r.getMessage()]
    assert len(lines) == 1 and "no C compiler" in lines[0] and "\n" not in lines[0]
