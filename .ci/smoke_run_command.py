#!/usr/bin/env python3
"""The README's run command, tried as a newcomer would, on a fresh copy of this checkout.

    python3 .ci/smoke_run_command.py [--keep]

Standard library only: it runs before any virtual environment exists. With REDIS_URL, DATABASE_URL and the
other settings unset and free ports, it

1. starts `python3 run.py --demo` (which builds .venv from requirements.txt alone), waits for /api/health/
   to report ok with a live worker, logs in through the login page, uploads a small dataset and trains a
   model on it through the worker, then checks the venv (`pip check`, every module the processes load);
   Ctrl-C stops it, and no process it started may be left;
2. starts it again and stops it with SIGTERM, the same check;
3. starts it again, kills the Celery worker with SIGKILL in the middle of a training (run.py then stops the
   rest), starts it once more and waits until the lost training has ended and a new one is accepted; then
   SIGHUP (a closed terminal) stops it, the same check.

Exits non-zero, with the run's log, at the first thing that fails.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_START_S = 1500   # the first start builds the venv (torch and friends): minutes
START_S = 240
FAST_TRAINING = {"epochs": 1, "samples_per_epoch": 64, "batch_size": 32}
LONG_TRAINING = {"epochs": 50, "stages": ["sparse"], "samples_per_epoch": 256, "batch_size": 32}
# Settings a newcomer does not have: none of these may leak in from the CI machine.
SCRUBBED = ("REDIS_URL", "DATABASE_URL", "DEBUG", "SECRET_KEY", "DATA_DIR", "MEDIA_ROOT", "STATIC_ROOT",
            "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "PORT", "HOST")


def say(message: str) -> None:
    print(f"[smoke] {message}", flush=True)


class Failed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_copy(destination: Path) -> Path:
    """The files a clone would have: tracked ones and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


# --- processes ------------------------------------------------------------------------------------------

def processes_under(root: Path) -> list[tuple[int, str]]:
    """Every live process that belongs to the copy: its command line or working folder lies in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
            state = next((line.split()[1] for line in (entry / "status").read_text().splitlines()
                          if line.startswith("State:")), "")
        except (OSError, StopIteration):
            continue
        if state == "Z":
            continue  # a zombie is already dead; it only waits for its parent to read its status
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append((int(entry.name), cmdline))
    return found


def as_from_a_terminal() -> None:
    """In the child: the signal dispositions of a program started from a terminal. CI may run this script as
    a background job or under nohup, whose ignored SIGINT or SIGHUP run.py would inherit and keep."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Stack:
    """One `python3 run.py` of the copy, with its log."""

    def __init__(self, root: Path, env: dict, port: int, log: Path):
        self.root, self.env, self.port, self.log_path = root, env, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, timeout: float = START_S) -> None:
        say(f"python3 run.py {' '.join(args)} --port {self.port}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "run.py", *args, "--port", str(self.port)], cwd=self.root,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=as_from_a_terminal)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"run.py exited with code {self.proc.returncode} before it was healthy")
            try:
                with urllib.request.urlopen(f"{self.base}/api/health/", timeout=10) as response:
                    body = json.load(response)
                if body.get("status") == "ok" and body.get("workers", {}).get("live", 0) >= 1:
                    say(f"healthy: {json.dumps(body)[:200]}")
                    return body
                last = json.dumps(body)[:300]
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(2)
        raise Failed(f"not healthy within {timeout:.0f} s (last: {last})")

    def stop(self, sig: signal.Signals) -> None:
        say(f"sending {sig.name} to run.py")
        # Ctrl-C in a terminal reaches the whole foreground group; run.py's own group is what that is.
        os.killpg(self.proc.pid, sig) if sig == signal.SIGINT else self.proc.send_signal(sig)
        self.wait_stopped(60)

    def wait_stopped(self, timeout: float) -> None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"run.py still running {timeout:.0f} s after it was told to stop") from None
        say(f"run.py exited with code {code}")
        deadline = time.monotonic() + 10
        while (left := processes_under(self.root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            raise Failed("processes left running after run.py stopped:\n" +
                         "\n".join(f"  {pid} {cmd[:160]}" for pid, cmd in left))
        say("no process of the stack is left")


# --- the web client -------------------------------------------------------------------------------------

class Browser:
    """Cookies, CSRF and JSON, as the pages' own JavaScript uses the API."""

    def __init__(self, base: str):
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def csrf(self) -> str:
        return next((c.value for c in self.cookies if c.name == "csrftoken"), "")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                expect: tuple[int, ...] = (200,)):
        headers = {"X-CSRFToken": self.csrf(), "Referer": self.base + "/", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=60) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        if status not in expect:
            raise Failed(f"{method} {path} answered {status}, expected {expect}: {data[:500]!r}")
        return status, data

    def json(self, method: str, path: str, payload=None, expect=(200,)):
        body = json.dumps(payload).encode() if payload is not None else None
        return json.loads(self.request(method, path, body, "application/json" if body else None, expect)[1])

    def log_in(self, username: str, password: str) -> None:
        _, page = self.request("GET", "/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not token:
            raise Failed("the login page has no CSRF token field")
        form = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrfmiddlewaretoken": token.group(1).decode()}).encode()
        self.request("POST", "/login/", form, "application/x-www-form-urlencoded")
        if not any(c.name == "sessionid" for c in self.cookies):
            raise Failed("logging in with the printed admin credentials gave no session")
        _, home = self.request("GET", "/")
        if b"/login/" in home[:200] or b"logout" not in home.lower():
            raise Failed("the home page after logging in does not look logged in")

    def upload(self, path: str, fields: dict, file_field: str, file_path: Path) -> dict:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                     f'filename="{file_path.name}"\r\nContent-Type: application/zip\r\n\r\n'.encode()
                     + file_path.read_bytes() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return json.loads(self.request("POST", path, body, f"multipart/form-data; boundary={boundary}",
                                       expect=(202,))[1])

    def wait_job(self, job_id: int, states=("succeeded", "failed", "cancelled"), timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.json("GET", f"/api/jobs/{job_id}/")
            if job["state"] in states:
                return job
            time.sleep(1)
        raise Failed(f"job {job_id} not {'/'.join(states)} within {timeout:.0f} s: {job}")


def admin_browser(stack: Stack) -> Browser:
    text = (stack.root / "var" / "admin-credentials.txt").read_text()
    credentials = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    browser = Browser(stack.base)
    browser.log_in(credentials["username"], credentials["password"])
    return browser


def demo_project(browser: Browser) -> dict:
    projects = browser.json("GET", "/api/projects/")
    projects = projects.get("results", projects)
    demo = [p for p in projects if p["name"].startswith("Demo")]
    if not demo:
        raise Failed(f"no demo project after run.py --demo: {projects}")
    return demo[0]


# --- the three runs -------------------------------------------------------------------------------------

def first_run(stack: Stack, scratch: Path) -> None:
    stack.start("--demo", timeout=FIRST_START_S)
    browser = admin_browser(stack)
    project = demo_project(browser)

    say("uploading a small dataset and waiting for its import job")
    python = str(stack.root / ".venv" / "bin" / "python")
    dataset_dir = scratch / "upload"
    subprocess.run([python, "-c", "import sys; from mlcore.synthetic import generate_dataset; "
                    "generate_dataset(sys.argv[1], format='seed', n_images=2, nuclei_per_image=20, "
                    "class_names=['epithelial', 'inflammatory'], seed=3, size=(128, 128))", str(dataset_dir)],
                   cwd=stack.root, check=True)
    archive = scratch / "smoke-upload.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted(dataset_dir.rglob("*")):
            if file.is_file():
                zipped.write(file, file.relative_to(dataset_dir))
    started = browser.upload(f"/api/projects/{project['id']}/datasets/",
                             {"name": "smoke-upload", "format": "seed"}, "archive", archive)
    job = browser.wait_job(started["id"])
    if job["state"] != "succeeded":
        raise Failed(f"the import job ended {job['state']}: {job.get('error')}")

    say("training on the demo project through the worker")
    job = browser.json("POST", f"/api/projects/{project['id']}/train/", FAST_TRAINING, expect=(202,))
    job = browser.wait_job(job["id"])
    if job["state"] != "succeeded":
        raise Failed(f"the training job ended {job['state']}: {job.get('error')}")
    prediction = job.get("result", {}).get("prediction_job")
    if prediction and browser.wait_job(prediction)["state"] != "succeeded":
        raise Failed("the prediction job after the training did not succeed")

    say("checking the virtual environment run.py built from requirements.txt alone")
    subprocess.run([python, "-m", "pip", "check"], cwd=stack.root, check=True)
    subprocess.run([python, ".ci/check_runtime.py"], cwd=stack.root, check=True,
                   env={**stack.env, "DJANGO_SETTINGS_MODULE": "webapp.settings"})
    stack.stop(signal.SIGINT)


def second_run(stack: Stack) -> None:
    stack.start()
    stack.stop(signal.SIGTERM)


def worker_killed_run(stack: Stack) -> None:
    stack.start()
    browser = admin_browser(stack)
    project = demo_project(browser)
    job = browser.json("POST", f"/api/projects/{project['id']}/train/", LONG_TRAINING, expect=(202,))
    browser.wait_job(job["id"], states=("running",), timeout=120)
    workers = [pid for pid, cmd in processes_under(stack.root) if "celery -A workers worker " in cmd]
    say(f"killing the Celery worker's processes {workers} with SIGKILL during training job {job['id']}")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stack.wait_stopped(60)  # run.py sees its worker gone and stops the rest

    stack.start()
    browser = admin_browser(stack)
    lost = browser.wait_job(job["id"], timeout=120)
    say(f"the lost training ended {lost['state']} {time.monotonic() - killed_at:.0f} s after the kill: "
        f"{lost.get('error')}")
    if lost["state"] not in ("failed", "succeeded"):
        raise Failed(f"the lost training ended {lost['state']}")
    again = browser.json("POST", f"/api/projects/{project['id']}/train/", FAST_TRAINING, expect=(202,))
    browser.json("POST", f"/api/jobs/{again['id']}/cancel/")
    browser.wait_job(again["id"])
    stack.stop(signal.SIGHUP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the fresh copy (and its venv) afterwards")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="nucleus-smoke-"))
    root = fresh_copy(scratch / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["EMBEDDED_REDIS_PORT"] = str(free_port())  # a newcomer's machine has the port free; this one may not
    stack = Stack(root, env, free_port(), scratch / "run.log")
    say(f"fresh copy in {root}; web port {stack.port}, Redis port {env['EMBEDDED_REDIS_PORT']}")
    started = time.monotonic()
    try:
        first_run(stack, scratch)
        second_run(stack)
        worker_killed_run(stack)
    except (Failed, subprocess.CalledProcessError) as exc:
        say(f"FAILED: {exc}")
        say("the end of run.py's log:\n" + stack.log_path.read_text(errors="replace")[-8000:])
        if stack.proc and stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGTERM)
            stack.proc.wait(60)
        for pid, _ in processes_under(root):
            os.kill(pid, signal.SIGKILL)
        return 1
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
