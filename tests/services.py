"""Real services for tests, on loopback and free ports: redis-server, moto's S3 server, Celery worker processes.

Each helper starts a real process, waits until it answers, and stops it (with real signals) afterwards. Nothing here
is a mock: the worker is ``celery -A worker worker`` as an operator would start it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def queue_keys(queue: str) -> list[str]:
    """The Redis lists a kombu queue is kept in: one per priority (0 is the queue's own name)."""
    return [queue] + [f"{queue}:{priority}" for priority in range(1, 10)]


def queued(client, queue: str) -> int:
    """Messages waiting in a queue, all priorities together."""
    return sum(client.llen(key) for key in queue_keys(queue))


def pop_one(client, queue: str) -> bytes | None:
    """Take one waiting message, as a consumer would (the most urgent first)."""
    for key in queue_keys(queue):
        item = client.rpop(key)
        if item is not None:
            return item
    return None


def letters_by_job_id(client) -> dict[str, dict]:
    """The dead letters in Redis, by the job id each shows (they are filed by the job's identity)."""
    from worker.constants import FAILED_JOBS_KEY

    letters = sorted((json.loads(value) for value in client.hvals(FAILED_JOBS_KEY)), key=lambda item: item["at"])
    return {letter["job_id"]: letter for letter in letters}


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class RedisServer:
    """A private redis-server. ``appendonly=True`` gives the AOF persistence production uses (and restarts keep)."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None
        self.start_args: list[str] = []
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.workdir), "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--maxmemory-policy", "noeviction", *self.start_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, 20, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        password = self.start_args[self.start_args.index("--requirepass") + 1] if "--requirepass" in \
            self.start_args else None
        return bool(redis.Redis(port=self.port, password=password, socket_timeout=1).ping())

    def client(self):
        import redis

        return redis.Redis(port=self.port)

    def stop(self) -> None:
        _stop(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()


class S3Server:
    """moto's S3 server: a real HTTP endpoint speaking the S3 protocol. Can be stopped and restarted on its port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.buckets: set[str] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"moto-{self.port}.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **s3_env()})
        wait_until(self._serving, 30, f"moto S3 server on port {self.port}")
        for bucket in self.buckets:  # moto keeps state in memory: a restart starts empty, like a fresh MinIO
            self.create_bucket(bucket)
        return self

    def _serving(self) -> bool:
        """Whether this server answers on its port (and not some other listener: a moto that could not bind exits)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"moto S3 server exited ({self.process.returncode}); see {self.log_dir}")
        socket.create_connection(("127.0.0.1", self.port), 1).close()
        return True

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_credentials())

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        with contextlib.suppress(Exception):
            self.client().create_bucket(Bucket=name)
        self.buckets.add(name)
        return name

    def stop(self) -> None:
        _stop(self.process)


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing-key", "aws_secret_access_key": "testing-secret"}


def s3_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}


class WorkerProcess:
    """``celery -A worker worker`` as a subprocess, with the tiny random model on CPU: the default deployment
    command (threads pool, one engine process per GPU or one on a CPU) unless ``extra_args`` say otherwise."""

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int | None = None, name: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:8]}@localhost"
        self.env = env
        self.concurrency = concurrency
        self.log_path = log_dir / f"{self.name.split('@')[0]}.log"
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, wait: bool = True) -> WorkerProcess:
        """Start it and wait until its engines are ready (``wait``), or only until Celery says it is ready."""
        self.launch()
        if wait:
            self.wait_ready()
        else:
            wait_until(lambda: " ready." in self.log_path.read_text(errors="replace")[self._offset:]
                       or self.process.poll() is not None, 120, f"worker {self.name} to start", interval=0.25)
        return self

    def launch(self) -> WorkerProcess:
        """Start the process and return at once."""
        args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO", "-n", self.name,
                "--without-heartbeat", "--without-mingle", "--without-gossip", *self.extra_args]
        if self.concurrency is not None:
            args += ["-c", str(self.concurrency)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            text = self.log_path.read_text(errors="replace")[self._offset:]
            engines = text.count("engine ready in") >= self._engine_owners() or \
                self.env.get("F5_WORKER_ROLE") in ("assembler", "qa")
            return engines and " ready." in text

        wait_until(ready, timeout, f"worker {self.name} to start its engines", interval=0.25)

    @property
    def _prefork(self) -> bool:
        return "processes" in self.extra_args or "-Pprocesses" in self.extra_args or \
            "--pool=processes" in self.extra_args

    def _engine_owners(self) -> int:
        """How many processes start engines: each prefork pool child (``--pool processes``; give ``concurrency``),
        else the worker."""
        return (self.concurrency or 1) if self._prefork else 1

    def children(self) -> list[psutil.Process]:
        """The engine processes (those that run the model): spawned children, not multiprocessing's helpers, nor
        what an engine forks itself (compile workers); with ``--pool processes``, those of the pool children."""
        found = []
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child)
                elif self._prefork:  # a forked pool child
                    found += [grandchild for grandchild in child.children()
                              if "spawn_main" in " ".join(grandchild.cmdline())]
        return found

    def kill_child(self, sig: int = signal.SIGKILL) -> int:
        child = self.children()[0]
        os.kill(child.pid, sig)
        return child.pid

    def send_signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.process is not None:
            _stop(self.process, sig, timeout)
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # no orphaned engine processes
        if getattr(self, "_log", None):
            self._log.close()
        return self.process.returncode if self.process else None


class GatewayProcess:
    """``f5-batch serve`` as a subprocess: real uvicorn on a free loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.env = env
        self.log_path = log_dir / f"gateway-{self.port}.log"
        self.process: subprocess.Popen | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        import requests

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = [str(Path(sys.executable).with_name("f5-batch")), "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            return requests.get(f"{self.url}/healthz", timeout=2).ok

        wait_until(up, 60, "the gateway to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        _stop(self.process)
        if getattr(self, "_log", None):
            self._log.close()


class SentinelServer:
    """A Redis Sentinel (redis-server --sentinel) watching one master; its config must be writable (it rewrites it)."""

    def __init__(self, workdir: Path, master_port: int, master_name: str = "f5master", quorum: int = 2) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.master_port = master_port
        self.master_name = master_name
        self.quorum = quorum
        self.process: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> SentinelServer:
        config = self.workdir / f"sentinel-{self.port}.conf"
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                          f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} {self.quorum}\n"
                          f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                          f"sentinel failover-timeout {self.master_name} 5000\n"
                          f"sentinel parallel-syncs {self.master_name} 1\n")
        self.process = subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(self.master_address, 20, f"redis-sentinel on port {self.port}")
        return self

    def knows(self, replicas: int, sentinels: int) -> bool:
        """This sentinel has found the master's replicas and the other sentinels (replicas are learned from the
        master's INFO, every 10 s at first: a master killed before that has nobody to fail over to)."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        return (len(client.execute_command("SENTINEL", "replicas", self.master_name)) >= replicas
                and len(client.execute_command("SENTINEL", "sentinels", self.master_name)) >= sentinels)

    def master_address(self) -> tuple[str, int]:
        import redis

        host, port = redis.Redis(port=self.port, socket_timeout=1).execute_command(
            "SENTINEL", "get-master-addr-by-name", self.master_name)
        return host.decode(), int(port)

    def stop(self) -> None:
        _stop(self.process)
