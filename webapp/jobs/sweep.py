"""Remove what killed jobs left in the media folder: the periodic sweep (beat) and the per-job clean-up.

A job works in folders of its own, and removes them itself when it fails or is cancelled. A job whose
process was killed (SIGKILL, out of memory, a lost machine) runs no clean-up code, so whatever it was
writing stays behind. These are found by what the database refers to, never by guessing:

- ``staging/<id>``: an upload waiting for its import; kept while a queued or running import names it;
- ``DATA_DIR/uploads/slides/<id>`` (host-local, not media): a chunked slide upload
  (webapp.datasets.slide_uploads); kept until untouched for a day (``slide_uploads.MAX_AGE``), so that an
  interrupted upload can be resumed;
- ``projects/<p>/datasets/<id>``: an imported dataset's files; kept while a Dataset row names it, or while
  an import of that project is running (its rows are not committed yet);
- ``projects/<p>/inference/<id>``: an inference's inputs and outputs; kept while a job that did not fail
  names it (a succeeded one's files stay downloadable);
- ``scratch/<id>``: a training's temporary folder; kept while any training runs;
- ``projects/<p>/models/job-<id>.pt``: a checkpoint being published; kept while a training of that
  project runs (a published one is renamed ``v<n>.pt`` and named by its ModelVersion);
- ``DATA_DIR/cache/crops/.crops-*`` (host-local, not media): a crops cache entry being written; kept while
  any training runs;
- ``projects/<p>/models/resume-job-<id>-stage<n>.pt``: the checkpoint of a training's last finished stage,
  kept while that job's result names it (a cancelled or failed training resumes from it; a later
  successful training of the project clears the names and the files);
- ``projects/<p>``: all of a project's files (model checkpoints too); kept while its Project row exists
  (a project's deletion removes it after its commit, unless the worker was killed in between).

Everything younger than ``GRACE`` is kept too: an upload is staged a moment before its job row exists.

With ``STORAGE_URL`` set (webapp.core.media) the sweep lists the bucket instead of the disk: a "folder" is a
prefix of stored names, as old as its newest object, and removing it removes its objects (and this host's
mirrored copy). Other hosts' mirrors are caches of the bucket and need no sweep.

The sweep is the last resort. A job's own folders are named after the job (:func:`job_paths`), so that the
job removes them itself when it fails, is cancelled or is reaped after its worker was lost, and a retried
job removes what its killed attempt wrote before it starts again (:func:`remove_job_paths`).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from webapp.core import media

from .models import Job

logger = logging.getLogger(__name__)
GRACE = timedelta(hours=1)
UNFINISHED = (Job.State.QUEUED, Job.State.RUNNING)


def import_folder(job: Job) -> str:
    """Where an import job writes its dataset's files (the Dataset row names it once committed)."""
    return f"projects/{job.project_id}/datasets/job-{job.pk}"


def scratch_folder(job: Job) -> str:
    """A training job's temporary folder (checkpoints of each stage)."""
    return f"scratch/job-{job.pk}"


def staged_checkpoint(job: Job) -> str:
    """A training job's checkpoint while it is published (renamed v<n>.pt in the same commit)."""
    return f"projects/{job.project_id}/models/job-{job.pk}.pt"


def resume_checkpoint(job: Job, stage: str) -> str:
    """Where a training keeps its last finished stage's checkpoint, to be resumed from (not removed with the
    job's other paths when it is cancelled or fails: that is when it is needed)."""
    from mlcore.config import STAGE_NUMBER

    return f"projects/{job.project_id}/models/resume-job-{job.pk}-stage{STAGE_NUMBER[stage]}.pt"


def job_paths(job: Job, *, inputs: bool = True) -> list[str]:
    """What a job writes that is of no use if it does not succeed: an import's dataset folder, a training's
    scratch folder and staged checkpoint, and with ``inputs`` what the user sent (an upload's staging
    folder, an inference's folder)."""
    params = job.params or {}
    paths = [params.get("staging"), params.get("folder")] if inputs else []
    if job.kind == Job.Kind.IMPORT:
        paths.append(import_folder(job))
    elif job.kind == Job.Kind.TRAIN:
        paths += [scratch_folder(job), staged_checkpoint(job)]
    return [path for path in paths if path]


def remove_job_paths(job: Job, *, inputs: bool = True) -> None:
    """Remove :func:`job_paths`: when the job failed or was cancelled (after its commit), and, without its
    inputs, when a retried job starts again after its worker was lost. Never a folder a Dataset row names:
    an import that committed just before its worker was killed keeps its files. Remote: from the bucket
    too (webapp.core.media)."""
    from webapp.datasets.models import Dataset

    paths = job_paths(job, inputs=inputs)
    stored = set(Dataset.objects.filter(storage_dir__in=paths).values_list("storage_dir", flat=True))
    for relative in paths:
        try:
            name = media.clean_name(relative)
        except media.MediaNameError:
            continue
        if relative in stored or not _is_inside(media.work_path(name), media.root()):
            continue
        media.delete(name)


def sweep_orphans(now: float | None = None) -> list[str]:
    """Remove the orphaned folders and files described above; returns their storage names (paths relative to
    the media root). Remote: what the bucket holds is swept (each host's mirror is a cache of it)."""
    from webapp.datasets import slide_uploads
    from webapp.datasets.models import Dataset
    from webapp.projects.models import Project

    tree = _RemoteTree() if media.is_remote() else _LocalTree()
    oldest = (now or time.time()) - GRACE.total_seconds()
    removed: list[str] = []

    def sweep(under: str, pattern: str, keep) -> None:
        for relative, modified in tree.children(under, pattern):
            if modified < oldest and not keep(relative):
                tree.remove(relative)
                removed.append(relative)

    unfinished_imports = Job.objects.filter(kind=Job.Kind.IMPORT, state__in=UNFINISHED)
    staged = {job.params.get("staging") for job in unfinished_imports.only("params")}
    sweep("staging", "*", lambda relative: relative in staged)
    # Chunked slide uploads (a folder each) live longer than GRACE: a user may resume one the next morning.
    removed += slide_uploads.sweep_abandoned(now)

    stored = set(Dataset.objects.values_list("storage_dir", flat=True))
    importing = set(unfinished_imports.filter(state=Job.State.RUNNING).values_list("project_id", flat=True))
    sweep("projects", "*/datasets/*", lambda relative: relative in stored or _project_id(relative) in importing)

    inferring = {job.params.get("folder") for job in Job.objects.filter(kind=Job.Kind.INFER).exclude(
        state__in=(Job.State.FAILED, Job.State.CANCELLED)).only("params")}
    sweep("projects", "*/inference/*", lambda relative: relative in inferring)

    training = set(Job.objects.filter(kind=Job.Kind.TRAIN, state=Job.State.RUNNING).values_list("project_id",
                                                                                               flat=True))
    sweep("scratch", "*", lambda relative: bool(training))
    sweep("projects", "*/models/job-*.pt", lambda relative: _project_id(relative) in training)
    if not training:
        removed += _sweep_half_written_crops(oldest)

    projects = set(Project.objects.values_list("pk", flat=True))
    sweep("projects", "*", lambda relative: _number(relative.split("/")[1]) in projects | {None})
    resumable = {job.result["resume"].get("checkpoint") for job in Job.objects.filter(
        kind=Job.Kind.TRAIN, result__has_key="resume").only("result")}
    sweep("projects", "*/models/resume-job-*.pt", lambda relative: relative in resumable)
    if removed:
        logger.info("removed %d orphaned folders: %s", len(removed), ", ".join(removed[:20]))
    return removed


def _sweep_half_written_crops(oldest: float) -> list[str]:
    """The crops cache is per host (``DATA_DIR/cache/crops``, derived from the images, not media): a killed
    training leaves a ``.crops-*`` entry half-written there. Swept only while no training runs, as one of
    them may be writing it."""
    from webapp.training.runner import crop_cache_dir

    removed = []
    for path in sorted(crop_cache_dir().glob(".crops-*")):
        try:
            if path.stat().st_mtime < oldest:
                path.unlink()
                removed.append(f"cache/crops/{path.name}")
        except FileNotFoundError:  # another sweep, or the training finished writing it
            continue
    return removed


class _LocalTree:
    """The folders and files of the media root on this disk (local mode)."""

    def children(self, under: str, pattern: str) -> list[tuple[str, float]]:
        """(storage name, modification time) of what ``pattern`` matches in the folder ``under``."""
        root = media.root()
        folder = root / under
        if not folder.is_dir():
            return []
        return [(path.relative_to(root).as_posix(), path.stat().st_mtime) for path in sorted(folder.glob(pattern))]

    def remove(self, relative: str) -> None:
        media.delete(relative)


class _RemoteTree:
    """The same view of the bucket, from one listing: a "folder" is a common prefix of stored names, as
    old as its newest file (a bucket has no folders and no folder times)."""

    def __init__(self):
        self._files = dict(media.listing())

    def children(self, under: str, pattern: str) -> list[tuple[str, float]]:
        pattern_parts = [*PurePosixPath(under).parts, *PurePosixPath(pattern).parts]
        depth = len(pattern_parts)
        found: dict[str, float] = {}
        for name, modified in self._files.items():
            parts = PurePosixPath(name).parts
            if len(parts) < depth or not all(fnmatchcase(part, wanted) for part, wanted in zip(parts, pattern_parts)):
                continue
            child = "/".join(parts[:depth])
            found[child] = max(found.get(child, modified), modified)
        return sorted(found.items())

    def remove(self, relative: str) -> None:
        media.delete(relative)
        self._files = {name: modified for name, modified in self._files.items()
                       if name != relative and not name.startswith(relative + "/")}


def _project_id(relative: str) -> int | None:
    """The project of ``projects/<id>/...``."""
    return _number(relative.split("/")[1])


def _number(name: str) -> int | None:
    """A folder named by a row's id; None for any other name (such a folder is never removed)."""
    try:
        return int(name)
    except ValueError:
        return None


def _is_inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return False
