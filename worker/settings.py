"""Settings for every part of f5-batch, read from the environment (and a ``.env`` file) with pydantic-settings.

One class per concern; each default is written once, here. Settings are built at the edges (the Celery app, the CLI)
and passed down. Variable names follow the seed project's (``BROKER_URL``, ``F5_MODEL``, ``ENABLE_TORCH_COMPILE``...);
the README's configuration table lists them all.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.constants import DEFAULT_QUEUE
from worker.engine.config import EngineConfig


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class _Section(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, frozen=True)


class BrokerSettings(_Section):
    """Where jobs and results travel, and the Celery delivery guarantees that depend on timing."""

    broker_url: str = Field("redis://localhost:6379/0", validation_alias=_env("BROKER_URL", "CELERY_BROKER_URL"),
                            description="redis://, rediss:// or sentinel://host:26379;sentinel://host2:26379/0.")
    result_backend: str | None = Field(
        None, validation_alias=_env("RESULT_BACKEND", "CELERY_RESULT_BACKEND"), description="Defaults to BROKER_URL."
    )
    sentinel_master: str | None = Field(None, validation_alias=_env("F5_SENTINEL_MASTER"),
                                        description="The master's name, for sentinel:// URLs.")
    queue: str = Field(DEFAULT_QUEUE, validation_alias=_env("F5_QUEUE"))
    role: Literal["synthesis", "assembler", "qa"] = Field(
        "synthesis", validation_alias=_env("F5_WORKER_ROLE"),
        description="assembler: a CPU worker for -Q f5tts-cpu that builds no engine; qa: checks takes (-Q f5tts-qa).")
    # A job running longer than this is killed (hard) / interrupted (soft). Both must stay below the visibility timeout,
    # or Redis hands a still-running job to a second worker.
    task_soft_time_limit: int = Field(1500, ge=1, validation_alias=_env("TASK_SOFT_TIME_LIMIT"))
    task_time_limit: int = Field(1800, ge=1, validation_alias=_env("TASK_TIME_LIMIT"))
    visibility_timeout: int = Field(3600, ge=1, validation_alias=_env("VISIBILITY_TIMEOUT"))
    broker_poll_ms: int = Field(
        50, ge=1, le=1000, validation_alias=_env("F5_BROKER_POLL_MS"),
        description="How often an idle worker asks Redis for work (see worker.broker.fetch); the most a job waits.")
    renew_s: float = Field(
        30.0, gt=0, le=3600, validation_alias=_env("F5_BROKER_RENEW_S"),
        description="How often a worker renews the visibility of the messages it holds (worker.broker.visibility); "
                    "a held message not renewed for three times this long belongs to a dead worker.")
    result_expires: int = Field(7 * 24 * 3600, ge=60, validation_alias=_env("RESULT_EXPIRES"))
    max_retries: int = Field(20, ge=0, validation_alias=_env("TASK_MAX_RETRIES"))
    retry_backoff_max: int = Field(120, ge=1, validation_alias=_env("RETRY_BACKOFF_MAX"))
    # How long the engine processes may take to build and warm up before the worker gives up and exits.
    proc_alive_timeout: float = Field(900.0, ge=4, validation_alias=_env("WORKER_PROC_ALIVE_TIMEOUT"))
    max_lost_runs: int = Field(3, ge=1, validation_alias=_env("F5_MAX_LOST_RUNS"),
                               description="A job whose process died this many times is dead-lettered.")
    dead_letter_ttl: int = Field(30 * 24 * 3600, ge=3600, validation_alias=_env("F5_DEAD_LETTER_TTL"),
                                 description="Seconds a dead letter is kept.")

    @property
    def resolved_result_backend(self) -> str:
        return self.result_backend or self.broker_url


class StorageSettings(_Section):
    """Where audio goes: ``s3://bucket/prefix`` or ``file:///abs/path``."""

    storage_url: str = Field("file://./output", validation_alias=_env("STORAGE_URL"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"))
    s3_region: str | None = Field(None, validation_alias=_env("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "path", validation_alias=_env("S3_ADDRESSING_STYLE"))
    s3_multipart_threshold_mb: int = Field(16, ge=5, validation_alias=_env("S3_MULTIPART_THRESHOLD_MB"))
    s3_connect_timeout: float = Field(5.0, gt=0, validation_alias=_env("S3_CONNECT_TIMEOUT"))
    s3_read_timeout: float = Field(30.0, gt=0, validation_alias=_env("S3_READ_TIMEOUT"))
    voices_dir: str | None = Field(
        None, validation_alias=_env("F5_VOICES_DIR"), description="Local folder searched for voice keys before storage."
    )
    max_reference_bytes: int = Field(64 * 1024 * 1024, ge=1024, validation_alias=_env("F5_MAX_REFERENCE_BYTES"),
                                     description="Larger reference objects are refused before they are read.")


class EngineSettings(_Section, EngineConfig):
    """How the model is built and run: the engine's own config (``worker.engine.config``), read from the environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, frozen=True)


class MetricsSettings(_Section):
    port: int | None = Field(
        None, validation_alias=_env("F5_METRICS_PORT"), description="Prometheus port; off if unset.")
    addr: str = Field("127.0.0.1", validation_alias=_env("F5_METRICS_ADDR"),
                      description="Address the metrics server binds (0.0.0.0 in containers).")


class FlowerSettings(_Section):
    basic_auth: SecretStr | None = Field(None, validation_alias=_env("FLOWER_BASIC_AUTH"))


class GatewaySettings(_Section):
    """The HTTP front (``f5-batch serve``). Tokens come only from the environment."""

    tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), validation_alias=_env("F5_GATEWAY_TOKENS"), description="Comma-separated bearer tokens.")
    open: bool = Field(False, validation_alias=_env("F5_GATEWAY_OPEN"),
                       description="Serve without tokens (refused unless set: the gateway starts closed).")
    default_voice: str | None = Field(None, validation_alias=_env("F5_DEFAULT_VOICE"),
                                      description="Voice for /tts requests that name none.")
    tts_timeout_s: float = Field(60.0, gt=0, le=3600, validation_alias=_env("F5_GATEWAY_TTS_TIMEOUT"))
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias=_env("F5_GATEWAY_MAX_BODY_BYTES"))
    max_queued: int = Field(10_000, ge=1, validation_alias=_env("F5_GATEWAY_MAX_QUEUED"),
                            description="Above this many waiting messages, new jobs get 503 and Retry-After.")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("F5_GATEWAY_CORS_ORIGINS"), description="Off unless set (comma-separated).")
    audio_redirect: bool = Field(False, validation_alias=_env("F5_GATEWAY_AUDIO_REDIRECT"),
                                 description="Redirect audio downloads to presigned S3 URLs instead of streaming.")
    prefix: str = Field("books", validation_alias=_env("F5_GATEWAY_BOOK_PREFIX"),
                        description="Key prefix of the books /v1/books reports on.")
    key_prefix: str = Field("api/", min_length=1, validation_alias=_env("F5_GATEWAY_KEY_PREFIX"),
                            description="Where a job sent through the gateway may name its output.key: gateway "
                                        "clients never write a book's keys, or any key outside this namespace.")
    public_s3_endpoint: str | None = Field(
        None, validation_alias=_env("F5_GATEWAY_PUBLIC_S3_ENDPOINT"),
        description="The S3 endpoint as clients reach it, for presigned audio redirects (default: S3_ENDPOINT_URL).")
    rate_per_s: float = Field(20.0, ge=0, validation_alias=_env("F5_GATEWAY_RATE"),
                              description="Requests per second each token may make on average (0: no limit).")
    rate_burst: int = Field(100, ge=1, validation_alias=_env("F5_GATEWAY_BURST"),
                            description="Requests a token may make at once above its rate.")

    @field_validator("tokens", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class QASettings(_Section):
    """The quality gate (``worker.qa``): signal checks on every take, and optionally an ASR that re-transcribes it."""

    mode: Literal["off", "signal", "asr"] = Field(
        "signal", validation_alias=_env("F5_QA_MODE"),
        description="The gate books get unless enqueue says otherwise: signal checks (cheap, in the synthesis "
                    "worker), asr (also a recogniser on the QA queue), or off.")
    asr: str | None = Field(
        None, validation_alias=_env("F5_QA_ASR"),
        description="pocketsphinx (English, ships its model), or faster-whisper:MODEL (a size such as large-v3, a "
                    "hub id, or a local CTranslate2 folder). Unset: signal checks only.")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", validation_alias=_env("F5_QA_DEVICE"),
                                                   description="cpu, cuda or auto (ASR).")
    compute_type: str = Field("default", validation_alias=_env("F5_QA_COMPUTE_TYPE"),
                              description="CTranslate2 compute type for faster-whisper (int8, float16, …).")
    cpu_threads: int = Field(0, ge=0, validation_alias=_env("F5_QA_CPU_THREADS"), description="0: the library's.")
    download: bool = Field(False, validation_alias=_env("F5_QA_DOWNLOAD"),
                           description="Allow faster-whisper to download a model from the hub (off: local only).")
    max_cer: float = Field(0.3, ge=0, le=1, validation_alias=_env("F5_QA_MAX_CER"),
                           description="A take whose character error rate is above this fails.")
    max_attempts: int = Field(3, ge=1, le=16, validation_alias=_env("F5_QA_MAX_ATTEMPTS"),
                              description="Takes a failing segment gets before it is marked needs_review.")
    queue: str = Field("f5tts-qa", validation_alias=_env("F5_QA_QUEUE"))
    batch_size: int = Field(16, ge=1, le=256, validation_alias=_env("F5_QA_BATCH"),
                            description="Segments transcribed together.")


class Settings(BaseSettings):
    """All settings, one section per concern."""

    model_config = SettingsConfigDict(frozen=True)

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    qa: QASettings = Field(default_factory=QASettings)


def load_settings() -> Settings:
    return Settings()
