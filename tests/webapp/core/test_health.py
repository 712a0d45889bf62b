import json
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from tests.conftest import ROOT
from webapp.core import health


@pytest.fixture(autouse=True)
def no_cached_worker_status():
    health.forget_workers()
    yield
    health.forget_workers()


@pytest.mark.django_db
def test_health_reports_database_and_redis_without_login(client):
    response = client.get("/api/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["redis"]["ok"] is True
    assert isinstance(body["workers"]["live"], int)


@pytest.mark.django_db
def test_health_is_503_when_redis_is_down(client):
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get("/api/health/")
    body = response.json()
    assert response.status_code == 503
    assert body["redis"]["ok"] is False and body["redis"]["error"]
    assert body["database"]["ok"] is True


@pytest.mark.slow  # waits for a database connection to fail
def test_health_is_503_when_the_database_is_down(tmp_path):
    # A real process whose database server does not exist: nothing is mocked.
    script = ("import django, json; django.setup(); from django.test import Client; "
              "r = Client().get('/api/health/', HTTP_HOST='localhost'); print(r.status_code); print(r.content.decode())")
    env = dict(__import__("os").environ, DJANGO_SETTINGS_MODULE="webapp.settings",
               DATABASE_URL="postgres://nobody@127.0.0.1:1/nothing", DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    assert lines[0] == "503", out.stdout + out.stderr
    body = json.loads(lines[1])
    assert body["database"]["ok"] is False


@pytest.mark.django_db
def test_health_pings_the_workers_once_then_answers_from_the_cache(client):
    # No worker runs here, so a ping waits its whole timeout (1 s): ten calls that each pinged took 10 s.
    started = time.monotonic()
    bodies = [client.get("/api/health/").json() for _ in range(10)]
    elapsed = time.monotonic() - started
    assert elapsed < health.PING_TIMEOUT_S + 1.0, f"10 health calls took {elapsed:.1f} s"
    assert all(body["workers"]["live"] == 0 for body in bodies)
    assert bodies[-1]["workers"]["checked_s_ago"] <= health.WORKERS_FRESH_WHEN_NONE_S


@pytest.mark.django_db
def test_health_hides_worker_names_and_error_texts_from_non_staff(client, make_user):
    assert "names" not in client.get("/api/health/").json()["workers"]
    client.force_login(make_user("plain"))
    assert "names" not in client.get("/api/health/").json()["workers"]
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        body = client.get("/api/health/").json()
    assert body["redis"] == {"ok": False, "error": "unreachable"}
    client.force_login(make_user("operator", is_staff=True))
    assert client.get("/api/health/").json()["workers"]["names"] == []
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        body = client.get("/api/health/").json()
    assert "127.0.0.1:1" in body["redis"]["error"]  # staff see what failed, to fix it


@pytest.mark.django_db(transaction=True)
@pytest.mark.celery_worker
def test_health_counts_live_workers(client, make_user, celery_worker_process):
    body = client.get("/api/health/").json()
    assert body["workers"]["live"] >= 1
    assert "names" not in body["workers"]
    client.force_login(make_user("operator", is_staff=True))
    body = client.get("/api/health/").json()
    assert body["workers"]["live"] >= 1
    assert celery_worker_process.name in body["workers"]["names"]
