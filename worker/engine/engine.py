"""The engine: a model built once, turning batches of synthesis requests into waveforms.

Celery-free. ``Engine.build`` loads the preset, checkpoint, vocab and vocoder, applies the precision policy and the
CUDA flags, and compiles; ``warm_up`` covers every bucket shape before the first job; ``synthesize`` chunks each
request's text by upstream's rules, plans passes by frame budget across all requests, samples, vocodes, and stitches
each request's chunks with upstream's cross-fade. A bad request fails alone; the others still get their audio.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from cachetools import LRUCache

from worker.contract import JobParams
from worker.engine import loading, reference, runtime
from worker.engine.config import EngineConfig
from worker.engine.precision import Precision, job_precision, resolve_precision
from worker.engine.presets import ModelPreset, load_preset
from worker.engine.random_weights import write_random_files
from worker.engine.sampler import CFG_EPSILON, Sampler, SamplingRow, SamplingSpec
from worker.engine.types import SynthesisOutput, SynthesisRequest, VoiceInput
from worker.errors import BadInputError, EngineBuildError
from worker.planner import BatchPlan, PlanItem, PlannerConfig, plan_batches
from worker.speech import (
    CROSS_FADE_SECONDS,
    TARGET_RMS,
    chunk_text,
    max_chars_for_reference,
    model_reference_text,
    planned_frames,
)

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    row: SamplingRow
    ref_frames: int
    rms: float
    group: tuple
    seconds: float = 0.0
    wave: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class PreparedRequest:
    """A request after the CPU-side preparation, ready to join sampling passes (typed handoff to the batcher)."""

    request: SynthesisRequest
    chunks: list[_Chunk]
    error: BadInputError | None

    @property
    def frames(self) -> int:
        return sum(chunk.row.frames for chunk in self.chunks)

    def fresh_chunks(self) -> list[_Chunk]:
        """Chunks with no audio yet: a prepared request can be executed again (for example alone, after a failure)."""
        self.chunks = [replace(chunk, wave=None, seconds=0.0) for chunk in self.chunks]
        return self.chunks


@dataclass(frozen=True)
class WarmupReport:
    shapes: int
    graphs: int
    seconds: float


class Engine:
    """One model on one device. Not thread-safe: a worker process owns one engine and calls it from one thread."""

    def __init__(self, *, preset: ModelPreset, model: torch.nn.Module, vocoder: torch.nn.Module,
                 vocab: dict[str, int], device: torch.device, precision: Precision, settings: EngineConfig,
                 compiled: bool) -> None:
        self.preset = preset
        self.model = model
        self.vocoder = vocoder
        self.vocab = vocab
        self.device = device
        self.precision = precision
        self.settings = settings
        self.compiled = compiled
        self.planner: PlannerConfig = settings.planner_config(compiled)
        self.max_chunk_frames = self.planner.frame_buckets[-1]
        forward = None
        if compiled:
            forward = runtime.compile_transformer(model.transformer, device, settings.compile_mode,
                                                  len(self.planner.shapes()))
        self.sampler = Sampler(model, device, forward)
        self._voices: LRUCache = LRUCache(maxsize=settings.voice_cache_size)
        self.pass_observers: list[Callable[[int, int, float], None]] = []  # (rows, padded frames, seconds)

    @property
    def model_name(self) -> str:
        return self.preset.name

    @property
    def sample_rate(self) -> int:
        return self.preset.sample_rate

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def build(cls, settings: EngineConfig) -> Engine:
        device = runtime.select_device(settings.device)
        try:
            precision = resolve_precision(settings.precision, device.type, runtime.capability(device))
            preset = load_preset(settings.model)
        except (ValueError, BadInputError) as exc:
            raise EngineBuildError(str(exc)) from exc
        runtime.configure_backends(device, cudnn_benchmark=settings.cudnn_benchmark,
                                   matmul_precision=settings.matmul_precision)
        vocab_spec = settings.vocab_file or preset.vocab
        vocab_path = loading.resolve_file(vocab_spec, "F5_VOCAB_FILE", settings.hf_cache_dir) if vocab_spec \
            else loading.packaged_vocab()
        ckpt_path, vocoder_dir = cls._weights(preset, settings, vocab_path)
        vocab = loading.load_vocab(vocab_path)
        model = loading.build_model(preset, vocab)
        loading.load_weights(model, loading.read_state_dict(ckpt_path),
                             {"checkpoint": ckpt_path, "vocab": vocab_path, "model": settings.model})
        model = model.to(device).eval()
        vocoder = loading.load_vocoder(vocoder_dir).to(device)
        compiled = settings.compile if settings.compile is not None else device.type == "cuda"
        log.info("engine: model %s (%s) on %s, precision %s, compile %s", preset.name, ckpt_path, device,
                 precision, compiled)
        return cls(preset=preset, model=model, vocoder=vocoder, vocab=vocab, device=device, precision=precision,
                   settings=settings, compiled=compiled)

    @staticmethod
    def _weights(preset: ModelPreset, settings: EngineConfig, vocab_path: Path) -> tuple[Path, Path]:
        """Checkpoint and vocoder folder: from settings, else the preset's defaults, else random files."""
        random_files = None
        if preset.random_weights:
            root = Path(settings.random_cache_dir or Path.home() / ".cache" / "f5-batch" / "random")
            random_files = write_random_files(preset, vocab_path, root)
        ckpt_spec = settings.ckpt_file or preset.ckpt
        if ckpt_spec:
            ckpt = loading.resolve_file(ckpt_spec, "F5_CKPT_FILE", settings.hf_cache_dir)
        elif random_files is not None:
            ckpt = random_files[0]
        else:
            raise EngineBuildError(f"model {settings.model} names no checkpoint: set F5_CKPT_FILE")
        vocoder_spec = settings.vocoder_path or preset.vocoder
        if vocoder_spec:
            return ckpt, loading.resolve_vocoder_folder(vocoder_spec, "F5_VOCODER_PATH", settings.hf_cache_dir)
        if random_files is None:
            raise EngineBuildError(f"model {settings.model} names no vocoder: set F5_VOCODER_PATH")
        return ckpt, random_files[1]

    def warm_up(self) -> WarmupReport:
        """Compile and record every bucket shape now, then run one real request end to end."""
        start = time.perf_counter()
        shapes = self.planner.shapes() if self.compiled else []
        for batch, frames in shapes:
            self.sampler.warm_up_shape(batch, frames, self.precision)
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.5 * self.sample_rate)) / self.sample_rate)
        buffer = io.BytesIO()
        sf.write(buffer, tone.astype(np.float32), self.sample_rate, format="WAV", subtype="PCM_16")
        request = SynthesisRequest("Warm up.", VoiceInput(buffer.getvalue(), "A tone.", preprocess=False),
                                   JobParams(nfe_step=2), seed=0)
        self.synthesize([request])
        graphs = runtime.compiled_graph_count() if self.compiled else 0
        report = WarmupReport(shapes=len(shapes), graphs=graphs, seconds=time.perf_counter() - start)
        log.info("warm-up: %d bucket shapes, %d compiled graphs, %.1f s", report.shapes, report.graphs,
                 report.seconds)
        return report

    # ----------------------------------------------------------------------------------------------- running

    def voice(self, audio: bytes, preprocess: bool) -> reference.PreparedVoice:
        """The prepared reference for a clip, from the per-process cache when this clip was seen before."""
        digest = reference.voice_digest(audio, preprocess)
        cached = self._voices.get(digest)
        if cached is None:
            cached = reference.prepare(audio, preprocess, sample_rate=self.sample_rate, mel_fn=self.model.mel_spec,
                                       device=self.device, max_seconds=self.settings.max_reference_seconds)
            self._voices[digest] = cached
        return cached

    def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutput]:
        """Prepare and execute together: every request's chunks share the planned passes."""
        return self.execute([self.prepare(request) for request in requests])

    def prepare(self, request: SynthesisRequest) -> PreparedRequest:
        """The CPU-side work for one request (reference, chunking, tokens, durations); bad input is kept, not
        raised, so that the request fails alone."""
        try:
            chunks = self._chunks(request)
        except BadInputError as exc:
            return PreparedRequest(request, [], exc)
        return PreparedRequest(request, chunks, None)

    def execute(self, prepared: Sequence[PreparedRequest]) -> list[SynthesisOutput]:
        """Sample every prepared request's chunks in planned passes, vocode, and stitch each request's audio."""
        outputs = [SynthesisOutput(seed=p.request.seed, sample_rate=self.sample_rate, error=p.error)
                   for p in prepared]
        chunks = [chunk for p in prepared for chunk in p.fresh_chunks()]
        owners = [index for index, p in enumerate(prepared) for _ in p.chunks]
        items = [PlanItem(id=k, frames=chunk.row.frames, group=chunk.group) for k, chunk in enumerate(chunks)]
        for plan in plan_batches(items, self.planner):
            self._run_pass(plan, chunks)
        self._collect(chunks, owners, outputs)
        return outputs

    def _tokens(self, text: str) -> list[str]:
        from f5_tts.model.utils import convert_char_to_pinyin

        return convert_char_to_pinyin([text])[0]

    def _check_vocab(self, text: str) -> None:
        """Refuse text whose letters and digits the model cannot read (punctuation alone does not count)."""
        spoken = [s for s in self._tokens(text) if any(char.isalnum() for char in s)]
        known = [s for s in spoken if s in self.vocab]
        if not known:
            raise BadInputError("bad_text", "none of the text's letters or digits is in the model's vocabulary"
                                if spoken else "the text has no letters or digits to speak", "text")
        unknown = sorted({s for s in spoken if s not in self.vocab})
        if unknown:
            log.warning("characters outside the vocab are spoken as spaces: %s", "".join(unknown)[:50])

    def _chunks(self, request: SynthesisRequest) -> list[_Chunk]:
        from f5_tts.model.utils import list_str_to_idx

        params = request.params
        self._check_vocab(request.text)
        voice = self.voice(request.voice.audio, request.voice.preprocess)
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
            chunks.append(_Chunk(row, voice.ref_frames, voice.rms, group))
        return chunks

    def _run_pass(self, plan: BatchPlan, chunks: list[_Chunk]) -> None:
        precision, steps, sway, use_cfg = plan.group
        compiled = self.compiled and precision == self.precision
        rows = [chunks[item.id].row for item in plan.items]
        spec = SamplingSpec(steps, sway, plan.frames if compiled else plan.items[0].frames, precision, use_cfg,
                            compiled)
        start = time.perf_counter()
        try:
            mel = self.sampler.sample(rows, spec)
        except torch.OutOfMemoryError:
            if plan.size == 1:
                raise
            torch.cuda.empty_cache()
            half = plan.size // 2
            log.warning("out of memory at %d rows × %d frames; splitting the pass", plan.size, plan.frames)
            for part in (plan.items[:half], plan.items[half:]):
                self._run_pass(BatchPlan(part, self.planner.bucket_frames(part[0].frames), plan.group), chunks)
            return
        with torch.inference_mode():
            for row_index, item in enumerate(plan.items):
                chunk = chunks[item.id]
                generated = mel[row_index, chunk.ref_frames : chunk.row.frames]
                wave = self.vocoder.decode(generated.transpose(0, 1).unsqueeze(0))[0]
                chunk.wave = wave * (chunk.rms / TARGET_RMS) if chunk.rms < TARGET_RMS else wave
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        total = sum(item.frames for item in plan.items)
        for item in plan.items:
            chunks[item.id].seconds = elapsed * item.frames / total
        log.debug("pass: %d rows × %d frames (fill %.0f%%, %s, nfe %d) in %.3f s", plan.size, spec.padded_frames,
                  100 * plan.fill, precision, steps, elapsed)
        for observer in self.pass_observers:
            observer(plan.size, spec.padded_frames, elapsed)

    def _collect(self, chunks: list[_Chunk], owners: list[int], outputs: list[SynthesisOutput]) -> None:
        by_request: dict[int, list[_Chunk]] = {}
        for chunk, owner in zip(chunks, owners, strict=True):
            by_request.setdefault(owner, []).append(chunk)
        fade = int(CROSS_FADE_SECONDS * self.sample_rate)
        for index, parts in by_request.items():
            out = outputs[index]
            waveform = cross_fade([part.wave for part in parts], fade)
            out.waveform = waveform.float().cpu().numpy()
            out.inference_s = sum(part.seconds for part in parts)
            out.chunks = len(parts)
            out.precision = parts[0].group[0]


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
