#!/usr/bin/env bash
# The main job, end to end on one machine: set up, start Redis (a private one unless BROKER_URL is given), start a
# worker, add a voice, enqueue a book and wait until every segment's WAV is stored. By default it narrates the Quijote
# excerpt shipped in corpora/ (chapters I and II, about 200 segments) with the tiny random model on CPU: it speaks
# noise, but every stage is real. Set F5_MODEL=F5-Spanish (with a GPU and the checkpoint) for real speech.
#
#   scripts/quickstart.sh [CORPUS] [BOOK_ID]
#
#   CHAPTERS=1-2            only these chapters
#   VENV=path               the virtual environment to set up and use (default ./.venv)
#   QUICKSTART_UNTIL=enqueued   stop once the worker is up and the book's jobs are enqueued (a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CORPUS=${1:-$ROOT/corpora/don-quijote-1-2.es.txt}
BOOK=${2:-quijote}
CHAPTERS=${CHAPTERS:-all}
UNTIL=${QUICKSTART_UNTIL:-rendered}
[ -f "$CORPUS" ] || { echo "corpus $CORPUS not found: pass a .txt/.md/.epub/.jsonl path" >&2; exit 2; }

scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
export F5_MODEL=${F5_MODEL:-tiny-random}
# The random model speaks noise, which the quality gate's checks rightly fail (and render again, three times): off for
# the tiny model, on (signal checks) for a real one.
[ "$F5_MODEL" = tiny-random ] && export F5_QA_MODE=${F5_QA_MODE:-off}
export STORAGE_URL=${STORAGE_URL:-file://$ROOT/output}
mkdir -p "$ROOT/output/logs"
pids=()
worker=""
cleanup() {
  # The worker first. A warm stop (SIGTERM) finishes every job it holds, and a threads-pool worker holds many: give it
  # a few seconds (enough when it is idle), then kill it. Nothing is lost: its jobs are unacknowledged in Redis (AOF)
  # and `f5-batch resume` sends any missing segment again. Then Redis.
  if [ -n "$worker" ] && kill -TERM "$worker" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$worker" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

if [ -z "${BROKER_URL:-}" ]; then
  PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly yes --dir "$ROOT/output" \
    --maxmemory-policy noeviction >"$ROOT/output/logs/redis.log" 2>&1 &
  pids+=($!)
  export BROKER_URL=redis://127.0.0.1:$PORT/0
  for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

WORKER_LOG=$ROOT/output/logs/worker.log
: >"$WORKER_LOG"
celery -A worker worker --loglevel INFO -n "quickstart@%h" >>"$WORKER_LOG" 2>&1 &
worker=$!
echo "waiting for the worker to build and warm up its engine (log: output/logs/worker.log)"
for _ in $(seq 600); do
  grep -q " ready\." "$WORKER_LOG" && break
  kill -0 "$worker" 2>/dev/null || { echo "the worker stopped; see $WORKER_LOG" >&2; tail -20 "$WORKER_LOG" >&2; exit 1; }
  sleep 0.5
done
grep -q " ready\." "$WORKER_LOG" || { echo "the worker did not come up in 5 minutes; see $WORKER_LOG" >&2; exit 1; }

REF=$(python -c 'from importlib.resources import files; print(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav"))')
f5-batch voice add narrador "$REF" --text "Some call me nature, others call me mother nature."
range_args=()
[ "$CHAPTERS" = all ] || range_args=(--chapters "$CHAPTERS")
if [ "$UNTIL" = enqueued ]; then
  f5-batch enqueue "$CORPUS" --book "$BOOK" --voice narrador "${range_args[@]}"
  f5-batch status "$BOOK"
  echo "enqueued; stopping here (QUICKSTART_UNTIL=enqueued)"
  exit 0
fi
f5-batch enqueue "$CORPUS" --book "$BOOK" --voice narrador "${range_args[@]}" --wait
f5-batch status "$BOOK"
echo "audio: ${STORAGE_URL#file://}/books/$BOOK/  (worker log: output/logs/worker.log)"
