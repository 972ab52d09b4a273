"""torch.compile with bucketed shapes (on CPU here; CUDA graphs need a GPU): warm-up compiles every bucket shape, and
jobs afterwards never trigger a compile, with the same audio as eager mode."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REF_TEXT
from worker.contract import JobParams
from worker.engine.engine import Engine
from worker.engine.types import SynthesisRequest, VoiceInput

pytestmark = pytest.mark.timeout(600)


def test_warm_up_covers_every_shape_and_jobs_never_recompile(engine, engine_settings, ref_wav_bytes):
    from worker.engine import runtime

    compiled = Engine.build(engine_settings.model_copy(update={
        "compile": True, "frame_buckets": (1024, 1536), "max_batch": 2, "frame_budget": 2560}))
    report = compiled.warm_up()
    assert report.shapes == len(compiled.planner.shapes()) == 3  # (1,1024) (2,1024) (1,1536)
    graphs = runtime.compiled_graph_count()
    assert report.graphs == graphs >= 1
    voice = VoiceInput(ref_wav_bytes, REF_TEXT)
    texts = ["Primera frase.", "Una segunda frase algo más larga que la primera, con una coma.",
             "Tercera frase, de cuyo nombre no quiero acordarme."]
    requests = [SynthesisRequest(t, voice, JobParams(nfe_step=4), seed=i) for i, t in enumerate(texts)]
    outputs = compiled.synthesize(requests)
    assert runtime.compiled_graph_count() == graphs, "a job triggered a compile after warm-up"
    for request, output in zip(requests, outputs, strict=True):
        eager = engine.synthesize([request])[0]
        assert np.abs(output.waveform - eager.waveform).max() <= 1e-4
