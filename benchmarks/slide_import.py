"""Whole-slide import and classification in the web app: a benchmark slide (mlcore.slide_fixtures, real
CoNSeP tiles when /work/shared/data is there) registered under SLIDES_ROOT and imported into PostgreSQL by
the code an import job runs (webapp.datasets.slide_import.import_slide), then classified by the code a slide
prediction job runs (webapp.training.runner.predict_slide, the small CPU backbone, untrained weights: the
speed is the figure, not the classes); then the training crops of its labelled nuclei are cut as a training
cuts them (webapp.training.slide_data, up to SLIDE_TRAINING_MAX_NUCLEI, the default crops, no cache).

    python benchmarks/slide_import.py [--nuclei 100000 500000] [--database postgres://.../slide_bench]
                                      [--slides-dir DIR] [--no-infer]

Prints, per slide size: the import's seconds and nuclei/s, the prediction's seconds and nuclei/s, the
training crops' nuclei, seconds and nuclei/s, and the process's peak resident memory during each (sampled every 50 ms from /proc/self/status, above the RSS
before it began): flat in the number of nuclei is the aim (issue 17: well under 2 GB). Slides are written
once into --slides-dir and reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """The highest RSS seen while the block runs."""

    def __enter__(self):
        self.start = rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nuclei", type=int, nargs="+", default=[100_000])
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/slide_bench")
    parser.add_argument("--slides-dir", type=Path, default=Path(tempfile.gettempdir()) / "slide-bench")
    parser.add_argument("--no-infer", action="store_true", help="import only")
    options = parser.parse_args()

    from import_speed import recreate_postgres_database

    scratch = Path(tempfile.mkdtemp(prefix="slide-bench-"))
    if options.database.startswith("postgres"):
        recreate_postgres_database(options.database)
    options.slides_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(DATABASE_URL=options.database, DATA_DIR=str(scratch), DJANGO_SETTINGS_MODULE="webapp.settings",
                      SLIDES_ROOT=str(options.slides_dir))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from mlcore.checkpoint import save_checkpoint, load_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.slide_fixtures import build_benchmark_slide
    from webapp.datasets.slide_import import import_slide
    from webapp.projects.operations import do_create_project
    from webapp.training.models import ModelVersion
    from webapp.training.runner import predict_slide, project_label_sets, table_names
    from webapp.training.slide_data import labelled_slides, slide_training_data

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench")
    shared = SHARED if SHARED.is_dir() else None
    print(f"tiles: {'real CoNSeP' if shared else 'synthetic'}; database: {options.database.rsplit('/', 1)[-1]}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'nuclei':>9} {'import s':>9} {'import n/s':>11} {'import +RSS MB':>15} {'infer s':>8} {'infer n/s':>10} "
          f"{'infer +RSS MB':>14} {'train crops':>12} {'crops s':>8} {'crops n/s':>10} {'crops +RSS MB':>14}")
    for count in options.nuclei:
        folder = options.slides_dir / f"n{count}"
        slide = folder / "benchmark.tif"
        if not slide.is_file():
            build_benchmark_slide(folder, count, shared_data=shared, with_mask=False)
        project = do_create_project(f"bench {count} {time.time()}", actor=user)
        with PeakRss() as memory:
            started = time.perf_counter()
            dataset = import_slide(project, name="slide", slide_source=slide.resolve(), slide_root="slides",
                                   slide_name=slide.name, detections=folder / "benchmark.geojson",
                                   detections_name="benchmark.geojson", actor=user)
            import_s = time.perf_counter() - started
        nuclei = dataset.nucleus_count
        line = f"{nuclei:>9,} {import_s:>9.1f} {nuclei / import_s:>11,.0f} {memory.peak - memory.start:>15.0f}"
        if not options.no_infer:
            sets = [s for _, s in project_label_sets(project)]
            model = CrossTrainedModel(sets, "small", {})
            path = Path(settings.MEDIA_ROOT) / "models" / f"bench-{project.pk}.pt"
            save_checkpoint(path, model, "sparse", 0, True, TrainConfig())
            version = ModelVersion.objects.create(project=project, number=1, checkpoint_file=str(
                path.relative_to(settings.MEDIA_ROOT)), data_snapshot_at=timezone.now(), is_active=True)
            model = load_checkpoint(path).model.eval()
            rows = {row.name: row for row, _ in project_label_sets(project)}
            with PeakRss() as memory:
                result = predict_slide(version, model, dataset.images.get(), rows, lambda *a, **k: None,
                                       lambda: False)
            line += (f" {result['seconds']:>8.1f} {result['nuclei_per_s']:>10,.0f} "
                     f"{memory.peak - memory.start:>14.0f}")
            slides = labelled_slides(project)
            with PeakRss() as memory:
                started = time.perf_counter()
                data = slide_training_data(slides, set(rows), TrainConfig().crop_spec, cache_dir=None,
                                           split_names=table_names([image for image, _ in slides]))
                crops_s = time.perf_counter() - started
            taken = sum(data.nuclei.values())
            line += (f" {taken:>12,} {crops_s:>8.1f} {taken / crops_s:>10,.0f} "
                     f"{memory.peak - memory.start:>14.0f}")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
