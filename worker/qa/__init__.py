"""Quality gate for synthesised takes: a torch-free, Celery-free, Redis-free library.

F5-TTS sometimes skips or invents words, and a diverged or unlucky render can come out silent, clipped or padded with
seconds of nothing. This package judges a take and says what to do about it; the Celery tasks, the QA queue, the CLI
and the review page are built on top of it elsewhere and keep no rules of their own. It is a layer of its own so that
those callers, and the tests, share one definition of "good enough" and can run it anywhere: it needs numpy, jiwer
and num2words, and a recogniser only when intelligibility is checked. It never imports torch (faster-whisper runs on
CTranslate2), the producer or the Celery app.

- :mod:`worker.qa.signal`: cheap checks on the samples, run on every take.
- :mod:`worker.qa.textnorm`: normalisation for comparison and the CER score, written once.
- :mod:`worker.qa.asr`: recognisers behind one Protocol, chosen by a spec (``pocketsphinx``,
  ``faster-whisper:large-v3``).
- :mod:`worker.qa.gate`: the verdict for a take, and the best-of-N decision across takes.
"""

from __future__ import annotations

from worker.qa.gate import Attempt, Decision, QALimits, Take, Verdict, assess, best_attempt, decide, judge
from worker.qa.reasons import Reason
from worker.qa.signal import SignalLimits, SignalReport, check_signal, speech_dbfs
from worker.qa.textnorm import cer, normalize

__all__ = ["Attempt", "Decision", "QALimits", "Reason", "SignalLimits", "SignalReport", "Take", "Verdict", "assess",
           "best_attempt", "cer", "check_signal", "decide", "judge", "normalize", "speech_dbfs"]
