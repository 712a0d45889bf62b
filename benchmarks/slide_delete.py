"""How long a big slide's import and deletion hold the database's write lock, on SQLite and PostgreSQL.

    python benchmarks/slide_delete.py [--nuclei 100000] [--database sqlite postgres://postgres@127.0.0.1:5432/slide_delete_bench]
                                      [--slides-dir DIR] [--profile]

Per database (each in a process of its own): a benchmark slide (mlcore.slide_fixtures, real CoNSeP tiles when
/work/shared/data is there, written once into --slides-dir) is imported by the code an import job runs
(webapp.datasets.slide_import.import_slide); then every nucleus gets a prediction, and 2,000 of them a review
(label, current label, decided lease), with some skips, undos and settled conflicts, as a reviewed slide has;
then the dataset is deleted by the code the deletion job runs (webapp.datasets.operations.do_delete_dataset).

Meanwhile a second connection writes one row to a table of its own every 20 ms, as reviewers' saves would:
"longest write wait" is the longest one of those writes took. On SQLite, which lets one connection write at a
time, that is how long the import or the deletion held the write lock; on PostgreSQL other rows' writes do not
wait. On SQLite it then prints the file's size after the deletion and after the periodic sweep's vacuum
(webapp.core.sqlite_space), when this checkout has it. ``--profile``: where the deletion's time goes (SQL time by
statement kind and table, and the slowest Python functions). Nothing here is asserted: these are figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

REVIEWED = 2_000


class WriteProbe:
    """Writes one row every 20 ms on a connection of its own; ``longest`` is the slowest write's seconds."""

    def __init__(self, connect):
        self._connect = connect
        self.longest = 0.0
        self.writes = 0

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        connection = self._connect()
        try:
            while not self._stop.wait(0.02):
                started = time.perf_counter()
                connection.execute("INSERT INTO bench_probe (at) VALUES (%s)" if hasattr(connection, "pgconn")
                                   else "INSERT INTO bench_probe (at) VALUES (?)", (time.time(),))
                connection.commit()
                self.longest = max(self.longest, time.perf_counter() - started)
                self.writes += 1
        finally:
            connection.close()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def probe_connection(database: str):
    """A plain driver connection to the benchmark's database, beside Django's, with the probe's table."""
    if database.startswith("postgres"):
        import psycopg

        connection = psycopg.connect(database)
        connection.execute("CREATE TABLE IF NOT EXISTS bench_probe (id serial PRIMARY KEY, at double precision)")
    else:
        import sqlite3

        from django.conf import settings

        connection = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=600)
        connection.execute("CREATE TABLE IF NOT EXISTS bench_probe (id integer PRIMARY KEY, at real)")
    connection.commit()
    return connection


class SqlTimes:
    """SQL time by statement kind and table (a connection.execute_wrapper)."""

    def __init__(self):
        self.seconds: dict[str, list] = {}

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            words = sql.replace('"', "").split()
            kind = words[0].upper() if words else "?"
            table = next((words[i + 1] for i, w in enumerate(words[:-1])
                          if w.upper() in ("FROM", "UPDATE", "INTO")), "?")
            entry = self.seconds.setdefault(f"{kind} {table}", [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    def report(self) -> str:
        rows = sorted(self.seconds.items(), key=lambda item: -item[1][1])
        return "\n".join(f"    {seconds:8.2f} s {count:7d} x  {what}" for what, (count, seconds) in rows[:14])


def add_review_rows(dataset, user) -> dict:
    """A prediction of every nucleus and REVIEWED reviewed nuclei (labels, leases, skips, undos, settlements),
    written in bulk (the benchmark is the deletion, not these writes)."""
    from django.db import transaction
    from django.utils import timezone

    from webapp.datasets import bulk
    from webapp.datasets.models import CurrentLabel, Label, Nucleus
    from webapp.review.models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo
    from webapp.training.models import ModelVersion, Prediction

    label_set = dataset.label_set
    now = timezone.now()
    version = ModelVersion.objects.create(project=dataset.project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=now, is_active=True)
    classes = label_set.classes.count()
    probs = [1.0 / classes] * classes
    with transaction.atomic():
        nucleus_ids = list(Nucleus.objects.filter(image__dataset=dataset).order_by("id").values_list("id", flat=True))
        bulk.insert_rows(Prediction, ["nucleus_id", "label_set_id", "model_version_id", "class_index", "probability",
                                      "base_probs", "mlp_probs", "least_confidence", "margin", "entropy",
                                      "disagreement", "sliver"],
                         ((pk, label_set.pk, version.pk, pk % classes, 0.5, probs, probs, 0.5, 0.1, 0.9, 0.05, False)
                          for pk in nucleus_ids))
        reviewed = nucleus_ids[::max(1, len(nucleus_ids) // REVIEWED)][:REVIEWED]
        current = dict(CurrentLabel.objects.filter(nucleus_id__in=reviewed, label_set=label_set)
                       .values_list("nucleus_id", "label_id"))
        labels = Label.objects.bulk_create(
            [Label(nucleus_id=pk, label_set=label_set, class_index=(pk + 1) % classes, source="review", author=user,
                   previous_id=current.get(pk)) for pk in reviewed])
        CurrentLabel.objects.filter(nucleus_id__in=reviewed, label_set=label_set).delete()
        CurrentLabel.objects.bulk_create([CurrentLabel(nucleus_id=label.nucleus_id, label_set=label_set, label=label,
                                                       class_index=label.class_index, source="review")
                                          for label in labels])
        ReviewLease.objects.bulk_create([ReviewLease(nucleus_id=pk, label_set=label_set, user=user, expires_at=now,
                                                     claimed_at=now, decided=True) for pk in reviewed])
        ReviewSkip.objects.bulk_create([ReviewSkip(nucleus_id=pk, label_set=label_set, user=user, skipped_at=now)
                                        for pk in nucleus_ids[1::97][:200]])
        ReviewUndo.objects.bulk_create([ReviewUndo(label=label, restored_id=current.get(label.nucleus_id), actor=user)
                                        for label in labels[::20]])
        ConflictSettlement.objects.bulk_create([ConflictSettlement(label=label, nucleus_id=label.nucleus_id,
                                                                   label_set=label_set, curator=user)
                                                for label in labels[1::20]])
    return {"predictions": len(nucleus_ids), "reviews": len(labels)}


def sqlite_space() -> tuple[float, int, int] | None:
    """(file MB with its WAL, free pages, pages) of the SQLite database, or None on PostgreSQL."""
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "sqlite":
        return None
    name = Path(settings.DATABASES["default"]["NAME"])
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("PRAGMA freelist_count")
        free = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
    size = name.stat().st_size + sum(p.stat().st_size for p in name.parent.glob(name.name + "-wal"))
    return size / 2**20, free, pages


def run_one(database: str, count: int, slides_dir: Path, profile: bool) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="slide-delete-bench-"))
    if database.startswith("postgres"):
        from import_speed import recreate_postgres_database

        recreate_postgres_database(database)
        url = database
    else:
        url = f"sqlite:///{scratch / 'db.sqlite3'}"
    os.environ.update(DATABASE_URL=url, DATA_DIR=str(scratch), DJANGO_SETTINGS_MODULE="webapp.settings",
                      SLIDES_ROOT=str(slides_dir))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from mlcore.slide_fixtures import build_benchmark_slide
    from webapp.datasets.operations import do_delete_dataset
    from webapp.datasets.slide_import import import_slide
    from webapp.projects.operations import do_create_project

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    folder = slides_dir / f"n{count}"
    slide = folder / "benchmark.tif"
    if not (folder / "benchmark.geojson").is_file():
        build_benchmark_slide(folder, count, shared_data=SHARED if SHARED.is_dir() else None, with_mask=False)
    project = do_create_project("bench", actor=user)
    probe_connection(url).close()
    connect = lambda: probe_connection(url)  # noqa: E731

    with WriteProbe(connect) as importing:
        started = time.perf_counter()
        dataset = import_slide(project, name="slide", slide_source=slide.resolve(), slide_root="slides",
                               slide_name=slide.name, detections=folder / "benchmark.geojson",
                               detections_name="benchmark.geojson", actor=user)
        import_s = time.perf_counter() - started
    added = add_review_rows(dataset, user)
    space_full = sqlite_space()

    timer = SqlTimes()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    with WriteProbe(connect) as deleting, connection.execute_wrapper(timer):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        summary = do_delete_dataset(dataset)
        if profiler:
            profiler.disable()
        delete_s = time.perf_counter() - started
    line = (f"{connection.vendor:>10} {summary['nuclei']:>9,} {import_s:>9.1f} {importing.longest:>10.1f} "
            f"{added['predictions']:>9,} {added['reviews']:>7,} {delete_s:>9.1f} {deleting.longest:>10.1f}")
    space_deleted = sqlite_space()
    if space_deleted is not None:
        line += f" {space_full[0]:>8.0f} {space_deleted[0]:>8.0f} {100 * space_deleted[1] / space_deleted[2]:>6.0f}%"
        try:
            from webapp.core import sqlite_space as reclaim
        except ImportError:
            line += "        -"
        else:
            started = time.perf_counter()
            reclaim.reclaim_free_pages()
            line += f" {sqlite_space()[0]:>8.0f} ({time.perf_counter() - started:.1f} s)"
    print(line, flush=True)
    if profile:
        import io
        import pstats

        print("  the deletion's SQL, by statement kind and table:")
        print(timer.report())
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
        print("\n".join("    " + row for row in text.getvalue().splitlines()[6:30] if row.strip()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nuclei", type=int, default=100_000)
    parser.add_argument("--database", nargs="+",
                        default=["sqlite", "postgres://postgres@127.0.0.1:5432/slide_delete_bench"])
    parser.add_argument("--slides-dir", type=Path, default=Path(tempfile.gettempdir()) / "slide-bench")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.slides_dir = options.slides_dir.resolve()
    options.slides_dir.mkdir(parents=True, exist_ok=True)
    if options.one:
        return run_one(options.one, options.nuclei, options.slides_dir, options.profile)
    print(f"tiles: {'real CoNSeP' if SHARED.is_dir() else 'synthetic'}; {os.cpu_count()} CPUs; seconds; "
          "longest write wait: of a write every 20 ms on another connection; MB: the SQLite file with its WAL")
    print(f"{'database':>10} {'nuclei':>9} {'import s':>9} {'imp wait':>10} {'predicted':>9} {'reviews':>7} "
          f"{'delete s':>9} {'del wait':>10} {'MB full':>8} {'MB del':>8} {'free':>7} {'MB swept':>8}")
    failed = 0
    for database in options.database:
        command = [sys.executable, __file__, "--one", database, "--nuclei", str(options.nuclei),
                   "--slides-dir", str(options.slides_dir)] + (["--profile"] if options.profile else [])
        failed |= subprocess.call(command)
    return failed


if __name__ == "__main__":
    sys.exit(main())
