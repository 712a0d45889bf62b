"""Remove what killed jobs left in the media folder: the periodic sweep (beat) and the per-job clean-up.

A job works in folders of its own, and removes them itself when it fails or is cancelled. A job whose
process was killed (SIGKILL, out of memory, a lost machine) runs no clean-up code, so whatever it was
writing stays behind. These are found by what the database refers to, never by guessing:

- ``staging/<id>``: an upload waiting for its import; kept while a queued or running import names it;
- ``projects/<p>/datasets/<id>``: an imported dataset's files; kept while a Dataset row names it, or while
  an import of that project is running (its rows are not committed yet);
- ``projects/<p>/inference/<id>``: an inference's inputs and outputs; kept while a job that did not fail
  names it (a succeeded one's files stay downloadable);
- ``scratch/<id>``: a training's temporary folder; kept while any training runs.

Everything younger than ``GRACE`` is kept too: an upload is staged a moment before its job row exists.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings

from .models import Job

logger = logging.getLogger(__name__)
GRACE = timedelta(hours=1)
UNFINISHED = (Job.State.QUEUED, Job.State.RUNNING)


def remove_job_folders(job: Job) -> None:
    """The folders a job of this kind works in that are useless once it failed or was cancelled: its upload's
    staging folder, an inference's folder. (A dataset folder is removed by the import itself, or by the
    sweep when the import was killed.)"""
    media = Path(settings.MEDIA_ROOT)
    for key in ("staging", "folder"):
        relative = (job.params or {}).get(key)
        if relative and _is_inside(media / relative, media):
            shutil.rmtree(media / relative, ignore_errors=True)


def sweep_orphans(now: float | None = None) -> list[str]:
    """Remove the orphaned folders described above; returns their paths relative to MEDIA_ROOT."""
    from webapp.datasets.models import Dataset

    media = Path(settings.MEDIA_ROOT)
    oldest = (now or time.time()) - GRACE.total_seconds()
    removed: list[str] = []

    def sweep(folders, keep) -> None:
        for folder in folders:
            relative = folder.relative_to(media).as_posix()
            if folder.is_dir() and folder.stat().st_mtime < oldest and not keep(relative, folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(relative)

    unfinished_imports = Job.objects.filter(kind=Job.Kind.IMPORT, state__in=UNFINISHED)
    staged = {job.params.get("staging") for job in unfinished_imports.only("params")}
    sweep(_children(media / "staging"), lambda relative, folder: relative in staged)

    stored = set(Dataset.objects.values_list("storage_dir", flat=True))
    importing = set(unfinished_imports.filter(state=Job.State.RUNNING).values_list("project_id", flat=True))
    sweep(_children(media / "projects", "*/datasets/*"),
          lambda relative, folder: relative in stored or _project_id(folder) in importing)

    inferring = {job.params.get("folder") for job in Job.objects.filter(kind=Job.Kind.INFER).exclude(
        state__in=(Job.State.FAILED, Job.State.CANCELLED)).only("params")}
    sweep(_children(media / "projects", "*/inference/*"), lambda relative, folder: relative in inferring)

    training = Job.objects.filter(kind=Job.Kind.TRAIN, state=Job.State.RUNNING).exists()
    sweep(_children(media / "scratch"), lambda relative, folder: training)
    if removed:
        logger.info("removed %d orphaned folders: %s", len(removed), ", ".join(removed[:20]))
    return removed


def _children(root: Path, pattern: str = "*") -> list[Path]:
    return sorted(root.glob(pattern)) if root.is_dir() else []


def _project_id(folder: Path) -> int | None:
    try:
        return int(folder.parent.parent.name)
    except ValueError:
        return None


def _is_inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return False
