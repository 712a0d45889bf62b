"""Pieces of run.py that need no running stack (the whole command is tried by .ci/smoke_run_command.py)."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def run_py():
    spec = importlib.util.spec_from_file_location("run_py_under_test", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_port_in_use_is_named_with_a_way_out(run_py):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            run_py.port_free_or_exit("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in str(stopped.value)
    suggested = int(str(stopped.value).rsplit("--port ", 1)[1])
    assert suggested > port and run_py._bind_error(socket.AF_INET, "127.0.0.1", suggested) is None  # a free port


def test_a_host_that_is_no_address_is_named_not_blamed_on_the_port(run_py):
    with pytest.raises(SystemExit) as stopped:
        run_py.port_free_or_exit("999.1.1.1", 8000)
    assert "'999.1.1.1'" in str(stopped.value) and "HOST or --host" in str(stopped.value)
    assert "another program" not in str(stopped.value)
    # An address, but another machine's: not blamed on the port either.
    with pytest.raises(SystemExit) as stopped:
        run_py.port_free_or_exit("192.0.2.1", 8000)  # TEST-NET-1: never this machine's
    assert "HOST or --host must be an address of this machine" in str(stopped.value)
    assert "another program" not in str(stopped.value)


@pytest.mark.parametrize("value", ["abc", "80800", "0"])
def test_a_bad_port_stops_with_one_line_naming_it(value, tmp_path):
    for argv, env in (([sys.executable, "run.py"], {"PORT": value}), ([sys.executable, "run.py", "--port", value], {})):
        done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env, "DATA_DIR": str(tmp_path)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert f"{value!r} is not a port number (1-65535)" in done.stderr, done.stderr
        assert ("PORT=" in done.stderr) if env else ("--port" in done.stderr)


def test_embedded_redis_port_is_read_and_checked(run_py, monkeypatch):
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", "6402")
    assert run_py.env_port("EMBEDDED_REDIS_PORT", 6390) == 6402
    monkeypatch.delenv("EMBEDDED_REDIS_PORT")
    assert run_py.env_port("EMBEDDED_REDIS_PORT", 6390) == 6390
    monkeypatch.setenv("EMBEDDED_REDIS_PORT", "lots")
    with pytest.raises(SystemExit, match="EMBEDDED_REDIS_PORT='lots' is not a port number"):
        run_py.env_port("EMBEDDED_REDIS_PORT", 6390)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(run_py, port: int) -> None:
    deadline = time.monotonic() + 10
    while not run_py.port_open(port):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


def test_the_embedded_redis_port_is_used_only_by_this_installations_own_redis(run_py, tmp_path, monkeypatch):
    """A second installation on the same Redis port would share the first's job queue: each worker takes the
    other's jobs, finds no such job in its own database and drops them. Only our own Redis is used again."""
    port = _free_port()
    # A program that is not a Redis holds the port.
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(SystemExit) as stopped:
            run_py.start_embedded_redis(port, [])
    assert "does not answer as a Redis" in str(stopped.value) and f"EMBEDDED_REDIS_PORT={port + 5}" in str(stopped.value)

    # Another installation's Redis holds it.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    redis = subprocess.Popen(run_py.redis_server_command(port, theirs), stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(run_py, port)
        monkeypatch.setattr(run_py, "DATA_DIR", tmp_path / "ours")
        with pytest.raises(SystemExit) as stopped:
            run_py.start_embedded_redis(port, [])
        assert f"another Redis (its data in {theirs.resolve()})" in str(stopped.value)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    # A Redis whose data folder is this installation's own is used: nothing is started.
    monkeypatch.setattr(run_py, "DATA_DIR", tmp_path)
    own = tmp_path / f"redis-{port}"
    own.mkdir()
    redis = subprocess.Popen(run_py.redis_server_command(port, own), stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(run_py, port)
        started: list = []
        assert run_py.start_embedded_redis(port, started) == f"redis://127.0.0.1:{port}/0" and started == []
        # The test command's Redis lives in a folder of its own, so it is never an installation's.
        with pytest.raises(SystemExit):
            run_py.start_embedded_redis(port, [], folder="redis-tests")
    finally:
        redis.terminate()
        redis.wait(timeout=10)


@pytest.mark.parametrize("command", [["run.py"], ["manage.py", "check"]])
def test_a_bad_setting_stops_with_one_line_naming_the_variable(command, tmp_path):
    if command == ["run.py"]:   # the settings are read before anything starts
        code = "import run; run.os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings'; run.settings_or_exit()"
        argv = [sys.executable, "-c", code]
    else:
        argv = [sys.executable, *command]
    env = {**os.environ, "MAX_UPLOAD_BYTES": "abc", "DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "MAX_UPLOAD_BYTES='abc' is not an integer" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_gunicorn_keeps_its_control_socket_and_pid_file_under_data_dir(tmp_path):
    code = "import webapp.gunicorn_conf as c; print(c.control_socket); print(c.pidfile)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DATA_DIR": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path / "run" / "gunicorn.ctl"), str(tmp_path / "run" / "gunicorn.pid")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_every_stop_signal_stops_what_was_started(run_py, sig, tmp_path):
    """run.py's own clean-up path: the signal becomes an exception, and stop_all ends each process group,
    including a grandchild (as a Celery pool process or a gunicorn worker is)."""
    script = tmp_path / "stack.py"
    script.write_text(f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("r", {str(ROOT / 'run.py')!r})
r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)
r.catch_stop_signals()
processes = [("sleeper", r.start(sys.executable, "-c",
             "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
             " time.sleep(600)"))]
print(processes[0][1].pid, flush=True)
try:
    while True:
        time.sleep(0.1)
except (KeyboardInterrupt, r.Stop):
    pass
finally:
    r.stop_all(processes, timeout=5)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)
    child = int(proc.stdout.readline())
    time.sleep(0.5)
    group = os.getpgid(child)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.2)
    left = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _pgid(pid) == group and _state(pid) != "Z"]
    assert left == [], f"processes of the stopped group are still running: {left}"


def _as_from_a_terminal() -> None:
    # The suite may run as a background job or under nohup: SIGINT or SIGHUP ignored there would be inherited.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_signal_ignored_at_start_stays_ignored(run_py, tmp_path):
    """nohup ignores SIGHUP so that closing the terminal leaves the program running: run.py keeps that."""
    script = tmp_path / "nohup.py"
    script.write_text(f"""
import importlib.util, signal
spec = importlib.util.spec_from_file_location("r", {str(ROOT / 'run.py')!r})
r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)
r.catch_stop_signals()
print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is r._raise_stop)
""")
    ignoring = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                              preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)).stdout.split()
    assert ignoring == ["True", "True"]
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                           preexec_fn=_as_from_a_terminal).stdout.split()
    assert plain == ["False", "True"]


def test_static_files_of_an_older_release_do_not_outlive_the_new_one(run_py, tmp_path, monkeypatch):
    """A release cloned before the old one's last start (or unpacked with its files' times) has older sources than
    the collected copies: collectstatic kept the old scripts, and the new pages ran with them."""
    static_root = tmp_path / "static"
    stale = static_root / "js" / "jobs.js"
    stale.parent.mkdir(parents=True)
    stale.write_text("// the previous release's script")
    future = time.time() + 3600
    os.utime(stale, (future, future))
    monkeypatch.setenv("STATIC_ROOT", str(static_root))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    run_py.collect_static()
    assert stale.read_text() == (ROOT / "static" / "js" / "jobs.js").read_text()


def _run_py_main(args: list[str], env: dict, tmp_path) -> list[str]:
    """run.py's main() in a process of its own, its virtual environment taken as ready (installing it would print
    its own line, and CI's is made for the tests): what it printed, line by line."""
    code = f"import run, sys; run.ensure_venv = lambda *a: None; sys.argv = ['run.py', *{args!r}]; sys.exit(run.main())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env, "DATA_DIR": str(tmp_path)})
    assert done.returncode != 0
    return (done.stdout + done.stderr).strip().splitlines()


def test_a_host_that_is_no_address_is_the_only_line_run_py_prints(tmp_path):
    lines = _run_py_main(["--host", "nosuch.invalid"], {}, tmp_path)
    assert len(lines) == 1 and "HOST or --host" in lines[0], lines


def test_a_bad_setting_is_the_only_line_run_py_prints(tmp_path):
    assert _run_py_main([], {"MAX_UPLOAD_BYTES": "abc"}, tmp_path) == [
        "[run] cannot start: MAX_UPLOAD_BYTES='abc' is not an integer (README: Environment variables)"]
