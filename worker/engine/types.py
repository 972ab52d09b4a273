"""The typed handoffs between the worker and the engine. Torch-free, so the task layer can build them without
importing the engine (which is imported only inside ``worker_process_init``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.contract import JobParams
from worker.errors import BadInputError


@dataclass(frozen=True)
class VoiceInput:
    audio: bytes | None  # the clip as stored (any format libsndfile reads); None once the engine holds it by digest
    ref_text: str
    preprocess: bool = True
    sha256: str | None = None  # the clip's digest: an engine process keeps prepared voices by it

    def without_audio(self) -> VoiceInput:
        """The same voice, named by its digest only: what crosses the pipe once the engine process holds the clip."""
        return VoiceInput(None, self.ref_text, self.preprocess, self.sha256)


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice: VoiceInput
    params: JobParams
    seed: int


@dataclass
class SynthesisOutput:
    """A request's audio (float32, mono) or its error, and what it cost."""

    seed: int
    sample_rate: int
    precision: str = ""
    waveform: np.ndarray | None = None
    inference_s: float = 0.0
    wait_s: float = 0.0  # in the engine process, from joining the pass pool until its first pass started
    prepare_s: float = 0.0  # in the engine process, from arrival until prepared (reference, chunks, tokens)
    finish_s: float = 0.0  # cross-fade and the copy to the host
    received_at: float | None = None  # when the worker process received it (time.monotonic), set on arrival
    sent_at: float | None = None  # when the engine process sent it (the same clock: monotonic is system-wide)
    submitted_at: float | None = None  # when the engine process received its request (idem)
    chunks: int = 0
    error: BadInputError | None = None
    #: Across the engine pipe: the 16-bit samples' size, sent after the message as a raw payload (then ``waveform``
    #: is None in the message); on arrival they are read into ``wav``, a WAV file's buffer past its header, and
    #: ``waveform`` views them there (``worker.runtime.pipes``).
    pcm_bytes: int = 0
    wav: bytearray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.waveform is None else self.waveform.shape[0] / self.sample_rate


class SynthesisEngine(Protocol):
    """What the task layer needs from an engine."""

    model_name: str
    precision: str

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutput]: ...
