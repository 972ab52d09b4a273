#!/usr/bin/env bash
# The main job, end to end on one machine: set up, start Redis (a private one unless BROKER_URL is given), start a
# worker, add a voice, enqueue a book and wait until every segment's WAV is stored. Defaults narrate chapters I-II of
# the Quijote with the tiny random model on CPU (it speaks noise, but every stage is real); set F5_MODEL=F5-Spanish
# (with a GPU and the checkpoint) for real speech, CHAPTERS=all for the whole book.
#
#   scripts/quickstart.sh [CORPUS] [BOOK_ID]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CORPUS=${1:-$ROOT/../shared/corpora/don-quijote.es.txt}
BOOK=${2:-quijote}
CHAPTERS=${CHAPTERS:-1-2}
[ -f "$CORPUS" ] || { echo "corpus $CORPUS not found: pass a .txt/.md/.epub/.jsonl path" >&2; exit 2; }

scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export F5_MODEL=${F5_MODEL:-tiny-random}
export STORAGE_URL=${STORAGE_URL:-file://$ROOT/output}
mkdir -p "$ROOT/output/logs"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${BROKER_URL:-}" ]; then
  PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly yes --dir "$ROOT/output" \
    --maxmemory-policy noeviction >"$ROOT/output/logs/redis.log" 2>&1 &
  pids+=($!)
  export BROKER_URL=redis://127.0.0.1:$PORT/0
  for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

celery -A worker worker --loglevel INFO -n "quickstart@%h" >"$ROOT/output/logs/worker.log" 2>&1 &
pids+=($!)

REF=$(python -c 'from importlib.resources import files; print(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))')
f5-batch voice add narrador "$REF" --text "Some call me nature, others call me mother nature."
range_args=()
[ "$CHAPTERS" = all ] || range_args=(--chapters "$CHAPTERS")
f5-batch enqueue "$CORPUS" --book "$BOOK" --voice narrador "${range_args[@]}" --wait
f5-batch status "$BOOK"
echo "audio: ${STORAGE_URL#file://}/books/$BOOK/  (worker log: output/logs/worker.log)"
