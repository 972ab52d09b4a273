"""The gate: one verdict per take from its signal report and (optionally) its transcript, and the best-of-N rule that
decides, from the takes recorded so far, whether a segment is done, needs another take, or needs a person.

Everything here is pure: no audio I/O, no recogniser, no broker. :func:`assess` is the one convenience that runs the
checks (signal on every take, one recogniser batch for the takes worth hearing); the decision helpers take recorded
attempts and return what to do, so the tasks that store takes and send re-renders stay thin and testable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from worker.contract import retake_seed
from worker.qa.asr.base import Clip, Recognizer
from worker.qa.reasons import Reason
from worker.qa.signal import SignalLimits, SignalReport, check_signal
from worker.qa.textnorm import score

__all__ = ["Attempt", "Decision", "QALimits", "Take", "Verdict", "assess", "best_attempt", "decide", "judge",
           "rank_key", "retake_seed"]

log = logging.getLogger(__name__)

# Signal failures that leave nothing for a recogniser to hear: their takes are not transcribed.
_SILENT = frozenset({"empty", "non_finite", "all_zero", "no_speech"})


class QALimits(BaseModel):
    """When a take passes, and how many takes a segment gets.

    ``max_cer`` 0.3: the limit has to sit above what the weakest supported recogniser makes of good speech and well
    below what it makes of wrong speech. pocketsphinx, the zero-download default, reaches CER 0.06 on F5-TTS's own
    English reference clip and 0.15-0.35 on other clean human clips, while the same clip scored against another
    sentence measures 0.6-0.8, and nothing heard is 1.0. A take that skips a third of its text lands at about 0.3, so
    the default catches skipped clauses and hallucinated sentences, not single words. With faster-whisper (CER near
    0.02-0.05 on clean speech) lower it to 0.1-0.15 to catch word-level skips too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_cer: float = Field(default=0.3, ge=0, le=1)
    max_attempts: int = Field(default=3, ge=1, le=20)  # takes per segment, the first render included
    signal: SignalLimits = Field(default_factory=SignalLimits)


class Verdict(BaseModel):
    """One take, judged. ``score`` orders takes (higher is better): 2 for passing the signal checks, plus
    1 - min(CER, 1) when it was transcribed, so any signal-clean take outranks any broken one, then lower CER wins."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    score: float
    cer: float | None = None  # None: not transcribed (no recogniser, an unsupported language, nothing to hear)
    transcript: str | None = None  # the recogniser's words, as it wrote them
    recognizer: str | None = None
    missing_words: tuple[str, ...] = ()  # normalised words of the text that were not heard (skips)
    extra_words: tuple[str, ...] = ()  # normalised words heard that are not in the text (hallucinations)
    reasons: tuple[Reason, ...] = ()
    signal: SignalReport


def judge(signal: SignalReport, text: str, language: str, transcript: str | None = None,
          limits: QALimits | None = None, recognizer: str | None = None) -> Verdict:
    """Combine a take's signal report with its transcript (None: intelligibility was not checked)."""
    limits = limits or QALimits()
    reasons = list(signal.reasons)
    result: dict[str, Any] = {}
    intelligibility = 0.0
    if transcript is not None:
        scored = score(text, transcript, language)
        intelligibility = 1.0 - min(scored.cer, 1.0)
        result.update(cer=scored.cer, missing_words=scored.missing_words, extra_words=scored.extra_words)
        if not scored.hypothesis and scored.reference:
            reasons.append(Reason(code="no_transcript", message="the recogniser heard no words"))
        elif scored.cer > limits.max_cer:
            reasons.append(Reason(code="high_cer", message=(
                f"CER {scored.cer:.2f} (limit {limits.max_cer:g}): heard {scored.hypothesis[:120]!r}")))
    value = (2.0 if signal.passed else 0.0) + intelligibility
    return Verdict(passed=not reasons, score=value, transcript=transcript, recognizer=recognizer,
                   reasons=tuple(reasons), signal=signal, **result)


@dataclass(frozen=True)
class Take:
    """A take to assess: its audio, the text it should say, and the voice's speech level (None: not compared)."""

    samples: npt.NDArray[np.float32]
    rate: int
    text: str
    language: str
    voice_dbfs: float | None = None


def assess(takes: Sequence[Take], recognizer: Recognizer | None = None,
           limits: QALimits | None = None) -> list[Verdict]:
    """Signal-check every take and transcribe, in one recogniser call, those that have something to hear and a
    language the recogniser knows. Without a recogniser, verdicts rest on the signal checks alone."""
    limits = limits or QALimits()
    reports = [check_signal(t.samples, t.rate, limits.signal, t.voice_dbfs) for t in takes]
    heard: list[int] = []
    if recognizer is not None:
        heard = [i for i, (t, r) in enumerate(zip(takes, reports, strict=True))
                 if not any(x.code in _SILENT for x in r.reasons) and recognizer.supports(t.language)]
    transcripts: dict[int, str] = {}
    if heard and recognizer is not None:
        texts = recognizer.transcribe([Clip(np.asarray(takes[i].samples, dtype=np.float32), takes[i].rate,
                                            takes[i].language) for i in heard])
        transcripts = dict(zip(heard, texts, strict=True))
    name = recognizer.name if recognizer is not None else None
    verdicts = []
    for i, (take, report) in enumerate(zip(takes, reports, strict=True)):
        silent = recognizer is not None and i not in transcripts and any(x.code in _SILENT for x in report.reasons)
        transcript = transcripts.get(i, "" if silent else None)  # nothing to hear counts as nothing heard
        verdicts.append(judge(report, take.text, take.language, transcript, limits,
                              name if transcript is not None else None))
    log.debug("assessed %d takes, %d transcribed, %d passed", len(takes), len(transcripts),
              sum(v.passed for v in verdicts))
    return verdicts


class Attempt(BaseModel):
    """One recorded take of a segment."""

    model_config = ConfigDict(frozen=True)

    attempt: int = Field(ge=1)  # 1 is the first render
    seed: int = Field(ge=0)
    verdict: Verdict


class Decision(BaseModel):
    """What to do with a segment after its latest take."""

    model_config = ConfigDict(frozen=True)

    action: Literal["passed", "rerender", "needs_review"]
    best: Attempt | None  # the take to keep (None only before any take exists)
    next_attempt: int | None = None  # with "rerender": the attempt number to render next
    next_seed: int | None = None  # with "rerender": its seed, from retake_seed(first seed, next_attempt)


def rank_key(attempt: Attempt) -> tuple[float, int]:
    """Sort key, best first: higher score, then the earlier take (a tie keeps what was rendered first)."""
    return (-attempt.verdict.score, attempt.attempt)


def best_attempt(attempts: Sequence[Attempt]) -> Attempt | None:
    """The take to keep: a passing take if there is one, else the best ranked (signal-clean, then lowest CER)."""
    passing = [a for a in attempts if a.verdict.passed]
    pool = passing or list(attempts)
    return min(pool, key=rank_key) if pool else None


def decide(attempts: Sequence[Attempt], max_attempts: int) -> Decision:
    """``passed`` as soon as a take passes; ``rerender`` while takes remain; then ``needs_review``, keeping the best.

    With no attempts yet the answer is to render attempt 1 (seed unknown here: the job's own).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    best = best_attempt(attempts)
    if best is None:
        return Decision(action="rerender", best=None, next_attempt=1)
    if best.verdict.passed:
        return Decision(action="passed", best=best)
    done = {a.attempt for a in attempts}
    if len(done) < max_attempts:
        following = max(done) + 1
        first = min(attempts, key=lambda a: a.attempt)
        seed = retake_seed(first.seed, following) if first.attempt == 1 else None
        return Decision(action="rerender", best=best, next_attempt=following, next_seed=seed)
    return Decision(action="needs_review", best=best)
