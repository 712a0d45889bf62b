"""Where the CPU of an import goes: a profile to read beside import_speed.py, whose wall-clock figures need a
quiet machine. CPU time is far less sensitive to other work on the machine than wall time.

    python benchmarks/import_profile.py [--database postgres://postgres@127.0.0.1:5432/nucleus_profile]
                                        [--synthetic-images N] [--processes P] [--repeats R]

Imports the real CoNSeP sample (or N synthetic 1000 x 1000 images of 1,000 nuclei) in this process with
do_import_dataset, as the worker does after unpacking, and prints per import: wall time, CPU seconds of
this process (the rows and the writer thread), of its preparing workers and of the PostgreSQL server
process serving it, each also per nucleus. Then, in this process, the CPU per image of each step of
preparing an image (reading, checksum, files, geometry and outlines). The database is created afresh.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def backend_cpu_s(connection) -> float | None:
    """CPU seconds of the PostgreSQL server process of this connection (same machine only)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step_profile(reader, folder_root: Path, count: int) -> dict[str, float]:
    """CPU seconds per image of each step of preparing.prepare_image, over the first ``count`` images."""
    from webapp.datasets import preparing

    steps: dict[str, float] = {}
    wrapped = {"read (reader.read)": (reader, "read"), "checksum": (preparing, "pixel_checksum"),
               "geometry and outlines": (preparing, "geometry_and_outlines"),
               "image, mask and thumbnail files": (preparing, "save_image_files")}
    originals = {}
    for label, (owner, name) in wrapped.items():
        function = originals[label] = getattr(owner, name)

        def timed(*args, _function=function, _label=label, **kwargs):
            started = time.process_time()
            try:
                return _function(*args, **kwargs)
            finally:
                steps[_label] = steps.get(_label, 0.0) + time.process_time() - started
        setattr(owner, name, timed)
    try:
        folder = folder_root / uuid.uuid4().hex
        for sub in ("images", "masks", "thumbs"):
            (folder / sub).mkdir(parents=True)
        started = time.process_time()
        for index in range(count):
            preparing.prepare_image(reader.read(index), folder, True)
        total = time.process_time() - started
    finally:
        for label, (owner, name) in wrapped.items():
            setattr(owner, name, originals[label])
    accounted = sum(steps.values())
    steps = {label: seconds / count for label, seconds in steps.items()}
    steps["the rest (rows as text...)"] = (total - accounted) / count
    steps["total"] = total / count
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/nucleus_profile")
    parser.add_argument("--synthetic-images", type=int, default=0, help="0: the real CoNSeP sample")
    parser.add_argument("--processes", type=int, default=0, help="IMPORT_PROCESSES (0: one per core)")
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="import-profile-"))
    try:
        return profile(options, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def profile(options, scratch: Path) -> int:
    if options.database.startswith("postgres"):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from import_speed import recreate_postgres_database

        recreate_postgres_database(options.database)
    os.environ.update(DATABASE_URL=options.database, DATA_DIR=str(scratch), DJANGO_SETTINGS_MODULE="webapp.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from mlcore.readers import open_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.projects.operations import do_create_project

    call_command("migrate", verbosity=0)
    settings.IMPORT_PROCESSES = options.processes
    if options.synthetic_images:
        from mlcore.synthetic import generate_dataset

        folder = generate_dataset(scratch / "synthetic", format="seed", n_images=options.synthetic_images,
                                  nuclei_per_image=1000, class_names=["a", "b", "c", "d"], size=(1000, 1000),
                                  seed=3)
        title, format = f"synthetic {options.synthetic_images} x 1000 (seed)", "seed"
    elif SHARED.is_dir():
        folder, title, format = SHARED / "consep", "CoNSeP sample (hovernet)", "hovernet"
    else:
        sys.exit(f"{SHARED} not found: give --synthetic-images N")
    user = get_user_model().objects.create_user("profile")
    print(f"{title}; database: {connection.vendor}; load average before: {os.getloadavg()[0]:.1f}")
    print("| run | nuclei | wall s | nuclei/s | CPU s: importing process | preparing workers | database server | "
          "µs per nucleus: importing | workers | server |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in range(1, options.repeats + 1):
        project = do_create_project(f"profile {run}", actor=user)
        connection.ensure_connection()
        server_before, times_before, started = backend_cpu_s(connection), os.times(), time.perf_counter()
        dataset = do_import_dataset(project, name="profiled", format=format, path=folder, actor=user)
        wall = time.perf_counter() - started
        times_after, server_after = os.times(), backend_cpu_s(connection)
        own = times_after.user + times_after.system - times_before.user - times_before.system
        workers = (times_after.children_user + times_after.children_system - times_before.children_user
                   - times_before.children_system)
        server = None if server_before is None or server_after is None else server_after - server_before
        n = dataset.nucleus_count
        server_text = "?" if server is None else f"{server:.2f}"
        server_per = "?" if server is None else f"{1e6 * server / n:.0f}"
        print(f"| {run} | {n} | {wall:.2f} | {n / wall:,.0f} | {own:.2f} | {workers:.2f} | {server_text} | "
              f"{1e6 * own / n:.0f} | {1e6 * workers / n:.0f} | {server_per} |")
    reader = open_dataset(format, folder, name="profiled", label_set_name="profiled", labelled=True)
    count = min(len(reader), 50 if options.synthetic_images else 432)
    steps = step_profile(reader, Path(settings.MEDIA_ROOT) / "profile-steps", count)
    nuclei_per_image = n / len(reader)
    print(f"\npreparing one image, CPU ms per image in this process (mean of {count}; "
          f"{nuclei_per_image:.0f} nuclei per image):")
    for label, seconds in steps.items():
        print(f"  {label:34s} {1e3 * seconds:8.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
