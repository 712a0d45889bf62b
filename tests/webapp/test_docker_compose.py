"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked."""

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_services(compose):
    assert set(compose["services"]) == {"postgres", "redis", "web", "worker", "gpu-worker", "beat"}


def test_images_and_commands(compose):
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "gunicorn" in " ".join(services["web"]["command"])
    worker = " ".join(services["worker"]["command"])
    gpu = " ".join(services["gpu-worker"]["command"])
    assert "celery" in worker and "-Q default" in worker
    assert "celery" in gpu and "-Q gpu" in gpu
    assert "beat" in " ".join(services["beat"]["command"])
    for name in ("web", "worker", "gpu-worker", "beat"):
        assert "build" in services[name] or "image" in services[name]


def test_gpu_worker_reserves_an_nvidia_device(compose):
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_healthchecks(compose):
    for name in ("postgres", "redis", "web"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_named_volumes_for_database_and_media(compose):
    volumes = compose["volumes"]
    assert {"pgdata", "media"} <= set(volumes)
    assert any(v.startswith("pgdata:") for v in compose["services"]["postgres"]["volumes"])
    for name in ("web", "worker", "gpu-worker"):
        assert any(v.startswith("media:") for v in compose["services"][name]["volumes"]), name


def test_environment_wiring(compose):
    for name in ("web", "worker", "gpu-worker", "beat"):
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["MEDIA_ROOT"]
        assert "SECRET_KEY" in env and env["DEBUG"] in ("0", "false", 0, False)
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_docker_compose_config_passes_where_the_plugin_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin on this machine")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                            text=True, env={"SECRET_KEY": "x", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
