"""The engine: a model built once, turning synthesis requests into waveforms, one sampling pass at a time.

Celery-free. A request is *prepared* on the CPU side (reference, upstream's chunking, tokens, durations) into chunks;
chunks of any requests that share a precision, step count, sway and CFG setting can run together in one *pass*
(sample, then vocode, batched); a request is *finished* when all its chunks have audio (upstream's cross-fade, on the
device, then one copy to the host). ``synthesize`` does all three for a list of requests; the worker's scheduler calls
the steps itself so that chunks of many jobs fill each pass.

Precision: on a bf16 or fp16 worker the DiT's weights live in that dtype (``build``). A job with ``use_fp16: false``
runs in fp32 on a full-precision copy of the weights, loaded from the checkpoint the first time such a job comes
(+4 bytes per parameter, 1.35 GB for F5TTS_v1_Base, kept for the process's life) and run eagerly, uncompiled.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch
from cachetools import LRUCache

from worker.contract import JobParams
from worker.engine import build, faults, reference, runtime
from worker.engine.build import LoadedModel
from worker.engine.config import EngineConfig
from worker.engine.precision import Precision, job_precision
from worker.engine.sampler import CFG_EPSILON, Sampler, SamplingRow, SamplingSpec
from worker.engine.types import SynthesisOutput, SynthesisRequest, VoiceInput
from worker.engine.vocoder import decode_rows
from worker.errors import BadInputError, TransientError
from worker.planner import PlanItem, PlannerConfig, plan_batches
from worker.speech import (
    CROSS_FADE_SECONDS,
    TARGET_RMS,
    chunk_text,
    max_chars_for_reference,
    model_reference_text,
    planned_frames,
)

log = logging.getLogger(__name__)

CPU_FRAME_BUDGET = 32_768  # no memory to size passes by on a CPU; this keeps a pass's latency reasonable there


@dataclass
class Chunk:
    """One chunk of one request: a row for the sampler, and what finishing its audio needs."""

    row: SamplingRow
    ref_frames: int
    rms: float
    group: tuple  # (precision, steps, sway, uses CFG): chunks of one group can share a pass
    text: str

    @property
    def frames(self) -> int:
        return self.row.frames


@dataclass
class PreparedRequest:
    """A request after the CPU-side preparation, ready to join sampling passes (typed handoff to the scheduler)."""

    request: SynthesisRequest
    chunks: list[Chunk]
    error: BadInputError | None

    @property
    def frames(self) -> int:
        return sum(chunk.frames for chunk in self.chunks)


@dataclass
class PassResult:
    waves: list[torch.Tensor]  # one waveform per chunk, in order, on the device
    seconds: float
    padded_frames: int
    recompiles: int = 0  # graphs torch.compile built during this pass (0 after a complete warm-up)


@dataclass(frozen=True)
class WarmupReport:
    shapes: int
    graphs: int
    seconds: float
    frame_budget: int
    parameter_bytes: dict[str, int] = field(default_factory=dict)


class Engine:
    """One model on one device. Not thread-safe: one thread runs passes; ``prepare`` may run in another."""

    def __init__(self, loaded: build.LoadedModel, config: EngineConfig, compiled: bool, frame_budget: int) -> None:
        self.loaded = loaded
        self.config = config
        self.preset = loaded.preset
        self.model = loaded.model
        self.vocoder = loaded.vocoder
        self.vocab = loaded.vocab
        self.device = loaded.device
        self.precision: Precision = loaded.precision
        self.compiled = compiled
        rows = config.max_batch if self.device.type != "cpu" else min(config.max_batch, config.cpu_rows_per_pass)
        self.planner = PlannerConfig(frame_budget=frame_budget, max_batch=rows,
                                     frame_buckets=config.frame_buckets)
        self.max_chunk_frames = self.planner.frame_buckets[-1]
        self.cuda_graphs = compiled and self.device.type == "cuda" and runtime.uses_cuda_graphs(config.compile_mode)
        forward = runtime.compile_transformer(self.model.transformer, self.device, config.compile_mode) \
            if compiled else None
        self._samplers: dict[str, Sampler] = {self.precision: Sampler(self.model, self.device, forward)}
        self._voices: LRUCache = LRUCache(maxsize=config.voice_cache_size)
        self._served_graphs: int | None = None

    @property
    def model_name(self) -> str:
        return self.preset.name

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, config: EngineConfig) -> Engine:
        loaded = build.load(config)
        compiled = config.compile if config.compile is not None else loaded.device.type == "cuda"
        missing = runtime.compiler_missing() if compiled else None
        if missing:
            log.warning("torch.compile is off: %s. The engine runs eagerly (correct, slower); install a compiler "
                        "(apt-get install gcc) or set ENABLE_TORCH_COMPILE=0 to silence this.", missing)
            compiled = False
        budget = config.frame_budget or cls._sized_budget(loaded, config)
        source = "F5_BATCH_FRAMES" if config.frame_budget else "sized from free GPU memory" \
            if loaded.device.type == "cuda" else "the CPU default"
        log.info("engine: compile %s, %d frames per pass (%s)", compiled, budget, source)
        return cls(loaded, config, compiled, budget)

    @staticmethod
    def _sized_budget(loaded: LoadedModel, config: EngineConfig) -> int:
        """The pass budget from the GPU's free memory, at the measured cost of a frame-row (CPU: a fixed budget)."""
        if loaded.device.type != "cuda":
            return CPU_FRAME_BUDGET
        longest = max(config.frame_buckets)
        probe = Sampler(loaded.model, loaded.device)
        rows = [SamplingRow(torch.zeros(longest // 2, probe.n_mels, device=loaded.device),
                            torch.zeros(8, dtype=torch.long, device=loaded.device), longest, i, 2.0) for i in range(2)]
        torch.cuda.synchronize(loaded.device)
        torch.cuda.reset_peak_memory_stats(loaded.device)
        base = torch.cuda.memory_allocated(loaded.device)
        probe.sample(rows, SamplingSpec(1, -1.0, longest, loaded.precision, True, compiled=False))
        per_frame = (torch.cuda.max_memory_allocated(loaded.device) - base) / (2 * longest)
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(loaded.device)
        budget = runtime.frame_budget_from_memory(free, per_frame, max_batch=config.max_batch, longest_bucket=longest)
        log.info("engine: %.1f GB free, %.0f KB per frame-row with CFG: %d frames per pass", free / 1e9,
                 per_frame / 1e3, budget)
        return budget

    def parameter_bytes(self) -> dict[str, int]:
        sizes = {"dit": build.parameter_bytes(self.model.transformer), "vocoder": build.parameter_bytes(self.vocoder)}
        if "fp32" in self._samplers and self.precision != "fp32":
            sizes["dit_fp32_copy"] = build.parameter_bytes(self._samplers["fp32"].transformer)
        return sizes

    def _sampler(self, precision: Precision) -> Sampler:
        sampler = self._samplers.get(precision)
        if sampler is None:  # a use_fp16=false job on a half-precision worker: the full-precision copy, once
            log.info("loading a full-precision copy of the weights for use_fp16=false jobs")
            loaded = self.loaded
            model = build.read_model(loaded.preset, loaded.vocab, loaded.files, self.config.model).to(self.device)
            sampler = self._samplers[precision] = Sampler(model, self.device)
        return sampler

    def warm_up(self, buckets: Sequence[int] | None = None,
                on_shape: Callable[[int, int, bool, float], None] | None = None) -> WarmupReport:
        """Compile every path a job can take (CFG on and off; one row and several) and run them at every bucket,
        then one real request end to end. Later compiles are counted as recompiles.

        ``buckets`` (some of the configured frame buckets) warms only those lengths. A worker leaves it unset: it may
        be sent any length. A benchmark that serves a known set of lengths passes them and saves the rest of the
        warm-up; the graphs are the same (their sizes are symbolic), the other buckets' runs are what it skips.
        ``on_shape(rows, frames, use_cfg, seconds)`` is told what each shape took (the first shape of each graph
        includes its compile), so that the caller can tell compiles from runs and estimate the full warm-up."""
        start = time.perf_counter()
        shapes = 0
        sampler = self._samplers[self.precision]
        chosen = self.planner.frame_buckets if buckets is None else tuple(sorted(set(buckets)))
        unknown = sorted(set(chosen) - set(self.planner.frame_buckets))
        if unknown:
            raise ValueError(f"warm_up buckets {unknown} are not among the frame buckets "
                             f"{self.planner.frame_buckets}")
        if self.compiled:
            for bucket in chosen:
                widest = max(1, min(self.planner.max_batch, self.planner.frame_budget // bucket))
                for batch in sorted({1, min(2, widest), widest}):
                    for use_cfg in (True, False):
                        began = time.perf_counter()
                        sampler.warm_up(batch, bucket, self.precision, use_cfg)
                        if on_shape is not None:
                            if self.device.type == "cuda":
                                torch.cuda.synchronize(self.device)
                            on_shape(batch, bucket, use_cfg, time.perf_counter() - began)
                        shapes += 1
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.5 * self.sample_rate)) / self.sample_rate)
        buffer = io.BytesIO()
        sf.write(buffer, tone.astype(np.float32), self.sample_rate, format="WAV", subtype="PCM_16")
        request = SynthesisRequest("Warm up.", VoiceInput(buffer.getvalue(), "A tone.", preprocess=False),
                                   JobParams(nfe_step=2), seed=0)
        self.synthesize([request])
        graphs = runtime.compiled_graph_count() if self.compiled else 0
        self._served_graphs = graphs
        report = WarmupReport(shapes, graphs, time.perf_counter() - start, self.planner.frame_budget,
                              self.parameter_bytes())
        log.info("warm-up: %d shapes, %d compiled graphs, %.1f s; parameters %s", report.shapes, report.graphs,
                 report.seconds, {k: f"{v / 1e6:.1f} MB" for k, v in report.parameter_bytes.items()})
        return report

    # ----------------------------------------------------------------------------------------------- preparing

    def voice(self, audio: bytes, preprocess: bool, sha256: str | None = None) -> reference.PreparedVoice:
        """The prepared reference for a clip, from the per-process cache when this clip was seen before (by its
        digest, when the caller knows it, which saves hashing the clip for every request)."""
        digest = f"{sha256}|{'pre' if preprocess else 'raw'}" if sha256 else reference.voice_digest(audio, preprocess)
        cached = self._voices.get(digest)
        if cached is None:
            cached = reference.prepare(audio, preprocess, sample_rate=self.sample_rate, mel_fn=self.model.mel_spec,
                                       device=self.device, max_seconds=self.config.max_reference_seconds)
            self._voices[digest] = cached
        return cached

    def prepare(self, request: SynthesisRequest) -> PreparedRequest:
        """The CPU-side work for one request; bad input is kept, not raised, so that the request fails alone."""
        try:
            chunks = self._chunks(request)
        except BadInputError as exc:
            return PreparedRequest(request, [], exc)
        return PreparedRequest(request, chunks, None)

    def _tokens(self, text: str) -> list[str]:
        from f5_tts.model.utils import convert_char_to_pinyin

        return convert_char_to_pinyin([text])[0]

    def _check_vocab(self, text: str) -> None:
        """Refuse text whose letters and digits the model cannot read (punctuation alone does not count)."""
        # each distinct symbol once: a sentence has a few dozen, among hundreds of symbols
        spoken = {s for s in set(self._tokens(text)) if any(char.isalnum() for char in s)}
        if not spoken & self.vocab.keys():
            raise BadInputError("bad_text", "none of the text's letters or digits is in the model's vocabulary"
                                if spoken else "the text has no letters or digits to speak", "text")
        unknown = sorted(spoken - self.vocab.keys())
        if unknown:
            log.warning("characters outside the vocab are spoken as spaces: %s", "".join(unknown)[:50])

    def _chunks(self, request: SynthesisRequest) -> list[Chunk]:
        from f5_tts.model.utils import list_str_to_idx

        params = request.params
        self._check_vocab(request.text)
        if request.voice.audio is None:
            raise BadInputError("bad_reference", "the request carries no reference audio", "voice.ref_audio")
        voice = self.voice(request.voice.audio, request.voice.preprocess, request.voice.sha256)
        ref_text = model_reference_text(request.voice.ref_text)
        pieces = chunk_text(request.text, max_chars_for_reference(request.voice.ref_text, voice.seconds, params.speed))
        if not pieces:
            raise BadInputError("bad_text", "the text has nothing to speak", "text")
        precision = job_precision(self.precision, params.use_fp16)
        group = (precision, params.nfe_step, params.sway_sampling_coef, params.cfg_strength >= CFG_EPSILON)
        chunks = []
        for order, piece in enumerate(pieces):
            symbols = self._tokens(ref_text + piece)
            frames = max(planned_frames(voice.ref_frames, ref_text, piece, params.speed),
                         max(len(symbols), voice.mel.shape[0]) + 1)
            if frames > self.max_chunk_frames:
                limit = self.max_chunk_frames * self.preset.hop_length / self.sample_rate
                raise BadInputError(
                    "bad_text", f"a {len(piece)}-character stretch without punctuation would need "
                    f"{frames * self.preset.hop_length / self.sample_rate:.0f} s of audio in one piece (at most "
                    f"{limit:.0f} s); split long sentences (the producer does) or add punctuation", "text")
            tokens = list_str_to_idx([symbols], self.vocab)[0].to(self.device)
            row = SamplingRow(voice.mel, tokens, frames, (request.seed + order) % 2**63, params.cfg_strength)
            chunks.append(Chunk(row, voice.ref_frames, voice.rms, group, piece))
        return chunks

    # ----------------------------------------------------------------------------------------------- passes

    def run_pass(self, chunks: Sequence[Chunk], should_stop: Callable[[], bool] | None = None) -> PassResult:
        """Sample and vocode chunks of one group together. Out of memory anywhere in the pass splits it in halves
        (a single chunk out of memory is a transient error); a lost device raises ``DeviceLostError``."""
        start = time.perf_counter()
        try:
            faults.before_pass(chunk.text for chunk in chunks)
            waves, padded = self._run_rows(list(chunks), should_stop)
        except RuntimeError as exc:
            if runtime.is_fatal_device_error(exc):
                raise runtime.DeviceLostError(str(exc)) from exc
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return PassResult(waves, time.perf_counter() - start, padded, self._new_graphs(chunks[0].group[0]))

    def _run_rows(self, chunks: list[Chunk], should_stop) -> tuple[list[torch.Tensor], int]:
        try:
            return self._sample_and_vocode(chunks, should_stop)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            longest = max(chunk.frames for chunk in chunks)
            if len(chunks) == 1:
                raise TransientError(f"out of memory for one chunk of {longest} frames; the job will be retried "
                                     "(lower F5_BATCH_FRAMES if this repeats)") from None
            log.warning("out of memory at %d rows × %d frames; splitting the pass", len(chunks), longest)
            half = len(chunks) // 2
            first, padded = self._run_rows(chunks[:half], should_stop)
            second, _ = self._run_rows(chunks[half:], should_stop)
            return first + second, padded

    def _sample_and_vocode(self, chunks: list[Chunk], should_stop) -> tuple[list[torch.Tensor], int]:
        precision, steps, sway, use_cfg = chunks[0].group
        sampler = self._sampler(precision)
        compiled = self.compiled and precision == self.precision
        longest = max(chunk.frames for chunk in chunks)
        padded = self.planner.bucket_frames(longest) if self.cuda_graphs else longest
        spec = SamplingSpec(steps, sway, padded, precision, use_cfg, compiled)
        mel = sampler.sample([chunk.row for chunk in chunks], spec, should_stop)
        generated = [mel[i, chunk.ref_frames : chunk.frames] for i, chunk in enumerate(chunks)]
        waves = decode_rows(self.vocoder, generated)
        return [wave * (chunk.rms / TARGET_RMS) if chunk.rms < TARGET_RMS else wave
                for wave, chunk in zip(waves, chunks, strict=True)], padded

    def _new_graphs(self, precision: Precision) -> int:
        if not self.compiled or self._served_graphs is None or precision != self.precision:
            return 0
        graphs = runtime.compiled_graph_count()
        new, self._served_graphs = graphs - self._served_graphs, graphs
        if new:
            log.warning("torch.compile built %d new graph(s) while serving: warm-up did not cover this path", new)
        return new

    def finish(self, prepared: PreparedRequest, waves: Sequence[torch.Tensor], seconds: float, *,
               pcm16: bool = False) -> SynthesisOutput:
        """A request's audio from its chunks' waveforms: upstream's cross-fade on the device, then to the host.
        ``pcm16``: converted to 16-bit samples on the device first (exactly as ``worker.audio.to_pcm16``), so that
        half the bytes cross to the host and nothing is left to convert there."""
        out = SynthesisOutput(seed=prepared.request.seed, sample_rate=self.sample_rate, error=prepared.error)
        if prepared.error is None:
            fade = int(CROSS_FADE_SECONDS * self.sample_rate)
            audio = cross_fade(list(waves), fade).float()
            out.waveform = (pcm16_samples(audio) if pcm16 else audio).cpu().numpy()
            out.inference_s = seconds
            out.chunks = len(waves)
            out.precision = prepared.chunks[0].group[0]
        return out

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutput]:
        """Prepare, plan, run and finish together: every request's chunks share the planned passes."""
        prepared = [self.prepare(request) for request in requests]
        chunks = {(i, k): chunk for i, p in enumerate(prepared) for k, chunk in enumerate(p.chunks)}
        waves: dict[tuple[int, int], torch.Tensor] = {}
        seconds = [0.0] * len(prepared)
        items = [PlanItem(key, chunk.frames, chunk.group) for key, chunk in chunks.items()]
        for plan in plan_batches(items, self.planner):
            keys = [item.id for item in plan.items]
            result = self.run_pass([chunks[key] for key in keys])
            total = sum(chunks[key].frames for key in keys)
            for key, wave in zip(keys, result.waves, strict=True):
                waves[key] = wave
                seconds[key[0]] += result.seconds * chunks[key].frames / total
        return [self.finish(p, [waves[(i, k)] for k in range(len(p.chunks))], seconds[i])
                for i, p in enumerate(prepared)]


def pcm16_samples(audio: torch.Tensor) -> torch.Tensor:
    """float32 audio as 16-bit samples, as libsndfile writes PCM_16: clipped to [-1, 1], times 32768, floored, clamped
    (exact in float32: the scale is a power of two)."""
    return torch.clamp(audio, -1.0, 1.0).mul_(32768.0).floor_().clamp_max_(32767.0).to(torch.int16)


def cross_fade(waves: Sequence[torch.Tensor], samples: int) -> torch.Tensor:
    """Join chunk waveforms with upstream's linear cross-fade of ``samples`` samples (0.15 s)."""
    out = waves[0]
    for following in waves[1:]:
        overlap = min(samples, out.shape[0], following.shape[0])
        if overlap <= 0:
            out = torch.cat([out, following])
            continue
        fade_out = torch.linspace(1, 0, overlap, device=out.device)
        fade_in = torch.linspace(0, 1, overlap, device=out.device)
        faded = out[-overlap:] * fade_out + following[:overlap] * fade_in
        out = torch.cat([out[:-overlap], faded, following[overlap:]])
    return out
