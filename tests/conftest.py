"""Fixtures shared by the whole suite: users with different roles, API clients, a real Celery worker, and the
data that tests of several areas build (the review project, the slides share with its worker).

Fixtures of one area live in that area's conftest.py (tests/webapp/datasets/conftest.py, ...); test modules
never import fixtures. Plain builders the fixtures use live in helper modules (tests/webapp/review_project.py,
tests/webapp/viewer_project.py, ...), imported normally."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def test_media_root(tmp_path_factory):
    """Uploaded and generated files of the suite go to a temporary folder, for this process and the
    worker processes it starts (they read MEDIA_ROOT from the environment)."""
    from django.conf import settings

    media = tmp_path_factory.mktemp("media")
    previous = settings.MEDIA_ROOT, os.environ.get("MEDIA_ROOT"), settings.DATA_DIR
    settings.MEDIA_ROOT = media
    os.environ["MEDIA_ROOT"] = str(media)
    # Host-local runtime files of this process (the slide tile cache, chunked uploads) stay out of var/ too.
    settings.DATA_DIR = tmp_path_factory.mktemp("data")
    yield media
    settings.MEDIA_ROOT = previous[0]
    settings.DATA_DIR = previous[2]
    if previous[1] is None:
        os.environ.pop("MEDIA_ROOT", None)
    else:
        os.environ["MEDIA_ROOT"] = previous[1]


@pytest.fixture(scope="session", autouse=True)
def fast_password_hasher():
    """Users are made and logged in by the hundred: MD5 instead of PBKDF2 (a third of a second a hash here).
    No process the tests start checks a password, and no test is about the hasher itself."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session", autouse=True)
def flush_by_delete():
    """A ``transactional_db`` test ends with a flush of every table: on PostgreSQL Django's flush is one
    TRUNCATE of all 39 tables, about a second (each table gets new files, made durable at commit). The
    tables hold a few rows then, and DELETE in one transaction takes 30 ms; the foreign keys are
    deferred (Django makes them DEFERRABLE), so the order does not matter. A flush that resets the
    sequences or cascades is left to Django."""
    try:
        from django.db.backends.postgresql.operations import DatabaseOperations
    except ImportError:  # no PostgreSQL driver: the suite runs on SQLite, whose flush already deletes
        yield
        return
    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET CONSTRAINTS ALL DEFERRED;", *(f"DELETE FROM {self.quote_name(table)};" for table in tables)]

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = truncate


@pytest.fixture(scope="session", autouse=True)
def commits_without_waiting_for_the_disk():
    """The connections of this process commit without waiting for the WAL to reach the disk
    (``synchronous_commit = off``): a commit is as visible to every other connection as before, and
    only a crash of the database server could lose the last ones, which a test database does not
    mind. Tests that commit (``transactional_db``, imports) waited a third of their time on fsync
    here. Processes a test starts (workers) keep the server's setting."""
    from django.db.backends.signals import connection_created

    def asynchronous_commit(sender, connection, **kwargs):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")

    connection_created.connect(asynchronous_commit)
    yield
    connection_created.disconnect(asynchronous_commit)


@pytest.fixture(autouse=True)
def torch_on_one_thread():
    """PyTorch computes on one thread in this process, once a test has imported it. The networks of the
    tests are tiny: a second thread only adds synchronisation, and on two cores shared with anything
    else every parallel step waits for the busier one (the quick loop's mlcore tests: 86-92 s with two
    threads here, 23-53 s with one). Processes a test starts keep PyTorch's default, and OpenCV's
    thread pool is left as it is (an import test needs it running)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def fresh_cache():
    """Counters kept in the cache (failed API tokens per address, say) start at zero in every test.

    Only a local-memory cache is emptied: with DEBUG off the cache is the Redis that also holds Celery's
    queues, and clearing it would empty them."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they live beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def make_user(db, django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)
    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def member(make_user):
    return make_user("member")


@pytest.fixture
def outsider(make_user):
    return make_user("outsider")


@pytest.fixture
def media_root(settings, tmp_path):
    """A MEDIA_ROOT of the test's own, for tests that look at every file written."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def users(make_user, owner):
    """owner (admin), curator, two reviewers, a viewer, an outsider."""
    return {"owner": owner, "curator": make_user("carla"), "reviewer": make_user("rita"),
            "reviewer2": make_user("rob"), "viewer": make_user("vera"), "outsider": make_user("otto")}


@pytest.fixture
def rp(db, users, media_root, tmp_path):
    """The review project (tests/webapp/review_project.py) with every role among its members."""
    from tests.webapp.review_project import add_members, build_review_project

    project = build_review_project(users["owner"], tmp_path / "sources")
    add_members(project.project, users)
    return project


@pytest.fixture
def api_client_for():
    """An API client authenticated the way scripts are: with a DRF token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client
    return make


def database_url_for_subprocess(settings_dict: dict) -> str:
    """The URL of the *test* database, for processes (workers, scripts) started by a test."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


def subprocess_env(**overrides) -> dict:
    from django.db import connection

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess(connection.settings_dict)
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def fresh_database_url(tmp_path: Path) -> str:
    """An empty database of the same engine as the test's: a new SQLite file, or a new PostgreSQL database."""
    from django.db import connection

    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{tmp_path / 'restored' / 'db.sqlite3'}"
    name = f"{settings_dict['NAME']}_restored"
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    return database_url_for_subprocess({**settings_dict, "NAME": name})


def run_in(install: dict, *args: str) -> subprocess.CompletedProcess:
    """Python with ``args`` in the installation ``install`` (its environment variables)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=subprocess_env(**install), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def restored_install(tmp_path):
    """A fresh, empty installation to restore a backup into: its DATA_DIR, MEDIA_ROOT and database."""
    from django.db import connection, connections

    data = tmp_path / "restored"
    data.mkdir()
    install = {"DATA_DIR": str(data), "MEDIA_ROOT": str(data / "media"), "DATABASE_URL": fresh_database_url(tmp_path)}
    yield install
    if connection.vendor == "postgresql":
        connections.close_all()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{connection.settings_dict["NAME"]}_restored"')


def die_with_parent() -> None:
    """In a started process, before exec: the kernel sends it SIGTERM when the test process dies, even by
    SIGKILL or a CI time limit, which run no fixture teardown."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, Linux only
    except (OSError, AttributeError):
        pass


class WorkerProcess:
    def __init__(self, log_path: Path, name: str = "test", queues: str = "default,gpu", **env: str):
        """``env``: settings of the worker's own (a private Redis, a private MEDIA_ROOT); ``queues``: what it takes
        (both, on the CPU, unless a test wants a worker of one queue)."""
        self.log_path = log_path
        self.queues = queues
        self.proc: subprocess.Popen | None = None
        self.name = f"{name}-{os.getpid()}@{socket.gethostname()}"
        self.env = env

    def start(self, purge: bool = True) -> None:
        from workers.celery import app

        if purge:
            app.control.purge()  # messages left by an earlier, interrupted run must not be executed here
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", self.queues, "--pool", "prefork",
             "--concurrency", "1", "-l", "info", "-n", self.name, "--without-gossip",
             "--without-mingle"],
            # Two processes prepare the images of an import whatever the cores here: tests take that path.
            # Both queues on one CPU worker: the GPU jobs (training, inference) run on the CPU here.
            cwd=ROOT, env=subprocess_env(IMPORT_PROCESSES="2", ALLOW_CPU_GPU_QUEUE="1", **self.env), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        from workers.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Celery worker exited at start:\n{self.log()}")
            try:
                if app.control.ping(destination=[self.name], timeout=0.5):
                    return
            except Exception:  # a pooled connection to a Redis that restarted fails once, then reconnects
                time.sleep(0.2)
        raise RuntimeError(f"Celery worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory, test_media_root):
    """A real Celery worker (separate process, prefork pool) on the test database and real Redis.

    One per test module, not per session: a worker left running would also take the jobs that later
    modules queue without wanting them run (the authorization matrix's POSTs, say) and would write to
    the database while a test's teardown empties it (a flush that then fails)."""
    worker = WorkerProcess(tmp_path_factory.mktemp("celery") / "worker.log")
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def slides_share(tmp_path_factory):
    """A share of slides (SLIDES_ROOT) holding the fixture slide and its GeoJSON under ``lab/``."""
    from tests.webapp.slide_helpers import build_fixture_slide

    root = tmp_path_factory.mktemp("slides-share").resolve()
    build_fixture_slide(root / "lab")
    return root


@pytest.fixture(scope="module")
def slide_worker(django_db_setup, django_db_blocker, tmp_path_factory, test_media_root, slides_share):
    """A real Celery worker that reads the slides share, as in production (SLIDES_ROOT from its environment)."""
    worker = WorkerProcess(tmp_path_factory.mktemp("celery") / "worker.log", name="slides",
                           SLIDES_ROOT=str(slides_share))
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    worker.stop()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


WORKER_FIXTURES = {"celery_worker_process", "slide_worker"}  # the fixtures above that start a WorkerProcess


def pytest_collection_modifyitems(config, items):
    """Every test that starts a real worker or drives Chromium is slow too: ``-m "not slow"`` is the quick loop."""
    for item in items:
        if item.get_closest_marker("slow") is None and (
                item.get_closest_marker("celery_worker") or item.get_closest_marker("browser")
                or WORKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)
