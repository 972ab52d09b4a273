"""The deployment files, checked where no Docker engine can run them: what must hold for production."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_services(compose):
    assert {"redis", "minio", "minio-init", "worker", "assembler", "flower", "gateway", "producer"} <= set(
        compose["services"])
    assert compose["services"]["producer"]["profiles"] == ["producer"]


def test_the_worker_image_can_compile_and_serves_every_role():
    """Inductor and Triton build C modules at their first run: the image needs a compiler (python:*-slim has none)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = " ".join(line for line in dockerfile.splitlines() if "apt-get install" in line)
    assert re.search(r"\bgcc\b", installs) and "libc6-dev" in installs
    assert re.search(r"pip install \"\.\[worker,gateway,flower,qa\]\"", dockerfile)
    assert "COPY gateway ./gateway" in dockerfile
    command = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE).group(1)
    assert "-P" not in command and "--pool" not in command  # the default (threads) pool gathers across messages


def test_qa_profile_runs_a_recogniser_worker_on_the_gpu(compose):
    qa = compose["services"]["qa"]
    assert qa["profiles"] == ["qa"]
    assert qa["environment"]["F5_WORKER_ROLE"] == "qa"
    assert "-Q" not in qa["command"] and "-P" not in qa["command"]  # the role picks the queue and the threads pool
    assert "model-cache:/models" in qa["volumes"]
    assert qa["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_gateway_is_closed_by_default_and_private(compose):
    gateway = compose["services"]["gateway"]
    assert _command(gateway).startswith("f5-batch serve")
    assert re.fullmatch(r"\$\{F5_GATEWAY_TOKENS:\?.+\}", gateway["environment"]["F5_GATEWAY_TOKENS"])
    assert "F5_GATEWAY_OPEN" not in gateway["environment"]
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])


def test_ha_profile_runs_a_replica_and_three_sentinels(compose):
    services = compose["services"]
    sentinels = [name for name, service in services.items() if "redis-sentinel" in _command(service)]
    assert len(sentinels) == 3
    for name in [*sentinels, "redis-replica"]:
        assert services[name]["profiles"] == ["ha"]
    assert "--replicaof redis 6379" in _command(services["redis-replica"])
    assert "sentinel monitor f5master redis 6379 2" in _command(services["sentinel-1"])
    broker = compose["x-app-environment"]["BROKER_URL"]
    assert broker.startswith("${F5_BROKER_URL:-redis://")  # the apps take sentinel:// URLs from .env in that profile


def test_redis_keeps_jobs_across_restarts_and_stays_private(compose):
    redis = compose["services"]["redis"]
    command = _command(redis)
    assert redis["image"].startswith("redis:7")
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command
    assert "healthcheck" in redis and any(v.endswith(":/data") for v in redis["volumes"])
    assert "ports" not in redis, "Redis must not be published to the host by default"


def test_minio_bucket_is_created_once(compose):
    init = compose["services"]["minio-init"]
    assert "mc mb" in _command(init) and init["restart"] == "no"
    assert compose["services"]["worker"]["depends_on"]["minio-init"]["condition"] == \
        "service_completed_successfully"


def test_worker_gets_a_gpu_a_model_cache_and_a_healthcheck(compose):
    worker = compose["services"]["worker"]
    assert worker["build"] == "."
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert any(v.endswith(":/models") for v in worker["volumes"])
    assert worker["env_file"] == ".env"
    assert "inspect f5_health" in worker["healthcheck"]["test"][-1]  # not ping: it answers while every job fails


def test_flower_requires_auth_and_keeps_state(compose):
    flower = compose["services"]["flower"]
    command = _command(flower)
    assert "flower" in command and "--port=5555" in command and "--persistent=True" in command
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?.+\}", flower["environment"]["FLOWER_BASIC_AUTH"])
    assert any(p.endswith(":5555") for p in flower["ports"])
    assert any(v.endswith(":/data") for v in flower["volumes"])
    assert "FLOWER_UNAUTHENTICATED_API" not in yaml.safe_dump(compose)


def test_no_secrets_are_baked_in(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|AUTH|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", str(value)), f"{name}.{key} holds a literal"
        for word in re.findall(r"redis://:([^@]*)@", yaml.safe_dump(service)):
            assert word.startswith("${"), f"{name} has a literal Redis password"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY)\s*=", dockerfile)
    example = (REPO / ".env.example").read_text()
    for secret in ("REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH", "F5_GATEWAY_TOKENS"):
        assert re.search(rf"^{secret}=\s*(#.*)?$", example, re.MULTILINE), f"{secret} must be empty in the example"


def _setting_names() -> set[str]:
    """Every environment variable a settings section of worker.settings reads (a new section is found by itself)."""
    import inspect

    from pydantic_settings import BaseSettings

    import worker.settings

    names = set()
    for _, section in inspect.getmembers(worker.settings, inspect.isclass):
        if issubclass(section, BaseSettings) and section.__module__ == worker.settings.__name__:
            for field in section.model_fields.values():
                if field.validation_alias is not None:
                    names.add(field.validation_alias.choices[0])
    assert len(names) > 60
    return names


def test_every_setting_is_in_env_example_and_readme():
    example = (REPO / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    for name in _setting_names():
        assert re.search(rf"^#?\s*{name}=", example, re.MULTILINE), f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from the README's configuration table"
