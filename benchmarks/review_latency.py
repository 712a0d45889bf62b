"""Latency of the review queue at scale: GET review/next and POST a label, with 1,000,000 nuclei.

    .venv/bin/python benchmarks/review_latency.py                   # 1,000,000 nuclei in PostgreSQL
    .venv/bin/python benchmarks/review_latency.py --nuclei 100000 --repeat 50
    .venv/bin/python benchmarks/review_latency.py --keep            # leave the database for a rerun...
    .venv/bin/python benchmarks/review_latency.py --reuse           # ...and reuse it (no refill)
    .venv/bin/python benchmarks/review_latency.py --slides --nuclei 500000 --db-name nucleus_review_slides
                                                                    # two slides of 250,000 nuclei each
                                                                    # (slides use the cache: set REDIS_URL)

Creates its own PostgreSQL database (``--db-name``, default ``nucleus_review_bench`` on
``--server``, default postgres://postgres@127.0.0.1:5432), migrates it and fills it with COPY: one
project, two label sets (3 and 4 classes), two datasets of 1,000-nucleus images (every nucleus has a
ground-truth label in its own dataset's label set, 2 % of the first dataset's nuclei also a review in
the other label set), an active model version with a prediction per nucleus and label set (2,000,000
rows with uncertainty scores computed as mlcore does). Then it measures in-process with Django's test
Client (URL routing, middleware, token authentication, view, queries, JSON): a reviewer asks for the
next nucleus and saves a decision, over and over, for every strategy, while a second reviewer holds a
lease. Prints median and p95 per request kind and the plan of the queue query. The database is
dropped at the end only if this run created it (and ``--keep`` was not given); nothing else is touched.
Target: median under 50 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE_SIDE = 1024
PER_IMAGE = 1000
GRID = 32          # 32 x 32 slots of 32 px in a 1024 px tile
CHUNK = 50_000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------- database

def server_connection(server: str):
    import psycopg

    return psycopg.connect(f"{server.rstrip('/')}/postgres", autocommit=True)


def database_exists(server: str, name: str) -> bool:
    with server_connection(server) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(server: str, name: str) -> None:
    from psycopg import sql

    with server_connection(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: str, name: str) -> None:
    from psycopg import sql

    with server_connection(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ["DEBUG"] = "0"                     # no query log, production-like
    os.environ.setdefault("SECRET_KEY", "review-latency-benchmark")
    os.environ["SECURE_COOKIES"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


# ------------------------------------------------------------------------------------- filling

def columns(model) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


def copy_rows(table: str, cols: list[str], lines) -> int:
    """COPY text lines (already tab separated) into ``table``, in chunks."""
    from django.db import connection

    n = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor
        with raw.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for line in lines:
                buffer.write(line)
                n += 1
                if n % CHUNK == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
    return n


def octagon(cx: int, cy: int, r: int) -> str:
    points = [(cx + r, cy), (cx + r - 2, cy + r - 2), (cx, cy + r), (cx - r + 2, cy + r - 2), (cx - r, cy),
              (cx - r + 2, cy - r + 2), (cx, cy - r), (cx + r - 2, cy - r + 2)]
    return json.dumps(points, separators=(",", ":"))


def fill(n_nuclei: int, seed: int = 0, slides: bool = False) -> dict:
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from mlcore.uncertainty import uncertainty_scores
    from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, Nucleus
    from webapp.projects.models import Role
    from webapp.projects.operations import do_create_project, do_set_membership
    from webapp.training.models import ModelVersion, Prediction

    rng = np.random.default_rng(seed)
    users = get_user_model().objects
    owner = users.create_user("bench-owner", password="bench-owner-password")
    reviewers = [users.create_user(f"bench-reviewer-{k}", password="bench-password") for k in (1, 2)]
    project = do_create_project("Review benchmark", actor=owner)
    for reviewer in reviewers:
        do_set_membership(project, reviewer, Role.REVIEWER, actor=owner)
        Token.objects.get_or_create(user=reviewer)
    sets = []
    for name, n_classes in (("alpha", 3), ("beta", 4)):
        label_set = LabelSet.objects.create(project=project, name=name)
        LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=f"{name}-{i}",
                                                   color=f"#{(60 * i + 40) % 256:02x}70{(90 * i) % 256:02x}")
                                        for i in range(n_classes)])
        sets.append((label_set, n_classes))
    n_images = -(-n_nuclei // PER_IMAGE)
    half = n_images // 2 or 1
    datasets = [Dataset.objects.create(project=project, name=f"dataset-{k}", label_set=sets[k][0],
                                       format="slide" if slides else "seed", storage_dir=f"bench/{k}")
                for k in (0, 1)]
    if slides:
        # Each dataset one whole-slide image: its 1,000-nucleus tiles laid side by side in a square.
        side = math.ceil(math.sqrt(max(half, n_images - half)))
        images = Image.objects.bulk_create([
            Image(project=project, dataset=datasets[k], name=f"slide-{k}.svs", file="bench/none.png", mask_file="",
                  thumbnail_file="bench/none.jpg", width=side * IMAGE_SIDE, height=side * IMAGE_SIDE,
                  checksum=f"{k:064d}", slide_file=f"bench/slide-{k}.svs", slide_root="media", mpp=0.25,
                  nucleus_count=min(half * PER_IMAGE, n_nuclei) if k == 0 else n_nuclei - half * PER_IMAGE)
            for k in (0, 1)])
        image_ids = [images[0 if t < half else 1].pk for t in range(n_images)]
        offsets = [((t if t < half else t - half) % side * IMAGE_SIDE, (t if t < half else t - half) // side * IMAGE_SIDE)
                   for t in range(n_images)]
        instance_base = [(t if t < half else t - half) * PER_IMAGE for t in range(n_images)]
    else:
        images = Image.objects.bulk_create([
            Image(project=project, dataset=datasets[0 if i < half else 1], name=f"tile-{i:05d}", file="bench/none.png",
                  mask_file="bench/none.npy", thumbnail_file="bench/none.jpg", width=IMAGE_SIDE, height=IMAGE_SIDE,
                  checksum=f"{i:064d}", nucleus_count=min(PER_IMAGE, n_nuclei - i * PER_IMAGE))
            for i in range(n_images)], batch_size=2000)
        image_ids = [image.pk for image in images]
        offsets = [(0, 0)] * n_images
        instance_base = [0] * n_images
    for k, dataset in enumerate(datasets):
        count = sum(image.nucleus_count for image in images if image.dataset_id == dataset.pk)
        Dataset.objects.filter(pk=dataset.pk).update(image_count=(1 if slides else half) if k == 0 else
                                                     (1 if slides else n_images - half), nucleus_count=count)
    now = timezone.now().isoformat()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")

    # Nuclei: ids 1..N, 1,000 per image on a grid.
    say(f"COPY {n_nuclei:,} nuclei")

    def nucleus_lines():
        for i in range(n_nuclei):
            slot, tile = i % PER_IMAGE, i // PER_IMAGE
            cx = 16 + 32 * (slot % GRID) + offsets[tile][0]
            cy = 16 + 32 * (slot // GRID) + offsets[tile][1]
            r = 5 + i % 4
            yield (f"{i + 1}\t{image_ids[tile]}\t{instance_base[tile] + slot + 1}\t{cx - r}\t{cy - r}\t{cx + r + 1}\t"
                   f"{cy + r + 1}\t"
                   f"{cx}.0\t{cy}.0\t{int(3.1 * r * r)}\t{octagon(cx, cy, r)}\n")

    copy_rows(Nucleus._meta.db_table, ["id", "image_id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x",
                                       "centroid_y", "area", "outline"], nucleus_lines())

    # Ground truth in each nucleus's own label set; 2 % of dataset 0 reviewed in the other one.
    first_b = half * PER_IMAGE  # nuclei of dataset 1 start here (0-based)
    gt_classes = [rng.integers(0, n, size=n_nuclei) for _, n in sets]
    reviewed = np.arange(0, min(first_b, n_nuclei), 50)
    say(f"COPY {n_nuclei + len(reviewed):,} labels and current labels")
    label_cols = ["id", "nucleus_id", "label_set_id", "class_index", "source", "author_id", "model_version_id",
                  "previous_id", "client_id", "created_at"]
    current_cols = ["id", "nucleus_id", "label_set_id", "label_id", "class_index", "source"]

    def label_lines():
        for i in range(n_nuclei):
            k = 0 if i < first_b else 1
            yield f"{i + 1}\t{i + 1}\t{sets[k][0].pk}\t{gt_classes[k][i]}\tground_truth\t{owner.pk}\t\\N\t\\N\t\t{now}\n"
        for j, i in enumerate(reviewed):
            yield (f"{n_nuclei + j + 1}\t{i + 1}\t{sets[1][0].pk}\t{gt_classes[1][i]}\treview\t{reviewers[1].pk}\t"
                   f"\\N\t\\N\t\t{now}\n")

    def current_lines():
        for i in range(n_nuclei):
            k = 0 if i < first_b else 1
            yield f"{i + 1}\t{i + 1}\t{sets[k][0].pk}\t{i + 1}\t{gt_classes[k][i]}\tground_truth\n"
        for j, i in enumerate(reviewed):
            yield f"{n_nuclei + j + 1}\t{i + 1}\t{sets[1][0].pk}\t{n_nuclei + j + 1}\t{gt_classes[1][i]}\treview\n"

    copy_rows(Label._meta.db_table, label_cols, label_lines())
    copy_rows(CurrentLabel._meta.db_table, current_cols, current_lines())

    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="bench/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True,
                                          label_sets=[{"name": s.name} for s, _ in sets])
    say(f"COPY {2 * n_nuclei:,} predictions")
    pred_cols = ["nucleus_id", "label_set_id", "model_version_id", "class_index", "probability", "base_probs",
                 "mlp_probs", "least_confidence", "margin", "entropy", "disagreement", "sliver"]

    def prediction_lines():  # every nucleus fills its slot well inside the tile: none is a sliver
        for label_set, n_classes in sets:
            for start in range(0, n_nuclei, CHUNK):
                size = min(CHUNK, n_nuclei - start)
                base = rng.dirichlet(np.ones(n_classes) * 0.7, size=size)
                mlp = rng.dirichlet(np.ones(n_classes) * 0.7, size=size)
                probs = (base + mlp) / 2
                scores = uncertainty_scores(probs, base, mlp)
                top = probs.argmax(axis=1)
                base_text = [",".join(f"{v:.4f}" for v in row) for row in base.tolist()]
                mlp_text = [",".join(f"{v:.4f}" for v in row) for row in mlp.tolist()]
                lc, mg, en, dis = (scores[k].tolist() for k in ("least_confidence", "margin", "entropy",
                                                                 "disagreement"))
                top_p = probs[np.arange(size), top].tolist()
                top_l = top.tolist()
                for r in range(size):
                    yield (f"{start + r + 1}\t{label_set.pk}\t{version.pk}\t{top_l[r]}\t{top_p[r]:.5f}\t"
                           f"[{base_text[r]}]\t[{mlp_text[r]}]\t{lc[r]:.6f}\t{mg[r]:.6f}\t{en[r]:.6f}\t{dis[r]:.6f}\tf\n")

    copy_rows(Prediction._meta.db_table, pred_cols, prediction_lines())
    with connection.cursor() as cursor:
        for model in (Nucleus, Label, CurrentLabel, Prediction):
            table = model._meta.db_table
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"(SELECT COALESCE(MAX(id), 1) FROM {table}))")
        say("VACUUM ANALYZE")  # what autovacuum would do: statistics and the visibility map
        cursor.execute("VACUUM ANALYZE")
    return {"project": project.pk}


# ------------------------------------------------------------------------------------- measuring

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(name: str, times: list[float], cpu: list[float] | None = None) -> str:
    ms = [t * 1000 for t in times]
    line = (f"{name:<46} n={len(ms):>4}  median {statistics.median(ms):7.1f} ms  p95 {percentile(ms, 0.95):7.1f} ms"
            f"  max {max(ms):7.1f} ms")
    if cpu:
        line += f"  (web process CPU median {statistics.median(cpu) * 1000:5.1f} ms)"
    return line


class Timer:
    """Wall time, and the CPU time of this (the web) process, of one request."""

    def __init__(self, walls: list, cpus: list):
        self.walls, self.cpus = walls, cpus

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.walls.append(time.perf_counter() - self.wall)
        self.cpus.append(time.process_time() - self.cpu)


def measure(repeat: int) -> None:
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from webapp.datasets.models import LabelSet, Nucleus
    from webapp.projects.models import Project
    from webapp.review import queue
    from webapp.training.models import ModelVersion

    project = Project.objects.get(name="Review benchmark")
    tokens = [Token.objects.get(user__username=f"bench-reviewer-{k}").key for k in (1, 2)]
    clients = [Client(HTTP_AUTHORIZATION=f"Token {t}") for t in tokens]
    reviewer, other = clients
    say(f"{Nucleus.objects.filter(image__project=project).count():,} nuclei in the project; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    base = f"/api/projects/{project.pk}/review"
    lines = []
    for label_set, strategy, extra in (("beta", "entropy", ""), ("beta", "margin", ""),
                                       ("beta", "least_confidence", ""), ("beta", "disagreement", ""),
                                       ("alpha", "entropy", ""), ("beta", "random", ""),
                                       ("beta", "entropy", "&include_labelled=1")):
        query = f"label_set={label_set}&strategy={strategy}{extra}"
        other.get(f"{base}/next/?{query}")  # a second reviewer holds a lease meanwhile
        times = {"next": ([], []), "save": ([], [])}
        for i in range(repeat + 5):
            warm = i < 5
            with Timer(*(([], []) if warm else times["next"])):
                response = reviewer.get(f"{base}/next/?{query}")
            assert response.status_code == 200, (response.status_code, response.content[:300])
            item = response.json()
            predicted = item["prediction"]["class_name"] if item["prediction"] else item["label_set"]["classes"][0]["name"]
            body = json.dumps({"label_set": label_set, "class_name": predicted, "version": item["version"],
                               "client_id": f"bench-{strategy}-{label_set}{extra}-{i}-{time.time_ns()}"})
            with Timer(*(([], []) if warm else times["save"])):
                saved = reviewer.post(f"/api/nuclei/{item['nucleus']['id']}/labels/", body,
                                      content_type="application/json")
            assert saved.status_code == 201, (saved.status_code, saved.content[:300])
        lines.append(report(f"GET next ({label_set}, {strategy}{extra})", *times["next"]))
        lines.append(report(f"POST label ({label_set}, {strategy}{extra})", *times["save"]))
        say(lines[-2])
        say(lines[-1])
    # The reload path: the reviewer's held lease is handed back.
    held = ([], [])
    reviewer.get(f"{base}/next/?label_set=beta")
    for _ in range(max(20, repeat // 4)):
        with Timer(*held):
            reviewer.get(f"{base}/next/?label_set=beta")
    lines.append(report("GET next (reload: held lease)", *held))
    progress, gallery = ([], []), ([], [])
    for _ in range(10):
        with Timer(*progress):
            assert reviewer.get(f"{base}/progress/?label_set=beta").status_code == 200
        with Timer(*gallery):
            assert reviewer.get(f"{base}/gallery/?label_set=beta&class_name=beta-1").status_code == 200
    lines.append(report("GET progress (beta, exact counts)", *progress))
    lines.append(report("GET gallery (beta, one class, 48 items)", *gallery))

    # The plan of the queue query (entropy, beta).
    from django.utils import timezone

    from django.contrib.auth import get_user_model

    spec = queue.QueueSpec(project=project, label_set=LabelSet.objects.get(project=project, name="beta"),
                           user=get_user_model().objects.get(username="bench-reviewer-1"), strategy="entropy",
                           version=ModelVersion.objects.get(project=project, is_active=True))
    from django.db import transaction

    from webapp.core import sql
    from webapp.review.models import ReviewLease, ReviewSkip
    from webapp.review.queue import Prediction, free_conditions, queue_frontier

    now = timezone.now()
    free, free_params = free_conditions(spec, "p.nucleus_id", now)
    frontier = queue_frontier(spec)
    touched = sorted(set(ReviewLease.objects.filter(label_set=spec.label_set, decided=False)
                         .values_list("nucleus_id", flat=True))
                     | set(ReviewSkip.objects.filter(label_set=spec.label_set).values_list("nucleus_id", flat=True)))
    plans = []
    for name, extra, extra_params in (
            ("touched nuclei above the frontier",
             f" AND p.nucleus_id IN ({', '.join(['%s'] * len(touched)) or 'NULL'}) AND p.entropy > %s", [*touched, frontier]),
            ("scan down from the frontier", " AND p.entropy <= %s", [frontier])):
        statement = (f"SELECT p.nucleus_id FROM {sql.table(Prediction)} p WHERE p.model_version_id = %s "
                     f"AND p.label_set_id = %s AND {free}{extra} ORDER BY p.entropy DESC, p.id DESC LIMIT 8"
                     + sql.lock_clause(of="p", no_key=True, skip_locked=True))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN ANALYZE {statement}",
                           [spec.version.pk, spec.label_set.pk, *free_params, *extra_params])
            plans.append(f"-- {name} ({len(touched)} touched nuclei):\n" + "\n".join(r[0] for r in cursor.fetchall()))
    plan = "\n\n".join(plans)
    print("\nPlans of the queue queries (entropy, beta):\n" + plan + "\n", flush=True)
    print(f"Summary (in-process Django test Client, PostgreSQL; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs at the end):")
    for line in lines:
        print("  " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nuclei", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="measured requests per strategy")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--db-name", default="nucleus_review_bench")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--slides", action="store_true", help=(
        "the nuclei of each dataset in one whole-slide image (issue 17) instead of 1,000-nucleus tiles"))
    parser.add_argument("--reuse", action="store_true", help="use an existing benchmark database as it is")
    options = parser.parse_args()

    existed = database_exists(options.server, options.db_name)
    if existed and not options.reuse:
        print(f"database {options.db_name!r} already exists: pass --reuse to measure on it, or another --db-name "
              "(this script drops only databases it created)", file=sys.stderr)
        return 2
    if not existed:
        say(f"creating database {options.db_name}")
        create_database(options.server, options.db_name)
    created = not existed
    try:
        setup_django(f"{options.server.rstrip('/')}/{options.db_name}")
        from django.core.management import call_command

        from webapp.projects.models import Project

        if created:
            say("migrating")
            call_command("migrate", verbosity=0)
        if not Project.objects.filter(name="Review benchmark").exists():
            started = time.perf_counter()
            fill(options.nuclei, slides=options.slides)
            say(f"filled in {time.perf_counter() - started:.0f} s")
        measure(options.repeat)
    finally:
        if created and not options.keep:
            from django.db import connections

            connections.close_all()
            say(f"dropping database {options.db_name}")
            drop_database(options.server, options.db_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
