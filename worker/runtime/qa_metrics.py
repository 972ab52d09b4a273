"""Prometheus metrics of the quality gate (``f5_qa_*``), in whichever worker judges takes."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

CHECKS = Counter("f5_qa_checks", "Takes judged, by verdict", ["verdict"])
CER = Histogram("f5_qa_cer", "Character error rate of transcribed takes",
                buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0))
RERENDERS = Counter("f5_qa_rerenders", "Takes sent again with a new seed")
SEGMENTS = Counter("f5_qa_segments", "Segments that reached a final state", ["state"])
REASONS = Counter("f5_qa_reasons", "Why takes failed", ["code"])


def settled(result: Any) -> None:
    """One take judged (``worker.runtime.quality.Settled``)."""
    take = result.record.take(max(t.attempt for t in result.record.attempts)) if result.record.attempts else None
    if take is not None:
        CHECKS.labels("passed" if take.verdict.passed else "failed").inc()
        if take.verdict.cer is not None:
            CER.observe(take.verdict.cer)
        for reason in take.verdict.reasons:
            REASONS.labels(reason.code).inc()
    if result.send is not None:
        RERENDERS.inc()
    if result.final:
        SEGMENTS.labels(result.record.state).inc()
