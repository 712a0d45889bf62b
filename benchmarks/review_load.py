"""Many reviewers at once, through gunicorn as run.py starts it, measured with locust.

    .venv/bin/python benchmarks/review_load.py                                # 100 reviewers, 100,000 nuclei, 120 s
    .venv/bin/python benchmarks/review_load.py --users 20 --duration 20 --nuclei 4000 --check   # CI's smoke run

Creates its own PostgreSQL database (``--db-name`` on ``--server``), fills it as
benchmarks/review_latency.py does (a project, two label sets, ground truth, an active model version with a
prediction per nucleus), gives every simulated reviewer an account of their own, starts gunicorn with
run.py's workers and threads, and runs locust headless: each reviewer asks for the next nucleus of label set
``alpha``, looks at it for ``--think`` seconds (1 s, a fast human), and saves the predicted class. Prints
requests/s and p50/p95/p99 of next and save, errors, refused saves (409), and then, from the database:

- duplicate decisions: nuclei with review labels from two reviewers in the label set (there is no second
  opinion in this run, so any is a bug);
- lost writes: saves answered 201 whose label row is missing or different.

With ``--check`` it exits non-zero when there is an error, a duplicate or a lost write (never on timings:
those are figures to read, the machines are shared). The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import review_latency  # noqa: E402  (the filler and the database helpers)

say = review_latency.say


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_reviewers(n: int, project_id: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from webapp.projects.models import Project, Role
    from webapp.projects.operations import do_set_membership

    project = Project.objects.get(pk=project_id)
    owner = get_user_model().objects.get(username="bench-owner")
    accounts = []
    for k in range(n):
        user = get_user_model().objects.create_user(f"load-reviewer-{k:03d}", password=None)
        do_set_membership(project, user, Role.REVIEWER, actor=owner)
        token, _ = Token.objects.get_or_create(user=user)
        accounts.append({"username": user.username, "token": token.key, "project": project_id})
    return accounts


def start_gunicorn(env: dict, port: int, workers: int, threads: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf",
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited at start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer within 60 s")


class CpuMeter:
    """CPU seconds spent by the web server (gunicorn and its workers), the database (this database's
    PostgreSQL backends) and the load generator (locust, a child of this process): where a cycle's
    time goes, whatever else the machine is doing."""

    def __init__(self, gunicorn_pid: int, db_name: str):
        self.gunicorn_pid, self.db_name = gunicorn_pid, db_name

    def _web(self) -> float:
        root = psutil.Process(self.gunicorn_pid)
        return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])

    def _database(self) -> dict[int, float]:
        backends = {}
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and f" {self.db_name} " in f"{cmdline} ":
                try:
                    backends[process.pid] = sum(process.cpu_times()[:2])
                except psutil.Error:
                    pass
        return backends

    def __enter__(self):
        self.web, self.database = self._web(), self._database()
        self.children = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
        # The web server renews its connections (CONN_MAX_AGE, 60 s): each backend's CPU is read every two
        # seconds, so that one which ends during the run still counts up to its last reading.
        self.last_seen = dict(self.database)
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        return self

    def _sample(self):
        while not self.stop.wait(2.0):
            self.last_seen.update(self._database())

    def __exit__(self, *exc):
        self.stop.set()
        self.sampler.join()
        self.last_seen.update(self._database())
        self.spent = {
            "web": self._web() - self.web,
            "database": sum(cpu - self.database.get(pid, 0.0) for pid, cpu in self.last_seen.items()),
            "load generator": sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - self.children,
        }


def read_stats(prefix: Path) -> dict[str, dict]:
    rows = {}
    with open(f"{prefix}_stats.csv") as handle:
        for row in csv.DictReader(handle):
            rows[row["Name"]] = row
    return rows


def database_findings(label_set_name: str, saves: list[dict]) -> dict:
    from django.db.models import Count

    from webapp.datasets.models import Label, LabelSource

    reviews = Label.objects.filter(label_set__name=label_set_name, source=LabelSource.REVIEW,
                                   author__username__startswith="load-reviewer-")
    duplicates = (reviews.values("nucleus_id").annotate(authors=Count("author_id", distinct=True))
                  .filter(authors__gt=1).count())
    stored = {row["id"]: row for row in reviews.values("id", "nucleus_id", "class_index")}
    lost = [s for s in saves if s["label"] not in stored or stored[s["label"]]["nucleus_id"] != s["nucleus"]
            or stored[s["label"]]["class_index"] != s["class_index"]]
    return {"review_labels": len(stored), "duplicates": duplicates, "lost_writes": len(lost),
            "saves_answered_201": len(saves)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=20)
    parser.add_argument("--duration", type=int, default=120, help="seconds of load after the spawn")
    parser.add_argument("--nuclei", type=int, default=100_000)
    parser.add_argument("--think", type=float, default=1.0, help="seconds between seeing a nucleus and saving")
    parser.add_argument("--strategy", default="entropy")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (run.py: 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (run.py: 4)")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--db-name", default="nucleus_review_load")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on errors, duplicate decisions or lost writes (CI's smoke run)")
    options = parser.parse_args()

    if review_latency.database_exists(options.server, options.db_name):
        review_latency.drop_database(options.server, options.db_name)
    review_latency.create_database(options.server, options.db_name)
    scratch = Path(tempfile.mkdtemp(prefix="review-load-"))
    gunicorn = None
    try:
        url = f"{options.server.rstrip('/')}/{options.db_name}"
        os.environ["DATA_DIR"] = str(scratch)
        review_latency.setup_django(url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        say(f"filling {options.nuclei:,} nuclei")
        project_id = review_latency.fill(options.nuclei)["project"]
        accounts = make_reviewers(options.users, project_id)
        users_file = scratch / "users.json"
        users_file.write_text(json.dumps(accounts))
        from django.db import connections

        connections.close_all()

        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "LOG_LEVEL": "WARNING",
               "SECRET_KEY": os.environ.get("SECRET_KEY") or "review-load-benchmark-" + "x" * 40}
        gunicorn = start_gunicorn(env, port, options.workers, options.threads, scratch / "gunicorn.log")
        say(f"gunicorn {options.workers} x {options.threads} on port {port}; {options.users} reviewers, "
            f"{options.think:g} s think time, {options.duration} s; load average {os.getloadavg()[0]:.1f}")
        prefix = scratch / "locust"
        saves_file = scratch / "saves.json"
        run_time = int(options.duration + options.users / options.spawn_rate)
        locust_env = {**os.environ, "REVIEW_LOAD_USERS": str(users_file), "REVIEW_LOAD_SAVES": str(saves_file),
                      "REVIEW_LOAD_QUERY": f"label_set=alpha&strategy={options.strategy}",
                      "REVIEW_LOAD_THINK_S": str(options.think)}
        with CpuMeter(gunicorn.pid, options.db_name) as cpu:
            subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "review_load_locustfile.py"),
                            "--headless", "--users", str(options.users), "--spawn-rate", str(options.spawn_rate),
                            "--run-time", f"{run_time}s", "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix),
                            "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"],
                           cwd=ROOT, env=locust_env, check=True)

        stats = read_stats(prefix)
        saves = json.loads(saves_file.read_text()) if saves_file.exists() else []
        findings = database_findings("alpha", saves)
        errors = sum(int(row["Failure Count"]) for name, row in stats.items() if name != "Aggregated")
        print()
        print(f"{'request':<8} {'count':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7}")
        for name in ("next", "save"):
            row = stats.get(name)
            if row:
                print(f"{name:<8} {row['Request Count']:>7} {float(row['Requests/s']):>7.1f} {row['50%']:>7} "
                      f"{row['95%']:>7} {row['99%']:>7} {row['Failure Count']:>7}")
        total = stats.get("Aggregated", {})
        print(f"all: {float(total.get('Requests/s', 0)):.1f} requests/s, "
              f"{len(saves) / max(1, run_time):.1f} decisions/s; errors {errors}; "
              f"duplicate decisions {findings['duplicates']}; lost writes {findings['lost_writes']} "
              f"({findings['saves_answered_201']} saves answered 201, {findings['review_labels']} review labels "
              f"stored); load average {os.getloadavg()[0]:.1f}")
        cycles = max(1, len(saves))
        print("CPU per claim-and-save cycle: " + ", ".join(f"{name} {seconds / cycles * 1000:.1f} ms"
                                                           for name, seconds in cpu.spent.items())
              + f" (over {len(saves)} cycles; {sum(cpu.spent.values()) / run_time:.2f} of "
                f"{os.cpu_count()} CPUs busy on average)")
        bad = errors or findings["duplicates"] or findings["lost_writes"]
        if options.check and bad:
            say("FAILED: errors, duplicate decisions or lost writes")
            return 1
        return 0
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            gunicorn.wait(30)
        from django.db import connections

        connections.close_all()
        review_latency.drop_database(options.server, options.db_name)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
