"""This app's files in the sweep of what killed jobs left behind (:mod:`webapp.jobs.sweep`, which sits below
this app: registered in TrainingConfig.ready):

- ``DATA_DIR/cache/crops/.crops-*`` (host-local, not media): a crops cache entry being written; kept while
  any training runs.
- ``DATA_DIR/cache/crops/crops-slide-*``: the training crops of a slide whose image row is gone (its dataset or
  project was deleted): up to SLIDE_TRAINING_MAX_NUCLEI crops, half a gigabyte, that no training reads again.
"""

from __future__ import annotations

from webapp.jobs.models import Job
from webapp.jobs.sweep import Sweep


def sweep_half_written_crops(run: Sweep) -> None:
    """The crops cache is per host (``DATA_DIR/cache/crops``, derived from the images, not media): a killed
    training leaves a ``.crops-*`` entry half-written there, and a deleted slide leaves its entry. Swept only
    while no training runs, as one of them may be writing or reading it."""
    from .runner import crop_cache_dir  # the runner loads torch: not at start-up

    if Job.objects.filter(kind=Job.Kind.TRAIN, state=Job.State.RUNNING).exists():
        return
    from mlcore.infer import slide_crops_cache_prefix
    from webapp.datasets.models import Image

    from .slide_data import cache_key

    slides = Image.objects.exclude(slide_file="").values_list("checksum", "pk")
    live = {slide_crops_cache_prefix(cache_key(checksum, pk)) for checksum, pk in slides.iterator()}
    width = len(slide_crops_cache_prefix(""))   # every prefix is as long
    gone = [path for path in crop_cache_dir().glob("crops-slide-*.npy") if path.name[:width] not in live]
    for path in sorted(crop_cache_dir().glob(".crops-*")) + sorted(gone):
        try:
            if path.stat().st_mtime < run.oldest:
                path.unlink()
                run.removed.append(f"cache/crops/{path.name}")
        except FileNotFoundError:  # another sweep, or the training finished writing it
            continue
