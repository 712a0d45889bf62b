"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "gpu-worker", "beat")
# What the app services share: the database, Redis and the object store, nothing else.
STATE_SERVICES = {"postgres", "redis", "minio"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_services(compose):
    assert set(compose["services"]) == STATE_SERVICES | set(APP_SERVICES)


def test_images_and_commands(compose):
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "minio/minio:" in services["minio"]["image"] and services["minio"]["command"][:2] == ["server", "/data"]
    assert "gunicorn" in " ".join(services["web"]["command"])
    worker = " ".join(services["worker"]["command"])
    gpu = " ".join(services["gpu-worker"]["command"])
    assert "celery" in worker and "-Q ${WORKER_QUEUES:-default}" in worker
    assert "celery" in gpu and "-Q gpu" in gpu
    # The gpu queue only, one process: one training at a time on the GPU it reserves.
    gpu_args = services["gpu-worker"]["command"]
    assert gpu_args[gpu_args.index("-Q") + 1] == "gpu"
    assert gpu_args[gpu_args.index("--concurrency") + 1] == "1"
    assert "ALLOW_CPU_GPU_QUEUE" not in services["gpu-worker"]["environment"]  # it must have CUDA
    worker_args = services["worker"]["command"]
    # By default the CPU worker leaves the gpu queue to the GPU worker; a host without a GPU gives it both
    # (WORKER_QUEUES=default,gpu with ALLOW_CPU_GPU_QUEUE=1), or no worker would take a training.
    assert worker_args[worker_args.index("-Q") + 1] == "${WORKER_QUEUES:-default}"
    assert services["worker"]["environment"]["ALLOW_CPU_GPU_QUEUE"] == "${ALLOW_CPU_GPU_QUEUE:-0}"
    assert services["worker"]["environment"]["DATABASE_URL"] == services["web"]["environment"]["DATABASE_URL"]
    # The web service creates the bucket before it serves (ensure_bucket), after the migrations.
    web = " ".join(services["web"]["command"])
    assert web.index("migrate") < web.index("ensure_bucket") < web.index("gunicorn")
    assert "beat" in " ".join(services["beat"]["command"])
    for name in ("web", "worker", "gpu-worker", "beat"):
        assert "build" in services[name] or "image" in services[name]


def test_gpu_worker_reserves_an_nvidia_device(compose):
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_healthchecks(compose):
    for name in ("postgres", "redis", "minio", "web"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_only_the_database_redis_and_the_object_store_keep_volumes(compose):
    """web, worker, gpu-worker and beat share no file system: any of them may run on another host."""
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "miniodata"}
    for name, service in compose["services"].items():
        if name not in STATE_SERVICES:
            assert not service.get("volumes"), f"{name} mounts {service.get('volumes')}"
            assert not service.get("volumes_from"), name
    assert any(v.startswith("pgdata:") for v in compose["services"]["postgres"]["volumes"])
    assert any(v.startswith("miniodata:/data") for v in compose["services"]["minio"]["volumes"])


def _interpolate(text: str, env: dict) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for this file)."""
    def value(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


def test_environment_wiring(compose):
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["STORAGE_URL"].startswith("s3://"), name
        assert "MEDIA_ROOT" not in env  # nothing is kept on the containers' disks
        assert "SECRET_KEY" in env and env["DEBUG"] in ("0", "false", 0, False)
        depends = compose["services"][name]["depends_on"]
        for state in STATE_SERVICES:
            assert depends[state]["condition"] == "service_healthy", (name, state)
    for name in ("worker", "gpu-worker", "beat"):
        assert compose["services"][name]["depends_on"]["web"]["condition"] == "service_healthy"


def test_storage_url_names_the_minio_service_by_a_name_browsers_can_reach(compose):
    """The app reaches MinIO by MEDIA_HOST (the service's network alias); a browser follows pre-signed
    links to the same name on the published port 9000, so the signature (it covers the host) holds."""
    from webapp.core.storage_url import storage_options

    raw = compose["services"]["web"]["environment"]["STORAGE_URL"]
    with pytest.raises(KeyError, match="MINIO_ROOT_PASSWORD"):
        _interpolate(raw, {})  # no default password
    minio = compose["services"]["minio"]
    for env in ({"MINIO_ROOT_PASSWORD": "s3cretpass"}, {"MINIO_ROOT_PASSWORD": "s3cretpass",
                                                        "MEDIA_HOST": "media.lab.example", "MINIO_ROOT_USER": "lab"}):
        options = storage_options(_interpolate(raw, env), {})
        host = env.get("MEDIA_HOST", "minio.localhost")
        assert options["endpoint_url"] == f"http://{host}:9000"
        assert options["access_key"] == _interpolate(minio["environment"]["MINIO_ROOT_USER"], env)
        assert options["secret_key"] == _interpolate(minio["environment"]["MINIO_ROOT_PASSWORD"], env)
        assert options["bucket_name"] == "nucleus-media"
        aliases = [_interpolate(alias, env) for alias in minio["networks"]["default"]["aliases"]]
        assert host in aliases
    assert "9000:9000" in minio["ports"]


def test_docker_compose_config_passes_where_the_plugin_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin on this machine")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                            text=True, env={"SECRET_KEY": "x", "MINIO_ROOT_PASSWORD": "s3cretpass",
                                            "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_the_image_serves_the_static_files_it_collected(compose):
    """STATIC_ROOT follows DATA_DIR unless set: the image collected into /tmp/build while the containers run with
    DATA_DIR=/data, so every script and style sheet answered 404. It is fixed in the image, for both."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    env = re.search(r"^ENV STATIC_ROOT=(\S+)$", dockerfile, re.M)
    collect = re.search(r"^RUN .*manage\.py collectstatic", dockerfile, re.M)
    assert env and collect and env.start() < collect.start() and env.group(1).startswith("/app/")
    for name in APP_SERVICES:
        assert "STATIC_ROOT" not in compose["services"][name].get("environment", {}), name


def test_the_image_has_pg_dump_of_the_postgres_service_s_version(compose):
    """manage.py backup runs pg_dump in the web container (README "Backups"): a client older than the server refuses
    to dump it, and Debian's own is of one version, so the image takes the compose server's from PostgreSQL's
    repository."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    client = re.search(r"^ARG POSTGRES_CLIENT=(\d+)$", dockerfile, re.M)
    assert client and "postgresql-client-${POSTGRES_CLIENT}" in dockerfile
    server = re.fullmatch(r"postgres:(\d+)(\.\d+)*(-\w+)?", compose["services"]["postgres"]["image"])
    assert server and int(client.group(1)) >= int(server.group(1))
