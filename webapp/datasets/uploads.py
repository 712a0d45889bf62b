"""Uploads: staging the files a user sent, and the import job that turns them into a dataset."""

from __future__ import annotations

import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.move import file_move_safe
from django.db import transaction

from mlcore.readers import detect_format
from mlcore.types import DataError, NoClassNames, name_key, quoted
from webapp.core import disk_space, media
from webapp.core.domain_errors import Invalid, TooLarge
from webapp.core.filenames import safe_file_name
from webapp.jobs import operations as job_operations
from webapp.jobs import sweep
from webapp.jobs.models import Job
from webapp.projects.models import Project

from .importing import ImportRejected, dataset_file_parts, do_import_dataset, refuse_taken_dataset_name, safe_extract
from .models import Dataset


def staging_root() -> Path:
    """Where this process writes (web) or unpacks (worker) uploads: ``staging`` under the media work root."""
    return media.root() / "staging"


def _stage(archive, files, paths=None) -> Path:
    staging = staging_root() / uuid.uuid4().hex
    (staging / "files").mkdir(parents=True)
    try:
        total = (archive.size if archive else 0) + sum(f.size for f in files or [])
        if total > settings.MAX_UPLOAD_BYTES:
            # Named by the field and the file the user sent: a `files` upload was told about "archive".
            sent = f"{archive.name}: the archive" if archive else f"the {len(files)} files"
            # 413, as a body over the limit refused before it was read (webapp.core.middleware).
            raise TooLarge(f"{sent} come{'s' if archive else ''} to {total / 1e6:.1f} MB, over the limit of "
                           f"{settings.MAX_UPLOAD_BYTES / 1e6:.1f} MB (MAX_UPLOAD_BYTES)",
                           field="archive" if archive else "files")
        if archive:
            _write(archive, staging / "upload.zip")
        for upload, name in zip(files or [], paths or [f.name for f in files or []]):
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if not parts or name.startswith("/") or ".." in parts:
                raise Invalid(f"{name}: unsafe file name (absolute or '..')", field="files", code="unsafe_name")
            try:
                parts = dataset_file_parts(name, name)
            except DataError as exc:
                raise Invalid(str(exc), field="files", code="name_too_long") from None
            if parts is not None:
                _write(upload, staging.joinpath("files", *parts))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _write(upload, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(upload, "temporary_file_path"):
        # Django has written a large upload to a temporary file already: move it (a rename where both are on
        # one file system) instead of writing it a second time, as Django's own file storage does.
        upload.file.flush()
        file_move_safe(upload.temporary_file_path(), target)
        if settings.FILE_UPLOAD_PERMISSIONS is not None:
            os.chmod(target, settings.FILE_UPLOAD_PERMISSIONS)  # not the temporary file's 0600
        return
    with open(target, "wb") as sink:
        for chunk in upload.chunks():
            sink.write(chunk)


def do_start_import(project, *, actor, name: str, format: str, label_set: str = "", labelled: bool = True,
                    provenance: str = "", archive=None, files=None, paths=None) -> Job:
    """Stage the upload and queue its import job (the job row records who, what and where). ``paths``:
    where each of ``files`` goes in the dataset folder (default: its name)."""
    from webapp.jobs.deletion import refuse_while_deleting

    refuse_while_deleting(project, "An import")  # before the upload is written anywhere
    # What the job would fail on at once is refused before the upload is kept and queued: the user hears it now.
    refuse_taken_name(project, name)
    if archive:
        refuse_unless_zip(archive)
    staging = media.name_of(_stage(archive, files, paths))
    try:
        # In the storage before the job row names it: the import may run on another host.
        media.publish(staging)
        if media.is_remote():  # this process has no more use for its copy; the worker downloads the upload
            shutil.rmtree(media.work_path(staging), ignore_errors=True)
        with transaction.atomic():
            # Checked again under the project's lock, with the job queued in the same transaction: two uploads
            # of one name at once (a double click) both passed the check above while they were staged.
            Project.objects.select_for_update().get(pk=project.pk)
            refuse_while_deleting(project, "An import")   # a deletion asked for while this upload was written
            refuse_taken_name(project, name)
            return job_operations.do_enqueue_job(
                Job.Kind.IMPORT, actor=actor, project=project,
                params={"name": name, "format": format, "label_set": label_set or None, "labelled": labelled,
                        "provenance": provenance, "staging": staging,
                        "archive": bool(archive), "archive_name": _client_file_name(archive) if archive else ""})
    except BaseException:
        media.delete(staging)
        raise


def refuse_taken_name(project, name: str, exclude=None) -> None:
    """A dataset of that name (in any case) in the project, other than ``exclude``, or an import of one
    queued or running (the job checks again)."""
    refuse_taken_dataset_name(project, name, exclude)
    importing = Job.objects.filter(project=project, kind=Job.Kind.IMPORT,
                                   state__in=(Job.State.QUEUED, Job.State.RUNNING)).order_by("pk")
    pending = next((pk for pk, params in importing.values_list("pk", "params")
                    if name_key(str(params.get("name", ""))) == name_key(name)), None)
    if pending is not None:
        raise ImportRejected(f"a dataset named {quoted(name)} is being imported into project {quoted(project.name)} "
                             f"(job {pending}): choose another name", field="name")


def refuse_unless_zip(archive) -> None:
    """The archive is a zip (its central directory is read, not the whole file)."""
    try:
        readable = zipfile.is_zipfile(archive)
    finally:
        archive.seek(0)
    if not readable:
        raise ImportRejected(f"{_client_file_name(archive) or 'archive'}: not a zip archive; upload the dataset's "
                             "folder as a .zip, or its files", field="archive")


AUTO_FORMAT = "auto"  # the upload leaves the format to be told from the files' layout


def _client_file_name(upload) -> str:
    """The name the user's file had (its last part only, at most 200 characters): errors name it, not
    the ``upload.zip`` it is staged as."""
    return PurePosixPath(str(getattr(upload, "name", "") or "").replace("\\", "/")).name[:200]


def run_import_job(job: Job, progress, log=None) -> dict:
    """Unpack (safely) and import; the staging folder is removed whatever happens. ``log(line)``, when
    given, receives the steps worth keeping in the job's log.

    A job whose format is ``auto`` finds it from the layout of the files (:func:`mlcore.readers.detect_format`)
    and says so in the job's log and its result (``format_detected``). The nuclei of the files that the reader
    left out (GeoJSON features wholly covered by later ones or outside their image...) are counted by reason in
    the result's ``left_out``, and the log names the images they were in.
    """
    log = log or (lambda line: None)
    params = job.params
    if params.get("slide"):
        from .slide_import import run_slide_import_job

        return run_slide_import_job(job, progress, log)
    staging_name = params["staging"]
    committed = Dataset.objects.filter(project_id=job.project_id, storage_dir=sweep.import_folder(job)).first()
    if committed is not None:
        # The killed attempt committed the import just before its worker died: that dataset is the result.
        media.delete(staging_name)
        return _result(committed, params)
    # A retried job (its worker was killed) starts afresh: the dataset files and the unpacked archive of the
    # killed attempt go first.
    sweep.remove_job_paths(job, inputs=False)
    try:
        staging = media.local_folder(staging_name)  # remote: downloaded from the storage to this host
        if params.get("archive"):
            shutil.rmtree(staging / "extracted", ignore_errors=True)
            progress(0, "unpacking the archive")
            log(f"unpacking the archive ({(staging / 'upload.zip').stat().st_size / 1e6:.1f} MB)")
            shown = {"at": 0.0}

            def unpacked(written: int, total: int) -> None:
                # Gigabytes take a while: the message counts them (at most every half second, as progress goes).
                if time.monotonic() - shown["at"] >= 0.5 or written == total:
                    shown["at"] = time.monotonic()
                    progress(0, f"unpacking the archive: {written / 1e6:.0f} of {total / 1e6:.0f} MB")

            # Unpacked into a folder named as the user's archive: a format that names its images by their folder
            # (PanNuke's fold arrays: "fold1_00000") takes the archive's name, not the server's ("extracted").
            folder = safe_file_name(PurePosixPath(params.get("archive_name") or "").stem, fallback="upload")
            unpacking = {"bytes": None}

            def room_to_unpack(total: int) -> None:
                unpacking["bytes"] = total
                disk_space.require_free(total, staging)

            try:
                root = safe_extract(staging / "upload.zip", staging / "extracted" / folder,
                                    settings.MAX_UNPACKED_BYTES, display_name=params.get("archive_name") or None,
                                    progress=unpacked, before_writing=room_to_unpack)
            except OSError as exc:   # the disk filled all the same (another job wrote meanwhile)
                disk_error = disk_space.disk_error(exc, staging, needed=unpacking["bytes"])
                if disk_error is None:
                    raise
                raise disk_error from exc
        else:
            root = staging / "files"
        left_out: dict[str, int] = {}
        try:
            format = params["format"]
            if format == AUTO_FORMAT:
                format = detect_format(root)
                log(f"format detected from the files: {format}")
            dataset = do_import_dataset(
                job.project, name=params["name"], format=format, path=root, actor=job.created_by,
                label_set_name=params.get("label_set"), labelled=params.get("labelled", True),
                provenance=params.get("provenance", ""), progress=progress, log=log,
                folder=media.work_path(sweep.import_folder(job)), left_out=left_out)
        except NoClassNames as exc:   # the library's hint names its argument: the user has a checkbox
            raise DataError(_relative(exc.path, root),
                            f"{exc.reason}: to import the nuclei without classes, uncheck Labelled in the upload form "
                            "(labelled=false in the API)") from None
        except DataError as exc:
            raise DataError(_relative(exc.path, root), exc.problem) from None
    finally:
        media.delete(staging_name)  # here and, remote, in the storage
    return {**_result(dataset, params), "left_out": left_out}


def _result(dataset: Dataset, params: dict) -> dict:
    """The result of an import job from its dataset (a retry finds the dataset its killed attempt committed: what
    that attempt left out is in the job's log only)."""
    return {"dataset_id": dataset.pk, "dataset": dataset.name, "images": dataset.image_count,
            "nuclei": dataset.nucleus_count, "label_set": dataset.label_set.name if dataset.label_set else None,
            "format": dataset.format, "format_detected": params["format"] == AUTO_FORMAT}


def _relative(path: str | None, root: Path) -> str | None:
    """Name files as the user knows them (inside their upload), not by our staging folder."""
    if not path:
        return path
    try:
        relative = Path(path).relative_to(root)
        return str(relative) if relative.parts else None  # the upload as a whole: no file to name
    except ValueError:
        return Path(path).name if str(path).startswith(str(staging_root())) else path


USER_ERRORS = (DataError, ImportRejected)
