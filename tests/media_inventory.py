"""What lies in MEDIA_ROOT against what the database refers to: the oracle of the fault tests.

Written apart from webapp.jobs.sweep on purpose: it states from the models alone which files may exist, so
that a sweep that forgets a kind of folder, or removes one still in use, is caught.

A file may exist when a row names it:
- an Image's file, mask and thumbnail (under its Dataset's ``storage_dir``);
- a ModelVersion's checkpoint;
- a training job's kept stage checkpoint (``result["resume"]["checkpoint"]``), which it resumes from;
- an inference job's inputs (``params["folder"]`` + image and mask) and, once it succeeded, its outputs
  (``result["files"]``), unless it failed or was cancelled;
- anything inside a folder an unfinished job works in: a queued or running import's staging folder, a
  queued or running inference's folder; while a training runs, the scratch folder and its project's models
  folder; while an import runs, its project's datasets folder;
- the training crops cache (``cache/crops``): derived from image pixels, keyed by their hash and shared by
  every training; only complete entries (``crops-<key>.npy`` with its ``.index.npz``).

A folder may exist when it holds such a file, or is one of the fixed parents (``staging``, ``scratch``,
``cache``, ``cache/crops``, ``projects``, and ``projects/<p>`` with its ``datasets``, ``inference`` and
``models`` for an existing project). Everything else is an orphan; a file named but absent is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

CACHE_ENTRY = re.compile(r"crops-([0-9a-f]+)\.(npy|index\.npz)")


@dataclass
class MediaInventory:
    orphans: list[str]   # under MEDIA_ROOT, named by nothing in the database (topmost paths)
    missing: list[str]   # named by the database, absent

    @property
    def consistent(self) -> bool:
        return not self.orphans and not self.missing

    def __str__(self) -> str:
        return (f"{len(self.orphans)} orphans: {self.orphans[:30]}\n"
                f"{len(self.missing)} missing: {self.missing[:30]}")


def media_against_database() -> MediaInventory:
    from webapp.datasets.models import Dataset, Image
    from webapp.jobs.models import Job
    from webapp.projects.models import Project
    from webapp.training.models import ModelVersion

    media = Path(settings.MEDIA_ROOT)
    unfinished = (Job.State.QUEUED, Job.State.RUNNING)
    files: set[str] = set()       # named one by one
    in_use: set[str] = set()      # folders whose whole content is in use
    for row in Image.objects.values_list("file", "mask_file", "thumbnail_file"):
        files.update(row)
    files.update(ModelVersion.objects.values_list("checkpoint_file", flat=True))
    files.update(job.result["resume"]["checkpoint"] for job in Job.objects.filter(kind=Job.Kind.TRAIN,
                                                                                 result__has_key="resume"))
    for job in Job.objects.filter(kind=Job.Kind.INFER).exclude(state__in=(Job.State.FAILED, Job.State.CANCELLED)):
        folder = job.params.get("folder")
        if job.state in unfinished:
            in_use.add(folder)
            continue
        files.update(f"{folder}/{job.params[key]}" for key in ("image", "mask"))
        files.update(job.result.get("files", []))
    for job in Job.objects.filter(state__in=unfinished):
        if job.kind == Job.Kind.IMPORT:
            in_use.add(job.params.get("staging"))
            if job.state == Job.State.RUNNING:
                in_use.add(f"projects/{job.project_id}/datasets")
        elif job.kind == Job.Kind.TRAIN and job.state == Job.State.RUNNING:
            in_use.update(("scratch", f"projects/{job.project_id}/models"))
    dataset_dirs = set(Dataset.objects.values_list("storage_dir", flat=True))

    parents = {"staging", "scratch", "cache", "cache/crops", "projects"}
    for project_id in Project.objects.values_list("pk", flat=True):
        parents.update(f"projects/{project_id}{sub}" for sub in ("", "/datasets", "/inference", "/models"))
    parents |= dataset_dirs   # a dataset's folder is the database's even while it holds no file
    in_use.discard(None)

    def inside_in_use(relative: str) -> bool:
        return any(relative == folder or relative.startswith(folder + "/") for folder in in_use)

    on_disk_files, on_disk_dirs = set(), set()
    for path in media.rglob("*"):
        relative = path.relative_to(media).as_posix()
        (on_disk_dirs if path.is_dir() else on_disk_files).add(relative)
    cache_keys: dict[str, set[str]] = {}
    for relative in on_disk_files:
        match = CACHE_ENTRY.fullmatch(relative.removeprefix("cache/crops/"))
        if relative.startswith("cache/crops/") and match:
            cache_keys.setdefault(match.group(1), set()).add(match.group(2))
    cached = {f"cache/crops/crops-{key}.{kind}" for key, kinds in cache_keys.items() if len(kinds) == 2
              for kind in kinds}

    allowed_files = files | cached
    orphans = {f for f in on_disk_files if f not in allowed_files and not inside_in_use(f)}
    holding = {parent.as_posix() for f in on_disk_files - orphans for parent in PurePosixPath(f).parents}
    orphans |= {d for d in on_disk_dirs
                if d not in holding and d not in parents and d not in in_use and not inside_in_use(d)}
    missing = {f for f in files if f not in on_disk_files} | {d for d in dataset_dirs if d not in on_disk_dirs}
    # An orphaned folder is named once, not with every file inside it.
    topmost = {o for o in orphans if not any(parent.as_posix() in orphans for parent in PurePosixPath(o).parents)}
    return MediaInventory(sorted(topmost), sorted(missing))


def assert_media_matches_database() -> None:
    inventory = media_against_database()
    assert inventory.consistent, f"MEDIA_ROOT differs from what the database refers to:\n{inventory}"
