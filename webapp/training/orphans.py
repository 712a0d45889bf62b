"""This app's files in the sweep of what killed jobs left behind (:mod:`webapp.jobs.sweep`, which sits below
this app: registered in TrainingConfig.ready):

- ``DATA_DIR/cache/crops/.crops-*`` (host-local, not media): a crops cache entry being written; kept while
  any training runs.
"""

from __future__ import annotations

from webapp.jobs.models import Job
from webapp.jobs.sweep import Sweep


def sweep_half_written_crops(run: Sweep) -> None:
    """The crops cache is per host (``DATA_DIR/cache/crops``, derived from the images, not media): a killed
    training leaves a ``.crops-*`` entry half-written there. Swept only while no training runs, as one of
    them may be writing it."""
    from .runner import crop_cache_dir  # the runner loads torch: not at start-up

    if Job.objects.filter(kind=Job.Kind.TRAIN, state=Job.State.RUNNING).exists():
        return
    for path in sorted(crop_cache_dir().glob(".crops-*")):
        try:
            if path.stat().st_mtime < run.oldest:
                path.unlink()
                run.removed.append(f"cache/crops/{path.name}")
        except FileNotFoundError:  # another sweep, or the training finished writing it
            continue
