# f5-batch worker image: CUDA-enabled torch, f5-tts, and this project.
# The PyPI torch 2.14.1 wheel bundles its CUDA 13 runtime (NVIDIA driver >= 580 on the host). For another CUDA, build
# with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (and a matching TORCH_VERSION).
FROM python:3.11-slim

ARG TORCH_VERSION=2.14.1
ARG TORCHAUDIO_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/hf \
    F5_RANDOM_CACHE_DIR=/models/random

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# torch first and pinned, so that installing f5-tts does not pull a different torch.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producer ./producer
COPY schema ./schema
RUN pip install ".[worker,flower]"

RUN useradd --create-home --uid 1000 f5 && mkdir -p /models /data && chown -R f5 /models /data
USER f5

# One worker per GPU box: pool process i is pinned to GPU i; concurrency defaults to the GPU count.
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]
