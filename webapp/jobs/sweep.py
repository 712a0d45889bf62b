"""Remove what killed jobs left in the media folder: the periodic sweep (beat) and the per-job clean-up.

A job works in folders of its own, and removes them itself when it fails or is cancelled. A job whose
process was killed (SIGKILL, out of memory, a lost machine) runs no clean-up code, so whatever it was
writing stays behind. These are found by what the database refers to, never by guessing:

- ``staging/<id>``: an upload waiting for its import; kept while a queued or running import names it;
- ``projects/<p>/inference/<id>``: an inference's inputs and outputs; kept while a job that did not fail
  names it (a succeeded one's files stay downloadable);
- ``scratch/<id>``: a training's temporary folder; kept while any training runs;
- ``projects/<p>/models/job-<id>.pt``: a checkpoint being published; kept while a training of that
  project runs (a published one is renamed ``v<n>.pt`` and named by its ModelVersion);
- ``projects/<p>``: all of a project's files (model checkpoints too); kept while its Project row exists
  (a project's deletion removes it after its commit, unless the worker was killed in between);
- ``projects/<p>/models/resume-job-<id>-stage<n>.pt``: the checkpoint of a training's last finished stage,
  kept while that job's result names it (a cancelled or failed training resumes from it; a later
  successful training of the project clears the names and the files).

The apps above this one sweep their own files, registered with :func:`register` in their
``AppConfig.ready()`` (this app sits below them, tests/test_layering_imports.py), before the projects'
folders are swept: webapp.datasets (:mod:`webapp.datasets.orphans`) its imported datasets' folders and its
chunked slide uploads, webapp.training (:mod:`webapp.training.orphans`) its half-written crops cache
entries.

Everything younger than ``GRACE`` is kept too: an upload is staged a moment before its job row exists.

With ``STORAGE_URL`` set (webapp.core.media) the sweep lists the bucket instead of the disk: a "folder" is a
prefix of stored names, as old as its newest object, and removing it removes its objects (and this host's
mirrored copy). Other hosts' mirrors are caches of the bucket and need no sweep.

What a user sent and may want to send again is given back rather than removed: as a job ends failed or
cancelled, :func:`give_back_inputs` lets the apps above take it first (a slide import's chunked uploads,
:func:`webapp.datasets.slide_uploads.do_give_back_uploads`).

The sweep is the last resort. A job's own folders are named after the job (:func:`job_paths`), so that the
job removes them itself when it fails, is cancelled or is reaped after its worker was lost, and a retried
job removes what its killed attempt wrote before it starts again (:func:`remove_job_paths`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from webapp.core import media
from webapp.projects.models import Project

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
    inputs, when a retried job starts again after its worker was lost. Never a folder a row names (a
    Dataset's, see :func:`register`): an import that committed just before its worker was killed keeps its
    files. Remote: from the bucket too (webapp.core.media)."""
    paths = job_paths(job, inputs=inputs)
    stored = set().union(*(app.named(paths) for app in _APPS.values() if app.named))
    for relative in paths:
        try:
            name = media.clean_name(relative)
        except media.MediaNameError:
            continue
        if relative in stored or not _is_inside(media.work_path(name), media.root()):
            continue
        media.delete(name)


@dataclass(frozen=True)
class AppFiles:
    """What an app above this one tells the sweep about its own files."""

    sweep: Callable[[Sweep], None] | None = None        # removes the app's orphans, through Sweep.remove_unless
    named: Callable[[list[str]], set[str]] | None = None  # which of these storage names the app's rows name
    # gives the owner of a job that failed or was cancelled back what is still of use to them among its inputs
    # (before remove_job_paths removes them), and returns a sentence saying so, or ""
    give_back: Callable[[Job], str] | None = None


_APPS: dict[str, AppFiles] = {}


def register(app: str, *, sweep: Callable[[Sweep], None] | None = None,
             named: Callable[[list[str]], set[str]] | None = None,
             give_back: Callable[[Job], str] | None = None) -> None:
    """Let ``app`` sweep its own orphans, keep the folders its rows name and give back the inputs of a job
    that did not succeed (from its AppConfig.ready(); registering again replaces, as ready() may run more than
    once)."""
    _APPS[app] = AppFiles(sweep, named, give_back)


def give_back_inputs(job: Job) -> list[str]:
    """As a job ends failed or cancelled (webapp.jobs.operations, in the transaction that ends it, before its
    inputs are removed after the commit): what the apps give back to its owner (a slide import's chunked
    uploads), in sentences for the owner. Never keeps the job from ending: an app's error is logged."""
    notes = []
    for app in _APPS.values():
        if app.give_back is None:
            continue
        try:
            note = app.give_back(job)
        except Exception:
            logger.exception("job %s: could not give back its inputs", job.pk)
            continue
        if note:
            notes.append(note)
    return notes


class Sweep:
    """One run of :func:`sweep_orphans`: the tree it lists (the disk, or the bucket), the age below which
    everything is kept, and what it removed."""

    def __init__(self, now: float | None = None, tree=None):
        self.now = now
        self.oldest = (now or time.time()) - GRACE.total_seconds()
        self.tree = tree or (_RemoteTree() if media.is_remote() else _LocalTree())
        self.removed: list[str] = []

    def remove_unless(self, under: str, pattern: str, keep: Callable[[str], bool],
                      max_age: timedelta | None = None) -> None:
        """Remove what ``pattern`` matches in the folder ``under``, older than ``GRACE`` (or ``max_age``),
        unless ``keep`` says so of its storage name."""
        oldest = self.oldest if max_age is None else (self.now or time.time()) - max_age.total_seconds()
        for relative, modified in self.tree.children(under, pattern):
            if modified < oldest and not keep(relative):
                self.tree.remove(relative)
                self.removed.append(relative)


def sweep_orphans(now: float | None = None) -> list[str]:
    """Remove the orphaned folders and files described above; returns their storage names (paths relative to
    the media root). Remote: what the bucket holds is swept; each host's mirror by :func:`sweep_mirror`."""
    return _swept(Sweep(now))


def sweep_mirror(now: float | None = None) -> list[str]:
    """Remote: the same rules over this host's mirror, removing only its own copies. The bucket's sweep runs
    on one host; a worker on another kept, in its mirror, what a killed job wrote there (never uploaded) and
    the files of deleted datasets and projects, until the mirror outgrew MEDIA_MIRROR_MAX_BYTES. Runs only
    while no job runs on this host (their files are theirs); nothing then."""
    if not media.is_remote():
        return []
    with media.mirror_alone() as alone:
        return _swept(Sweep(now, tree=_MirrorTree())) if alone else []


def _swept(run: Sweep) -> list[str]:
    staged = {job.params.get("staging") for job in Job.objects.filter(
        kind=Job.Kind.IMPORT, state__in=UNFINISHED).only("params")}
    run.remove_unless("staging", "*", lambda relative: relative in staged)

    inferring = {job.params.get("folder") for job in Job.objects.filter(kind=Job.Kind.INFER).exclude(
        state__in=(Job.State.FAILED, Job.State.CANCELLED)).only("params")}
    run.remove_unless("projects", "*/inference/*", lambda relative: relative in inferring)

    training = set(Job.objects.filter(kind=Job.Kind.TRAIN, state=Job.State.RUNNING).values_list("project_id",
                                                                                               flat=True))
    run.remove_unless("scratch", "*", lambda relative: bool(training))
    run.remove_unless("projects", "*/models/job-*.pt", lambda relative: project_id_of(relative) in training)

    for app in _APPS.values():
        if app.sweep:
            app.sweep(run)

    projects = set(Project.objects.values_list("pk", flat=True))
    run.remove_unless("projects", "*", lambda relative: _number(relative.split("/")[1]) in projects | {None})
    resumable = {job.result["resume"].get("checkpoint") for job in Job.objects.filter(
        kind=Job.Kind.TRAIN, result__has_key="resume").only("result")}
    run.remove_unless("projects", "*/models/resume-job-*.pt", lambda relative: relative in resumable)
    if run.removed:
        logger.info("removed %d orphaned folders: %s", len(run.removed), ", ".join(run.removed[:20]))
    return run.removed


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


class _MirrorTree(_LocalTree):
    """This host's mirror (the work root of a remote storage): removing forgets the local copy only."""

    def remove(self, relative: str) -> None:
        media.forget_local_copy(relative)


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


def project_id_of(relative: str) -> int | None:
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
