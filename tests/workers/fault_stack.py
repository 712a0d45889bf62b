"""A private Redis, worker and media folder for the fault tests, which kill them.

The suite's shared worker (tests/conftest.py) and Redis serve every other test: a fault test must neither
kill them nor let them take its jobs, and its media folder must hold nothing but its own files, so that it
can be compared with the database (tests/media_inventory.py). Redis is started with the command run.py
uses, so its persistence is the product's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT, WorkerProcess, die_with_parent


def _run_py():
    spec = importlib.util.spec_from_file_location("run_py_for_faults", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        command = _run_py().redis_server_command(self.port, self.folder)
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {(self.folder / 'redis.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not answering on port {self.port} after {timeout} s")

    def crash(self) -> None:
        """SIGKILL: what a lost machine or the out-of-memory killer does; nothing is flushed at exit."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def persisted(self) -> bytes:
        """The append-only file(s) as on disk now."""
        return b"".join(path.read_bytes() for path in sorted(self.folder.rglob("*.aof*")) if path.is_file())


@contextmanager
def celery_app_on(url: str):
    """This process's Celery app sends, inspects and purges on ``url`` for a while (the pools are rebuilt)."""
    from workers.celery import app

    def drop_pools():
        # kombu keeps one pool per broker for the whole process (kombu.pools): a pool closed but not
        # forgotten there was handed back to the app on its next send, and every later test of the
        # process that used the broker failed with "Acquire on closed pool".
        from kombu import pools

        pools.reset()  # closes them all, the app's among them
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.broker_url
    drop_pools()
    app.conf.broker_url = url
    try:
        yield app
    finally:
        drop_pools()
        app.conf.broker_url = saved


class FaultStack:
    """Redis, a worker and MEDIA_ROOT of their own; this process's Celery app and settings point at them."""

    def __init__(self, folder: Path):
        self.media = folder / "media"
        self.media.mkdir()
        (folder / "redis").mkdir()
        self.redis = PrivateRedis(folder / "redis")
        self.worker: WorkerProcess | None = None
        self.folder = folder

    def start(self) -> None:
        self.redis.start()
        self.worker = WorkerProcess(self.folder / "worker.log", name="faults", REDIS_URL=self.redis.url,
                                    MEDIA_ROOT=str(self.media))
        self.worker.start()

    def empty_media(self) -> None:
        """A test starts with nothing in MEDIA_ROOT: the rows an earlier test's files belonged to are gone."""
        for path in self.media.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def kill_worker(self, whole: bool) -> list[int]:
        """SIGKILL the pool's child processes, or the whole worker (main process and every descendant) and
        start a fresh one under the same name. Returns the pids killed, descendants included."""
        import psutil

        main = psutil.Process(self.worker.proc.pid)
        children = main.children()
        descendants = main.children(recursive=True)
        assert children, "the prefork pool has a child process"
        for process in ([*descendants, main] if whole else children):
            try:
                os.kill(process.pid, signal.SIGKILL)  # no clean-up code runs
            except ProcessLookupError:
                pass
        if whole:
            self.worker.proc.wait(timeout=15)
            self.worker.start()
        return [process.pid for process in descendants]

    def stop(self) -> None:
        if self.worker:
            self.worker.stop()
        self.redis.stop()


@contextmanager
def fault_stack(folder: Path):
    from django.conf import settings

    stack = FaultStack(folder)
    saved_media = settings.MEDIA_ROOT
    try:
        with celery_app_on(stack.redis.url):
            settings.MEDIA_ROOT = stack.media
            stack.start()
            yield stack
    finally:
        settings.MEDIA_ROOT = saved_media
        stack.stop()
