"""GPU discovery and pinning without CUDA (the prefork parent must never initialise it): the environment variable is
the contract, as no GPU exists here."""

from __future__ import annotations

import os

from worker.runtime.gpus import pin_child_to_gpu, visible_gpus


def test_visible_gpus_from_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5, 7")
    assert visible_gpus() == ["2", "5", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_child_i_is_pinned_to_gpu_i(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert pin_child_to_gpu(1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert pin_child_to_gpu(2) == "2"  # more processes than GPUs: round robin


def test_no_gpu_no_pinning(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    assert visible_gpus() == [] and pin_child_to_gpu(0) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_concurrency_defaults_to_the_gpu_count(monkeypatch):
    from worker.signals import default_concurrency_to_gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    conf = {"worker_concurrency": None}

    class Conf(dict):
        def __setattr__(self, key, value):
            self[key] = value

    settings = Conf(conf)
    default_concurrency_to_gpu_count(conf=settings, options={"concurrency": None})
    assert settings["worker_concurrency"] == 4
    explicit = Conf(conf)
    default_concurrency_to_gpu_count(conf=explicit, options={"concurrency": 2})
    assert explicit["worker_concurrency"] is None
