"""The HTTP gateway: its latency over a direct ``send_task``, and a schema fuzz of its committed OpenAPI document.

Real parts: redis-server, a local storage folder, a worker (default command, tiny random model on CPU) and
``f5-batch serve`` (uvicorn). The same short jobs go, one at a time:

- *direct*: ``send_task`` then ``AsyncResult.get`` then the audio read from storage (what a Celery client does to get
  the WAV);
- *gateway*: ``POST /tts`` with the seed's body shape, which answers with the WAV.

The gateway's overhead is the difference of the medians (and of the 95th percentiles). Then, with ``--fuzz``,
schemathesis runs against ``schema/gateway.openapi.json`` (every operation, generated bodies, the server-error and
schema-conformance checks). Prints a table and writes ``bench/results/gateway-cpu.json``.

    python bench/bench_gateway.py --jobs 40 [--fuzz]      # --fuzz needs: pip install schemathesis
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from bench.common import REF_TEXT, REPO, print_table, write_results
from tests.conftest import cli, worker_env
from tests.services import GatewayProcess, RedisServer, WorkerProcess

TOKEN = "bench-token"
TEXTS = ["Hola, esta es una prueba de rendimiento.", "En un lugar de la Mancha.", "Sancho respondió que sí.",
         "Y así se quedaron, sin más razones."]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _summary(mode: str, latencies: list[float]) -> dict:
    return {"mode": mode, "requests": len(latencies), "median_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * _percentile(latencies, 0.95), 1)}


def latency(env: dict, gateway: GatewayProcess, store: Path, jobs: int, nfe: int) -> list[dict]:
    from celery import Celery

    client = Celery("bench", broker=env["BROKER_URL"], backend=env["BROKER_URL"])
    client.conf.update(task_serializer="json", accept_content=["json"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    direct, http = [], []
    for index in range(jobs + 2):  # the first two of each warm up; not counted
        text, seed = TEXTS[index % len(TEXTS)], index
        job = {"text": text, "voice": {"ref_audio": "voices/narrador.wav", "ref_text": REF_TEXT},
               "output": {"key": f"direct/{index:04d}.wav"}, "params": {"nfe_step": nfe, "seed": seed}}
        start = time.perf_counter()
        result = client.send_task("f5tts.synthesize", kwargs={"job": job}, queue="f5tts", priority=0).get(timeout=120)
        audio = (store / result["key"]).read_bytes()
        took_direct = time.perf_counter() - start
        start = time.perf_counter()
        answer = requests.post(f"{gateway.url}/tts", headers=auth, timeout=120, json={
            "gen_text": text, "ref_text": "", "nfe_step": nfe, "use_fp16": True, "seed": seed + 100_000})
        took_http = time.perf_counter() - start
        answer.raise_for_status()
        assert answer.headers["content-type"] == "audio/wav" and len(answer.content) > 44 and len(audio) > 44
        if index >= 2:
            direct.append(took_direct)
            http.append(took_http)
    rows = [_summary("direct send_task + get + read WAV", direct), _summary("gateway POST /tts", http)]
    rows.append({"mode": "gateway overhead", "requests": len(http),
                 "median_ms": round(rows[1]["median_ms"] - rows[0]["median_ms"], 1),
                 "p95_ms": round(rows[1]["p95_ms"] - rows[0]["p95_ms"], 1)})
    return rows


def fuzz(gateway: GatewayProcess, examples: int) -> dict:
    """schemathesis against the committed document: no 5xx, every response as documented."""
    binary = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    command = [binary, "run", str(REPO / "schema" / "gateway.openapi.json"), "--url", gateway.url,
               "--header", f"Authorization: Bearer {TOKEN}", "--checks",
               "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
               # /tts waits for a real synthesis per example; the jobs API covers the same shapes
               "--max-examples", str(examples), "--exclude-path", "/tts"]
    started = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="f5-schemathesis-"))  # its .schemathesis/ cache stays out of the checkout
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=cache)
    tail = (done.stdout + done.stderr)[-3000:].replace(f"{REPO}/", "")  # no path of this machine in results
    print(tail)
    return {"command": " ".join(command[1:]).replace(TOKEN, "***").replace(f"{REPO}/", ""),
            "returncode": done.returncode,
            "passed": done.returncode == 0, "seconds": round(time.perf_counter() - started, 1), "output_tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--nfe", type=int, default=2)
    parser.add_argument("--fuzz", action="store_true", help="also run schemathesis (pip install schemathesis)")
    parser.add_argument("--examples", type=int, default=50, help="schemathesis examples per operation")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="f5bench-gateway-"))
    redis = RedisServer(work / "redis").start()
    store = work / "store"
    env = worker_env(redis.url, f"file://{store}", work / "weights", F5_GATEWAY_TOKENS=TOKEN,
                     F5_DEFAULT_VOICE="narrador")
    ref = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
    assert cli(env, "voice", "add", "narrador", str(ref), "--text", REF_TEXT).returncode == 0
    worker = WorkerProcess(env, work / "logs").start()
    gateway = GatewayProcess(env, work / "logs").start()
    fuzzed = None
    try:
        rows = latency(env, gateway, store, args.jobs, args.nfe)
        if args.fuzz:
            fuzzed = fuzz(gateway, args.examples)
    finally:
        gateway.stop()
        worker.stop()
        redis.stop()
    print_table(rows, ["mode", "requests", "median_ms", "p95_ms"])
    if fuzzed is not None:
        print(f"schemathesis: {'passed' if fuzzed['passed'] else 'FAILED'} in {fuzzed['seconds']} s")
    path = write_results("gateway-cpu", {"setup": {"worker": "celery -A worker worker (defaults), tiny-random, CPU",
                                                   "nfe_step": args.nfe, "storage": "local folder",
                                                   "gateway": "f5-batch serve (uvicorn, one process)"},
                                         "latency": rows, "schemathesis": fuzzed})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
