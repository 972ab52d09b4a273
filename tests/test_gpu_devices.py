"""GPU discovery without CUDA (the worker process never initialises it): one engine process per visible GPU, each
seeing only its own, and enough tasks in flight to fill them. The environment variable is the contract, as no GPU
exists here."""

from __future__ import annotations

import os

from worker.runtime.context import engine_devices
from worker.runtime.gpus import visible_gpus
from worker.runtime.host import EngineHost
from worker.settings import Settings


class Conf(dict):
    def __setattr__(self, key, value):
        self[key] = value


def test_visible_gpus_from_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5, 7")
    assert visible_gpus() == ["2", "5", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_one_engine_per_gpu_each_seeing_only_its_own(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.delenv("F5_DEVICE", raising=False)
    devices = engine_devices(Settings())
    assert devices == ["2", "5"]
    assert [EngineHost._env(device)["CUDA_VISIBLE_DEVICES"] for device in devices] == ["2", "5"]


def test_no_gpu_is_an_engine_per_core_and_an_explicit_device_is_one_engine(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("F5_DEVICE", "F5_CPU_ENGINES", "F5_CPU_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    cores = len(os.sched_getaffinity(0))
    assert visible_gpus() == [] and engine_devices(Settings()) == [None] * cores  # one torch thread each
    monkeypatch.setenv("F5_CPU_THREADS", str(cores))
    assert engine_devices(Settings()) == [None]
    monkeypatch.setenv("F5_CPU_ENGINES", "3")
    assert engine_devices(Settings()) == [None] * 3
    monkeypatch.delenv("F5_CPU_ENGINES")
    monkeypatch.setenv("F5_DEVICE", "cpu")
    assert engine_devices(Settings()) == [None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("F5_DEVICE", "cuda:1")
    assert engine_devices(Settings()) == [None]
    assert "CUDA_VISIBLE_DEVICES" not in EngineHost._env(None)


def test_default_concurrency_fills_two_passes_per_engine(monkeypatch):
    from worker.signals import default_concurrency

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("F5_DEVICE", raising=False)
    conf = Conf(worker_concurrency=None)
    default_concurrency(conf=conf, options={"concurrency": None})
    assert conf["worker_concurrency"] == 2 * 64 * 4
    explicit = Conf(worker_concurrency=None)
    default_concurrency(conf=explicit, options={"concurrency": 16})
    assert explicit["worker_concurrency"] is None


def test_default_concurrency_of_prefork_is_a_child_per_cpu_engine(monkeypatch):
    """Each prefork child holds a model of its own: on a CPU, as many children as the threads pool would run engines;
    on a GPU host one, since every child's engine would run on the first GPU."""
    from celery.concurrency.prefork import TaskPool

    from worker.runtime.context import engine_devices
    from worker.signals import default_concurrency, settings

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("F5_DEVICE", raising=False)
    conf = Conf(worker_concurrency=None)
    default_concurrency(conf=conf, options={"concurrency": None, "pool_cls": TaskPool})
    assert conf["worker_concurrency"] == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = Conf(worker_concurrency=None)
    default_concurrency(conf=cpu, options={"concurrency": None, "pool_cls": TaskPool})
    assert cpu["worker_concurrency"] == len(engine_devices(settings)) >= 1


def test_the_pass_budget_follows_the_gpus_free_memory():
    """``F5_BATCH_FRAMES`` unset: 80% of the free memory over what one frame-row costs (measured at start), between one
    longest row and ``F5_MAX_BATCH`` longest rows. (The measurement needs a GPU; the rule does not.)"""
    from worker.engine.runtime import frame_budget_from_memory

    per_frame = 150_000.0  # bytes per frame-row with CFG
    assert frame_budget_from_memory(16 * 2**30, per_frame, max_batch=64, longest_bucket=4096) == int(
        0.8 * 16 * 2**30 / per_frame)  # a 16 GB card: memory decides
    assert frame_budget_from_memory(140 * 2**30, per_frame, max_batch=64, longest_bucket=4096) == 64 * 4096
    assert frame_budget_from_memory(100 * 2**20, per_frame, max_batch=64, longest_bucket=4096) == 4096
