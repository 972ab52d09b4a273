#!/usr/bin/env bash
# Create a virtual environment and install f5-batch with the worker, gateway and dev extras. Idempotent: installs only
# what is missing. torch goes in first, pinned, with pip, so that nothing picks another torch for f5-tts (README,
# "Install"); the rest goes in with uv when it can be had (the same resolution as pip, in seconds instead of minutes),
# else with pip. Playwright comes with the dev extra and drives the system's Chromium (.ci/run installs it with apt):
# `playwright install`, which downloads a browser of its own, is never needed.
#
#   VENV=path   use (or create) this virtual environment instead of ./.venv
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchaudio==2.11.0"}
EXTRAS=${EXTRAS:-worker,gateway,dev}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -c "import torch, torchaudio" 2>/dev/null || pip install -q $TORCH_SPEC
if ! { python -c "import f5_tts.model, celery, moto, flower, fastapi, uvicorn, xdist, playwright, mypy" 2>/dev/null \
       && pip show -q f5-batch >/dev/null 2>&1; }; then
  if python -m uv --version >/dev/null 2>&1 || pip install -q uv 2>/dev/null; then
    python -m uv pip install -q --compile-bytecode -e ".[$EXTRAS]"  # bytecode as pip writes it: processes start faster
  else
    pip install -q -e ".[$EXTRAS]"
  fi
fi
command -v redis-server >/dev/null || echo "note: redis-server is not on PATH; install it (apt-get install redis-server)"
