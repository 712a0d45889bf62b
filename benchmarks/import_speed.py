"""Import speed: the real CoNSeP sample and a synthetic 100,000-nucleus dataset, uploaded through the API
and imported by a real Celery worker into PostgreSQL (or the DATABASE_URL given).

    python benchmarks/import_speed.py [--database postgres://postgres@127.0.0.1:5432/nucleus_bench]
                                      [--synthetic-images 100 --nuclei-per-image 1000]

Prints nuclei per second for the import job itself (worker start to finish) and end to end (from the
upload request until the job row says succeeded). Target: at least 5,000 nuclei/s.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def zip_folder(folder: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, str(path.relative_to(folder)))
    buffer.seek(0)
    buffer.name = f"{folder.name}.zip"
    return buffer


def recreate_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/nucleus_bench")
    parser.add_argument("--synthetic-images", type=int, default=100)
    parser.add_argument("--nuclei-per-image", type=int, default=1000)
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="import-bench-"))
    if options.database.startswith("postgres"):
        recreate_postgres_database(options.database)
    os.environ.update(DATABASE_URL=options.database, DATA_DIR=str(scratch), DJANGO_SETTINGS_MODULE="webapp.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from mlcore.synthetic import generate_dataset
    from webapp.jobs.models import Job
    from webapp.projects.operations import do_create_project
    from workers.celery import app

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    user = get_user_model().objects.create_user("bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    project = do_create_project("bench", actor=user)

    import redis
    try:
        redis.Redis.from_url(os.environ.get("REDIS_URL", ""), socket_connect_timeout=1).ping()
    except Exception:
        sys.exit("Redis is not reachable: set REDIS_URL (e.g. redis://127.0.0.1:6379/2) to a running server")
    app.control.purge()
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "default,gpu",
                               "--concurrency", "1", "-l", "warning", "-n", f"bench-{os.getpid()}@%h"],
                              cwd=ROOT, env=dict(os.environ), start_new_session=True)
    try:
        while not app.control.ping(timeout=0.5):
            time.sleep(0.5)
        cases = []
        if SHARED.is_dir():
            cases.append(("CoNSeP sample (hovernet)", "consep", "hovernet", SHARED / "consep"))
        else:
            print(f"skipping the real CoNSeP sample: {SHARED} not found")
        synthetic = generate_dataset(scratch / "synthetic", format="seed", n_images=options.synthetic_images,
                                     nuclei_per_image=options.nuclei_per_image, class_names=["a", "b", "c", "d"],
                                     size=(1000, 1000), seed=3)
        cases.append((f"synthetic {options.synthetic_images} x {options.nuclei_per_image} (seed)", "synthetic",
                      "seed", synthetic))
        print(f"database: {options.database.split('://')[0]}")
        print(f"| dataset | images | nuclei | import job s | nuclei/s (job) | end-to-end s | nuclei/s (end to end) |")
        print("|---|---|---|---|---|---|---|")
        for title, name, format, folder in cases:
            archive = zip_folder(folder)
            started = time.perf_counter()
            response = client.post(f"/api/projects/{project.pk}/datasets/", {"name": name, "format": format,
                                                                              "archive": archive}, format="multipart")
            assert response.status_code == 202, response.content
            job_id = response.json()["id"]
            while True:
                job = Job.objects.get(pk=job_id)
                if job.finished:
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - started
            if job.state != "succeeded":
                print(f"{title}: {job.state}: {job.error}")
                continue
            seconds = (job.finished_at - job.started_at).total_seconds()
            nuclei = job.result["nuclei"]
            print(f"| {title} | {job.result['images']} | {nuclei} | {seconds:.1f} | {nuclei / seconds:,.0f} | "
                  f"{wall:.1f} | {nuclei / wall:,.0f} |")
        print("target: 5,000 nuclei/s")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
