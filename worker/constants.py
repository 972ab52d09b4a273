"""Names that other systems depend on: task names, queues, Redis keys, audio format.

They live in one place because backends in other languages hard-code them. Changing one is a breaking change.
"""

from __future__ import annotations

from typing import Final

TASK_SYNTHESIZE = "f5tts.synthesize"
TASK_SYNTHESIZE_BATCH = "f5tts.synthesize_batch"
TASK_ASSEMBLE_CHAPTER = "f5tts.assemble_chapter"
TASK_QA_CHECK = "f5tts.qa_check"

DEFAULT_QUEUE = "f5tts"
DEFAULT_CPU_QUEUE = "f5tts-cpu"
DEFAULT_QA_QUEUE = "f5tts-qa"

CONTRACT_VERSION: Final = 1

# Message header a producer sets to the publish time (seconds since the epoch): the worker reports queue waits from it.
ENQUEUED_AT_HEADER = "f5_enqueued_at"

# Redis hash where jobs that failed for good are recorded (dead letters), keyed by job id; and their times.
FAILED_JOBS_KEY = "f5tts:failed"
FAILED_JOBS_INDEX_KEY = "f5tts:failed:at"
# Per job: how many of its runs ended with the engine process holding it dead (see worker.runtime.deliveries).
LOST_RUNS_KEY_PREFIX = "f5tts:lost:"
# Per job: it overran its time limit while sharing passes, so its next run is alone (see worker.runtime.deliveries).
RUN_ALONE_KEY_PREFIX = "f5tts:alone:"

# Redis priorities (0 is served first). Interactive requests (the gateway's /tts) go first; books wait behind them.
PRIORITY_INTERACTIVE = 0
PRIORITY_JOBS = 3
PRIORITY_BOOKS = 6

# Object keys under this prefix are reference clips: no job may write there.
VOICES_PREFIX = "voices/"

# Audio produced by F5-TTS with the vocos vocoder: 24 kHz mono, 256-sample mel hop.
SAMPLE_RATE = 24_000
HOP_LENGTH = 256
N_MELS = 100

# Object metadata names (S3 lower-cases user metadata keys, so these are lower-case).
META_JOB_ID = "f5-job-id"
META_JOB_HASH = "f5-job-hash"
META_TEXT_SHA256 = "f5-text-sha256"
META_SEED = "f5-seed"
META_MODEL = "f5-model"
META_PARAMS_HASH = "f5-params-hash"
META_SHA256 = "f5-sha256"
META_DURATION = "f5-duration-s"
META_PRECISION = "f5-precision"
META_REF_SHA256 = "f5-ref-sha256"
