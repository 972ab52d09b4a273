# f5-batch image: CUDA-enabled torch, f5-tts, and this project (the worker, the gateway, Flower and the producer).
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
    F5_RANDOM_CACHE_DIR=/models/random \
    TORCHINDUCTOR_CACHE_DIR=/models/inductor \
    TRITON_CACHE_DIR=/models/triton

# gcc and the C library headers: torch.compile's inductor and Triton build small C/C++ modules (Triton's kernel
# launcher, CPU kernels) the first time they run; without a compiler, warm-up fails (the worker would then run eager
# and say so). The Python headers they also need come with this image. ffmpeg: m4b chapters and MP3/Opus fallbacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# torch first and pinned, so that installing f5-tts does not pull a different torch.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producer ./producer
COPY gateway ./gateway
COPY schema ./schema
RUN pip install ".[worker,gateway,flower,qa]"

RUN useradd --create-home --uid 1000 f5 && mkdir -p /models /data && chown -R f5 /models /data
USER f5

# One worker per GPU box: the default threads pool takes many messages at once, and one engine process per visible GPU
# gathers their jobs into full passes (see README, "Keeping the GPU busy"). No pool flags are needed.
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]
