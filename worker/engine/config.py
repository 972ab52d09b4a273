"""The engine's configuration: one validated object that says how the model is built and run.

The engine takes this object and nothing else (no settings module, no environment). Each field's default is written
here, once. The worker reads the same fields from the environment (``worker.settings.EngineSettings`` adds only the
reading); the names in ``validation_alias`` are those environment variables, and code builds the object by field name
(``EngineConfig(model="tiny-random", device="cpu")``). Pure Python, so clients can import it without torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode

from worker.engine.precision import PRECISION_CHOICES
from worker.planner import DEFAULT_FRAME_BUCKETS
from worker.speech import DEFAULT_MAX_REFERENCE_SECONDS, MIN_REFERENCE_SECONDS


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class EngineConfig(BaseModel):
    """How the model is built and run."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    model: str = Field("F5TTS_v1_Base", validation_alias=_env("F5_MODEL"))
    ckpt_file: str | None = Field(None, validation_alias=_env("F5_CKPT_FILE"))
    vocab_file: str | None = Field(None, validation_alias=_env("F5_VOCAB_FILE"))
    vocoder_path: str | None = Field(None, validation_alias=_env("F5_VOCODER_PATH"))
    hf_cache_dir: str | None = Field(None, validation_alias=_env("F5_HF_CACHE_DIR"))
    random_cache_dir: str | None = Field(
        None, validation_alias=_env("F5_RANDOM_CACHE_DIR"), description="Where random-weight checkpoints are written."
    )
    precision: str = Field("auto", validation_alias=_env("F5_PRECISION"))
    device: str | None = Field(None, validation_alias=_env("F5_DEVICE"), description="cuda, cuda:N or cpu; auto.")
    compile: bool | None = Field(None, validation_alias=_env("ENABLE_TORCH_COMPILE"), description="Default: on CUDA.")
    compile_mode: str = Field("default", validation_alias=_env("F5_COMPILE_MODE"),
                              description="torch.compile mode; reduce-overhead adds CUDA graphs (one per shape).")
    cudnn_benchmark: bool = Field(True, validation_alias=_env("ENABLE_CUDNN_BENCHMARK"))
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        "high", validation_alias=_env("TORCH_MATMUL_PRECISION"))
    frame_budget: int | None = Field(
        None, ge=256, validation_alias=_env("F5_BATCH_FRAMES"),
        description="Rows × frames per pass. Unset: sized from the GPU's free memory (CPU: 32768).")
    max_batch: int = Field(64, ge=1, le=1024, validation_alias=_env("F5_MAX_BATCH"))
    frame_buckets: Annotated[tuple[int, ...], NoDecode] = Field(
        DEFAULT_FRAME_BUCKETS, validation_alias=_env("F5_FRAME_BUCKETS"))
    warmup: bool = Field(True, validation_alias=_env("F5_WARMUP"))
    batch_wait_ms: float = Field(50.0, ge=0, le=10_000, validation_alias=_env("F5_BATCH_WAIT_MS"),
                                 description="Longest wait for companions before a part-full pass starts.")
    cpu_rows_per_pass: int = Field(
        1, ge=1, le=1024, validation_alias=_env("F5_CPU_ROWS_PER_PASS"),
        description="Rows per pass on a CPU. One: the worker's engines run one per core with one torch thread "
                    "each, so rows run side by side across processes (bench/bench_cpu.py, part B: 22.98 audio-s/s "
                    "against 22.87 for prefork at concurrency 2); `f5-batch synth`, a single process, also runs one "
                    "row at a time unless given --batch-size (part A: 1.07x upstream at one row, 1.02x at 8).")
    cpu_engines: int | None = Field(
        None, ge=1, le=256, validation_alias=_env("F5_CPU_ENGINES"),
        description="Engine processes on a machine without GPUs. Default: one per F5_CPU_THREADS cores (all of them; "
                    "one with an explicit F5_DEVICE).")
    cpu_threads: int = Field(1, ge=1, le=256, validation_alias=_env("F5_CPU_THREADS"),
                             description="torch threads of each CPU engine process.")
    interactive_target_ms: float = Field(
        250.0, ge=0, le=60_000, validation_alias=_env("F5_INTERACTIVE_TARGET_MS"),
        description="While interactive (priority 0) work is about, other passes are cut to about this long, so that "
                    "a /tts request waits at most that for the pass in flight. 0: off.")
    voice_cache_size: int = Field(64, ge=1, validation_alias=_env("F5_VOICE_CACHE_SIZE"))
    max_reference_seconds: float = Field(DEFAULT_MAX_REFERENCE_SECONDS, gt=MIN_REFERENCE_SECONDS,
                                         validation_alias=_env("F5_MAX_REFERENCE_SECONDS"))

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISION_CHOICES:
            raise ValueError(f"F5_PRECISION must be one of {', '.join(PRECISION_CHOICES)}, got {value!r}")
        return value

    @field_validator("frame_buckets", mode="before")
    @classmethod
    def _parse_buckets(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
        return value
