"""Whole-slide images (issue 17): registering a slide with its QuPath detections as a dataset of one image.

A slide is 1-5 GB and holds 10^5-10^6 nuclei, so nothing here holds it whole: the pixels stay in the slide
file (read through :mod:`mlcore.slides` a region at a time), and the detections are streamed from the
GeoJSON (:func:`mlcore.slide_nuclei.iter_geojson_nuclei`) into the database in chunks of
:data:`CHUNK_NUCLEI` rows (COPY on PostgreSQL). The import is all or nothing like a tile import: one
transaction, a folder of the job's own (the preview PNG, an uploaded slide), removed on any failure.

A slide comes either from a path under ``settings.SLIDES_ROOT`` (a mounted share: nothing is copied, the
Image row names it with ``slide_root = "slides"``), or as an upload, kept in the dataset's folder
(``slide_root = "media"``). Its detections come the same two ways.

Media files go through :mod:`webapp.core.media`: the request stages the uploads in ``staging/<id>`` of the
work root and publishes that folder before the job is queued (the worker may be on another host); the job
reads it back with :func:`media.local_folder`, writes the dataset's folder in its work root and publishes it
before the rows commit, and deletes it (files and objects) when the import fails.

The uploads an import took (chunked ones, :mod:`webapp.datasets.slide_uploads`, and the files sent in the
registration's request, which become uploads with ids of their own) are the user's gigabytes: when the
job fails or is cancelled they are given back under their ids as it ends
(:func:`webapp.datasets.slide_uploads.do_give_back_uploads`), and its staging folder is removed only then.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image as PILImage

from mlcore.slides import SLIDE_SUFFIXES, SlideError, open_slide
from mlcore.types import DataError, quoted
from webapp.core import audit, disk_space, media
from webapp.core.domain_errors import TooLarge
from webapp.jobs import operations as job_operations
from webapp.jobs import sweep
from webapp.jobs.models import Job
from webapp.projects.slides_folder import registrable_folder, resolve_slides_path

from . import bulk
from .importing import ImportRejected, _Writer, create_label_set, refuse_taken_dataset_name, resolve_label_set
from .slides import slide_checksum
from .models import CurrentLabel, Dataset, Image, Label, LabelSet, LabelSource, Nucleus

Progress = Callable[[float, str], None]
CHUNK_NUCLEI = 5_000  # nuclei per bulk write: memory stays this many rows whatever the slide's size
PREVIEW_SIZE = 2048  # the PNG kept as Image.file: what a page shows before the slide viewer loads
THUMBNAIL_SIZE = 256


# ------------------------------------------------------------------------------------------ the request

def _stage_upload(upload, target: Path) -> None:
    from .uploads import _write

    _write(upload, target)


def _upload_name(upload, default: str) -> str:
    from .uploads import _client_file_name

    return _client_file_name(upload) or default


def do_register_slide(project, *, actor, name: str, label_set: str = "", path: str = "",
                      detections_path: str = "", slide_upload=None, detections_upload=None,
                      slide_upload_id: str = "", detections_upload_id: str = "",
                      provenance: str = "") -> Job:
    """Check the request and queue the slide's import job (202). The slide is ``path`` under SLIDES_ROOT,
    ``slide_upload`` (a file of this request) or ``slide_upload_id`` (a complete chunked upload of ``actor``,
    :mod:`webapp.datasets.slide_uploads`); its detections likewise ``detections_path``, ``detections_upload``
    or ``detections_upload_id`` (a QuPath GeoJSON or an instance-mask TIFF). A chunked upload's file is moved
    into the import's staging folder, as an uploaded file is written there. Refusals (ImportRejected) name
    the field."""
    from webapp.jobs.deletion import refuse_while_deleting

    from .slide_uploads import claim_upload, stored_name, taken_entry

    name = (name or "").strip()
    if not name:
        raise ImportRejected("give the slide's dataset a name", field="name")
    refuse_taken_dataset_name(project, name)
    if sum(map(bool, (path, slide_upload, slide_upload_id))) != 1:
        raise ImportRejected("give either the slide's path under SLIDES_ROOT, the slide file, or the id of "
                             "its chunked upload (slide_upload_id), one of them", field="path")
    if sum(map(bool, (detections_path, detections_upload, detections_upload_id))) != 1:
        raise ImportRejected("give either the detections' path under SLIDES_ROOT (detections_path), "
                             "the QuPath GeoJSON file (detections), or the id of its chunked upload "
                             "(detections_upload_id), one of them", field="detections")
    chunked_slide = claim_upload(project, actor, slide_upload_id, "slide_upload_id", "slide") \
        if slide_upload_id else None
    chunked_detections = claim_upload(project, actor, detections_upload_id, "detections_upload_id", "detections") \
        if detections_upload_id else None
    if chunked_slide is not None and chunked_detections is not None and chunked_slide.id == chunked_detections.id:
        raise ImportRejected("the slide and its detections must be two uploads", field="detections_upload_id")
    params = {"slide": True, "name": name, "label_set": label_set or None, "provenance": provenance}
    if path:
        resolved = resolve_slides_path(path, "path", folder=registrable_folder(project, actor))
        if resolved.suffix.lower() not in SLIDE_SUFFIXES:
            raise ImportRejected(f"{path!r} is not a slide file ({', '.join(SLIDE_SUFFIXES)})", field="path")
        params.update(slide_path=str(resolved.relative_to(Path(settings.SLIDES_ROOT).resolve())),
                      slide_name=PurePosixPath(path.replace("\\", "/")).name)
    if detections_path:
        resolved = resolve_slides_path(detections_path, "detections_path", folder=registrable_folder(project, actor))
        params.update(detections_path=str(resolved.relative_to(Path(settings.SLIDES_ROOT).resolve())),
                      detections_name=PurePosixPath(detections_path.replace("\\", "/")).name)
    uploaded = sum(getattr(f, "size", 0) or 0 for f in (slide_upload, detections_upload) if f is not None)
    if uploaded > settings.MAX_UPLOAD_BYTES:
        raise TooLarge(f"the upload is {uploaded / 1e6:.1f} MB, over the limit of "
                       f"{settings.MAX_UPLOAD_BYTES / 1e6:.1f} MB (MAX_UPLOAD_BYTES); register a slide that "
                       "large by its path under SLIDES_ROOT, or upload it in chunks (slide-uploads/)",
                       field="slide" if slide_upload is not None else "detections")
    refuse_while_deleting(project, "A slide import")
    staging = staging_name = None
    moved: list[tuple] = []  # (chunked upload, its data, where it went): put back on a refusal
    # The uploads the job takes, chunked or sent in this request: given back if it does not succeed.
    taken: list[dict] = []
    if any(f is not None for f in (slide_upload, detections_upload, chunked_slide, chunked_detections)):
        staging_name = f"staging/{uuid.uuid4().hex}"
        staging = media.work_path(staging_name)
        staging.mkdir(parents=True)
        params["staging"] = staging_name
    try:
        if slide_upload is not None:
            slide_name = _upload_name(slide_upload, "slide.tiff")
            suffix = Path(slide_name).suffix.lower()
            if suffix not in SLIDE_SUFFIXES:
                raise ImportRejected(f"{quoted(slide_name)} is not a slide file ({', '.join(SLIDE_SUFFIXES)})", field="slide")
            _stage_upload(slide_upload, staging / f"slide{suffix}")
            _take_sent(slide_name, staging, f"slide{suffix}", "slide", taken)
            params.update(slide_upload=f"slide{suffix}", slide_name=slide_name)
        if chunked_slide is not None:
            stored = f"slide{Path(chunked_slide.filename).suffix.lower()}"
            _take(chunked_slide, staging_name, stored, moved)
            taken.append(taken_entry(chunked_slide, "slide", stored))
            params.update(slide_upload=stored, slide_name=chunked_slide.filename)
        if detections_upload is not None:
            detections_name = _upload_name(detections_upload, "detections.geojson")
            stored = "detections.tif" if is_mask_file(detections_name) else "detections.geojson"
            _stage_upload(detections_upload, staging / stored)
            _take_sent(detections_name, staging, stored, "detections", taken)
            params.update(detections_upload=stored, detections_name=detections_name)
        if chunked_detections is not None:
            stored = "detections.tif" if is_mask_file(chunked_detections.filename) else "detections.geojson"
            _take(chunked_detections, staging_name, stored, moved)
            taken.append(taken_entry(chunked_detections, "detections", stored))
            params.update(detections_upload=stored, detections_name=chunked_detections.filename)
        if taken:
            # The key's name is older than the files sent in the request, which it holds too; a job queued by
            # an earlier release names its uploads under it.
            params["chunked_uploads"] = taken
        if staging_name is not None:
            media.publish(staging_name)  # in the storage before the job that reads it exists
        job = job_operations.do_enqueue_job(Job.Kind.IMPORT, actor=actor, project=project, params=params)
    except BaseException:
        for upload, source, target in moved:  # the user's uploads stay usable for the next try
            # A job that could not be queued ended failed meanwhile, and gave the upload back (into the media
            # storage): the upload is where it was, once.
            given_back = media.work_path(stored_name(upload.id)) / "data"
            if not source.exists():
                back = target if target.exists() else given_back if given_back.exists() else None
                if back is not None:
                    shutil.move(str(back), source)
            if not upload.stored:
                media.delete(stored_name(upload.id))
        if staging_name is not None:
            media.delete(staging_name)
        raise
    for upload in (chunked_slide, chunked_detections):
        if upload is not None:
            shutil.rmtree(upload.folder, ignore_errors=True)  # used: its data is the job's now
            if upload.stored:
                media.delete(upload.stored_name)
    if staging_name is not None and media.is_remote():
        # The worker reads the staged files from the storage and deletes them there; this host's copy
        # would only be left behind (gigabytes for a slide).
        shutil.rmtree(staging, ignore_errors=True)
    return job


def _take_sent(filename: str, staging: Path, stored: str, kind: str, taken: list[dict]) -> None:
    """A file of the request, staged as ``stored``, becomes an upload the job gives back if it does not succeed
    (:func:`webapp.datasets.slide_uploads.sent_entry`)."""
    from .slide_uploads import sent_entry

    entry = sent_entry(filename, (staging / stored).stat().st_size, kind, stored)
    if entry is not None:
        taken.append(entry)


def _take(upload, staging_name: str, stored: str, moved: list[tuple]) -> None:
    """Put the chunked ``upload``'s file in the staging folder as ``stored``: moved (noted in ``moved``, to be
    put back on a refusal) from this host's disk, or from the media storage where an import that did not
    succeed gave it back; with a remote store such a one is copied inside the store instead. Either way its
    kept folder is removed once the job is queued."""
    if upload.stored and media.is_remote():
        media.copy_stored(f"{upload.stored_name}/data", f"{staging_name}/{stored}")
        return
    source = media.work_path(upload.stored_name) / "data" if upload.stored else upload.data
    target = media.work_path(staging_name) / stored
    moved.append((upload, source, target))
    shutil.move(str(source), target)


# ------------------------------------------------------------------------------------------ the job

def run_slide_import_job(job: Job, progress: Progress, log: Callable[[str], None]) -> dict:
    """The import job of a slide (an IMPORT job whose params have ``slide``): the staged uploads are
    removed whatever happens (when the job ends, if it took chunked uploads: they are given back to their
    owner first, see :func:`webapp.datasets.slide_uploads.do_give_back_uploads`); a retried job starts
    afresh."""
    params = job.params
    staging_name = params.get("staging")
    folder_name = sweep.import_folder(job)
    committed = Dataset.objects.filter(project_id=job.project_id, storage_dir=folder_name).first()
    if committed is not None:
        if staging_name:
            media.delete(staging_name)
        return _result(committed)
    folder = media.work_path(folder_name)
    staging = media.work_path(staging_name) if staging_name else None
    if params.get("slide_upload"):
        # A killed attempt may have moved the uploaded slide into the folder about to be cleared: back it goes.
        staged, moved = staging / params["slide_upload"], folder / params["slide_upload"]
        if not staged.exists() and moved.is_file():
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(moved), staged)
    sweep.remove_job_paths(job, inputs=False)
    media.delete(folder_name)  # what a killed attempt wrote or published (no Dataset row names it: see above)
    try:
        if staging_name:
            staging = media.local_folder(staging_name)  # remote: downloaded from the storage
        if params.get("slide_upload"):
            slide_source, slide_root = staging / params["slide_upload"], "media"
        else:
            # The project's folder was checked when the job was queued (do_register_slide); here only the share's.
            slide_source, slide_root = resolve_slides_path(params["slide_path"], "path", folder="."), "slides"
        if params.get("detections_upload"):
            detections = staging / params["detections_upload"]
        else:
            detections = resolve_slides_path(params["detections_path"], "detections_path", folder=".")
        dataset = import_slide(job.project, name=params["name"], slide_source=slide_source, slide_root=slide_root,
                               slide_name=params["slide_name"], detections=detections,
                               detections_name=params["detections_name"], label_set_name=params.get("label_set"),
                               actor=job.created_by, provenance=params.get("provenance", ""), folder=folder,
                               progress=progress, log=log)
    except BaseException:
        # The uploads are given back as the job ends failed or cancelled (webapp.jobs.operations), from
        # the staging folder, which is removed then.
        if staging_name and not params.get("chunked_uploads"):
            media.delete(staging_name)
        raise
    if staging_name:
        media.delete(staging_name)
    return _result(dataset)


def _result(dataset: Dataset) -> dict:
    image = dataset.images.first()
    return {"dataset_id": dataset.pk, "dataset": dataset.name, "images": dataset.image_count,
            "nuclei": dataset.nucleus_count, "label_set": dataset.label_set.name if dataset.label_set else None,
            "format": dataset.format, "image_id": image.pk if image else None,
            "mpp": image.mpp if image else None, "width": image.width if image else None,
            "height": image.height if image else None}


def import_slide(project, *, name: str, slide_source: Path, slide_root: str, slide_name: str, detections: Path,
                 detections_name: str, label_set_name: str | None = None, actor=None, provenance: str = "",
                 folder: Path | None = None, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None) -> Dataset:
    """Store a slide and its detections as a dataset of one image, whole or not at all.

    ``slide_root`` "slides": ``slide_source`` stays where it is (under SLIDES_ROOT); "media": it is an
    uploaded file, moved into ``folder`` (a new folder of the media work root). The folder is published to
    the media storage before the rows commit, and deleted from it on any failure. Errors name ``slide_name``
    and ``detections_name`` (the user's names), never a server path."""
    from mlcore.slide_nuclei import geojson_class_names

    progress = progress or (lambda percent, message: None)
    log = log or (lambda line: None)
    refuse_taken_dataset_name(project, name)
    folder = folder or media.work_path(f"projects/{project.pk}/datasets/{uuid.uuid4().hex}")
    folder_name = media.name_of(folder)
    folder.mkdir(parents=True)
    stored_slide: Path | None = None
    parsed: _Parsed | None = None
    try:
        if slide_root == "media":
            stored_slide = folder / f"slide{slide_source.suffix.lower()}"
            shutil.move(str(slide_source), stored_slide)
            slide_file = media.name_of(stored_slide)
        else:
            stored_slide = slide_source
            slide_file = str(slide_source.relative_to(Path(settings.SLIDES_ROOT).resolve()))
        progress(0, f"reading the slide {slide_name}")
        with open_slide(stored_slide, slide_name) as slide:
            info = slide.info
            preview = slide.thumbnail(PREVIEW_SIZE)
        checksum = slide_checksum(stored_slide)
        log(f"slide {slide_name}: {info.width} x {info.height} px, {info.level_count} levels, "
            + (f"{info.mpp:.4f} um/px" if info.mpp else "no recorded MPP (taken as the model's scale)"))
        _write_png(folder / "preview.png", preview)
        thumb = PILImage.fromarray(preview)
        thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        thumb.save(folder / "thumbnail.png")
        progress(1, f"reading the classes of {detections_name}")
        if is_mask_file(detections_name):
            _check_mask_size(detections, detections_name, info)
            class_names = []  # an instance mask gives outlines only: its nuclei are unlabelled
        else:
            class_names = geojson_class_names(detections, detections_name)
        # SQLite lets one transaction write at a time in the whole database: the detections are read first, into
        # a file of the job's folder, so that the transaction holds the write lock only while the rows are
        # stored (held while a 101,432-nucleus GeoJSON was parsed, 200 s, every other save failed after 30 s).
        parsed = None if bulk.uses_copy() else _parsed_first(detections, detections_name, info, class_names,
                                                             folder, progress)
        media.publish(folder_name)  # the files are in the storage before any row names them
        with transaction.atomic():
            dataset = _import_rows(project, name=name, slide_name=slide_name, info=info, checksum=checksum,
                                   slide_file=slide_file, slide_root=slide_root, folder=folder,
                                   detections=detections, detections_name=detections_name,
                                   class_names=class_names, label_set_name=label_set_name, actor=actor,
                                   provenance=provenance, progress=progress, log=log, parsed=parsed)
            bulk.analyze_after_commit(Image, Nucleus, Label, CurrentLabel)
    except SlideError as exc:
        _put_back(slide_root, stored_slide, slide_source)
        media.delete(folder_name)
        raise DataError(None, str(exc)) from None
    except BaseException:
        _put_back(slide_root, stored_slide, slide_source)
        media.delete(folder_name)
        raise
    finally:
        if parsed is not None:
            parsed.spool.close()
    return dataset


def _put_back(slide_root: str, stored_slide: Path | None, slide_source: Path) -> None:
    """An uploaded slide moved into the dataset's folder goes back where it came from (the job's staging folder)
    before that folder is deleted: a chunked upload is given back from there when the job ends."""
    if slide_root == "media" and stored_slide is not None and stored_slide.is_file() and not slide_source.exists():
        shutil.move(str(stored_slide), slide_source)


def is_mask_file(name: str) -> bool:
    """Nuclei come from a QuPath GeoJSON, or from an instance-label mask as a (pyramidal) tiled TIFF."""
    return Path(name).suffix.lower() in (".tif", ".tiff")


def _check_mask_size(path: Path, display_name: str, info) -> None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
    except (tifffile.TiffFileError, OSError, IndexError) as exc:
        raise DataError(display_name, f"not a readable TIFF instance mask ({type(exc).__name__})") from None
    if len(shape) != 2 or tuple(shape) != (info.height, info.width):
        raise DataError(display_name, f"the instance mask is {' x '.join(map(str, shape[::-1]))} px, the slide "
                                      f"{info.width} x {info.height}: a mask must match the slide's level 0")


def _write_png(path: Path, rgb: np.ndarray) -> None:
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(path, compress_level=3)


def _label_set_for(project, class_names: list[str], requested: str | None, dataset_name: str) -> LabelSet | None:
    if not class_names:
        return None
    from mlcore.readers._common import make_label_set

    found = make_label_set(requested or dataset_name, class_names, None, None)
    label_set, spec = resolve_label_set(project, found, requested)
    return label_set if label_set is not None else create_label_set(project, spec)


def _refuse_registered(project, checksum: str, slide_name: str) -> None:
    clash = Image.objects.filter(project=project, checksum=checksum).values_list("name", "dataset__name").first()
    if clash is not None:
        raise DataError(slide_name, f"this slide was already registered in the project (as {quoted(clash[0])} "
                                    f"in dataset {quoted(clash[1])})")


def _detections(detections: Path, detections_name: str, info, counts: dict, skipped: dict):
    """The nuclei of the GeoJSON or instance mask that lie on the slide, one at a time (``counts`` and
    ``skipped`` are filled as they are read, see :func:`mlcore.slide_nuclei.inside_slide`)."""
    from mlcore.slide_nuclei import inside_slide, iter_geojson_nuclei, iter_mask_nuclei

    return inside_slide(iter_mask_nuclei(detections, detections_name) if is_mask_file(detections_name)
                        else iter_geojson_nuclei(detections, detections_name, skipped), info.width, info.height, counts)


PARSING_SHARE = 90.0  # of the progress bar, where SQLite's import reads the detections before it stores them


class _Parsed:
    """The detections read before the import's transaction (SQLite): their rows, ``CHUNK_NUCLEI`` at a time,
    pickled into an unnamed temporary file of the job's folder (nothing is left of it however the process
    ends, and publishing the folder does not see it), with the counts their reading gave."""

    def __init__(self, spool, chunks: int, total: int, class_names: list[str], counts: dict, skipped: dict):
        self.spool, self.chunks, self.total, self.counts, self.skipped = spool, chunks, total, counts, skipped
        self.names = [*class_names, None]   # by position in the file's classes; -1: none

    def __iter__(self):
        """(row, class name) per nucleus, in the file's order; the file is closed (and gone) at the end."""
        try:
            self.spool.seek(0)
            for _ in range(self.chunks):
                rows, positions = pickle.load(self.spool)
                yield from zip(rows, [self.names[position] for position in positions])
        finally:
            self.spool.close()


def _parsed_first(detections: Path, detections_name: str, info, class_names: list[str], folder: Path,
                  progress: Progress) -> _Parsed:
    """Read every nucleus now, outside the transaction; a DataError is raised here, as the import would."""
    counts: dict = {}
    skipped: dict = {}
    position = {class_name: i for i, class_name in enumerate(class_names)}
    size = max(1, detections.stat().st_size)
    # The spool takes about the detections file's size (the rows' outlines are its text, less the GeoJSON's
    # envelope): known before anything is written.
    disk_space.require_free(size, folder)
    spool = tempfile.TemporaryFile(dir=folder)
    chunks = total = 0
    rows: list[tuple] = []
    positions: list[int] = []

    def dump() -> None:
        nonlocal chunks, total
        pickle.dump((rows, positions), spool, protocol=pickle.HIGHEST_PROTOCOL)
        chunks, total = chunks + 1, total + len(rows)

    try:
        for nucleus in _detections(detections, detections_name, info, counts, skipped):
            rows.append(nucleus_row(nucleus))
            positions.append(position.get(nucleus.class_name, -1))
            if len(rows) >= CHUNK_NUCLEI:
                dump()
                rows, positions = [], []
                # The reader does not say how far into the file it is; the rows written so far (smaller than
                # the GeoJSON's text, more so for a mask) give a rough idea.
                progress(2 + (PARSING_SHARE - 2) * min(1.0, spool.tell() / size),
                         f"{total:,} nuclei read from {detections_name}")
        if rows:
            dump()
    except BaseException as exc:
        spool.close()
        disk_error = disk_space.disk_error(exc, folder, needed=size)
        if disk_error is not None:
            raise disk_error from exc
        raise
    return _Parsed(spool, chunks, total, class_names, counts, skipped)


def _import_rows(project, *, name, slide_name, info, checksum, slide_file, slide_root, folder: Path, detections,
                 detections_name, class_names, label_set_name, actor, provenance, progress, log,
                 parsed: _Parsed | None = None) -> Dataset:
    _refuse_registered(project, checksum, slide_name)
    label_set = _label_set_for(project, class_names, label_set_name, name)
    class_index = {class_name: i for i, class_name in enumerate(label_set.class_names)} if label_set else {}
    dataset = Dataset.objects.create(project=project, name=name, label_set=label_set, format=Dataset.Format.SLIDE,
                                     provenance=provenance or f"slide {slide_name} with detections {detections_name}",
                                     uploaded_by=actor, storage_dir=media.name_of(folder))
    try:
        with transaction.atomic():  # a savepoint: the same slide registered twice at once meets the constraint here
            image = Image.objects.create(
                project=project, dataset=dataset, name=Path(slide_name).stem[:255] or "slide",
                file=media.name_of(folder / "preview.png"), mask_file="",
                thumbnail_file=media.name_of(folder / "thumbnail.png"), width=info.width, height=info.height,
                checksum=checksum, group=slide_name[:255], slide_file=slide_file, slide_root=slide_root, mpp=info.mpp)
    except IntegrityError:
        _refuse_registered(project, checksum, slide_name)  # the other registration's row, named
        raise
    copy = bulk.uses_copy()
    trusted = False
    if copy:
        # As a tile import does (webapp.datasets.importing._import_rows): the image row's references are
        # checked now, which locks the rows every bulk row below refers to, so that where the database role
        # may, the per-row foreign-key checks of the bulk rows are left out; they are turned on again below.
        bulk.check_constraints_now()
        trusted = bulk.trust_own_references()
    # PostgreSQL: each chunk is written in a background thread while this one parses the next features.
    background = _Writer() if copy else None
    writer = _ChunkWriter(image, label_set, actor, copy, background)
    size = max(1, detections.stat().st_size)
    total = 0
    try:
        if parsed is None:
            counts: dict = {}
            skipped: dict = {}   # features that are not nuclei, by QuPath's objectType
            nuclei = ((nucleus_row(nucleus), nucleus.class_name)
                      for nucleus in _detections(detections, detections_name, info, counts, skipped))
        else:
            counts, skipped, nuclei = parsed.counts, parsed.skipped, iter(parsed)
        for row, class_name in nuclei:
            index = -1
            if class_name is not None and label_set is not None:
                index = class_index[class_name]
            writer.add(row, index)
            total += 1
            if len(writer) >= CHUNK_NUCLEI:
                writer.flush()
                if parsed is not None:
                    done = PARSING_SHARE + (98 - PARSING_SHARE) * total / max(1, parsed.total)
                else:  # the reader does not say how far into the file it is; the bytes per nucleus so far do
                    done = min(98.0, 2 + 96 * writer.bytes_estimate(total, size))
                progress(done, f"{total:,} nuclei stored")
        writer.flush()
    except BaseException:
        if background is not None:
            background.wait(raise_error=False)  # the transaction is rolled back only once nothing writes in it
        raise
    if background is not None:
        background.wait()
    if trusted:
        bulk.check_own_references()
    outside = (f"{counts['outside']:,} detection{'s' if counts['outside'] != 1 else ''} of {detections_name} "
               f"lie wholly right of or below the {info.width:,} x {info.height:,} slide") if counts["outside"] else ""
    if total == 0:
        not_nuclei = ", ".join(f"{count:,} {kind}{'s' if count != 1 else ''}" for kind, count in skipped.items())
        raise DataError(detections_name, f"none of its detections lies on the slide ({outside})" if outside else
                        "no nuclei found in this file" if is_mask_file(detections_name)
                        else f"no detections found in this file, only {not_nuclei} (QuPath's objectType): export "
                             "the detections or cells, or give these features the objectType detection" if not_nuclei
                        else "no detections (Polygon features) found in this file")
    if outside:
        log(f"{outside}: left out (another slide's detections, or coordinates offset in the export?)")
    image.nucleus_count = total
    image.save(update_fields=["nucleus_count"])
    dataset.image_count, dataset.nucleus_count = 1, total
    dataset.save(update_fields=["image_count", "nucleus_count"])
    labelled = writer.labelled
    log(f"stored {total:,} nuclei of slide {slide_name}" + (
        f", {labelled:,} classified in label set {label_set.name}" if label_set else " (none classified)"))
    audit.record("dataset.imported", actor=actor, target=dataset, name=name, format=Dataset.Format.SLIDE,
                 images=1, nuclei=total, label_set=label_set.name if label_set else None, slide=slide_name,
                 slide_root=slide_root)
    return dataset


def nucleus_row(nucleus) -> tuple:
    """A nucleus's columns but its image and instance id: box, centroid, area and outline (JSON text)."""
    outline = np.asarray(nucleus.outline).reshape(-1, 2).tolist()
    x0, y0, x1, y1 = (int(v) for v in nucleus.bbox)
    cx, cy = (float(v) for v in nucleus.centroid)
    return (x0, y0, x1, y1, cx, cy, int(nucleus.area), json.dumps(outline, separators=(",", ":")))


class _ChunkWriter:
    """Nuclei (and the ground-truth labels of the classified ones) waiting for one bulk write."""

    def __init__(self, image: Image, label_set: LabelSet | None, actor, copy: bool, background=None):
        self.image, self.label_set, self.copy, self.background = image, label_set, copy, background
        self.author_id = actor.pk if getattr(actor, "is_authenticated", False) else None
        self.rows: list[tuple] = []
        self.classes: list[int] = []
        self.instance_id = 0
        self.labelled = 0
        self._bytes_per_nucleus: float | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def bytes_estimate(self, count: int, size: int) -> float:
        """The fraction of the file read, guessed from the outline sizes (a GeoJSON Feature is about
        its ring's text plus a fixed envelope)."""
        if self._bytes_per_nucleus is None:
            return 0.0
        return min(1.0, count * self._bytes_per_nucleus / size)

    def add(self, row: tuple, class_index: int) -> None:
        """A nucleus's :func:`nucleus_row`, numbered in the order they come."""
        self.instance_id += 1
        self.rows.append((self.instance_id, *row))
        self.classes.append(class_index)
        if self._bytes_per_nucleus is None:
            self._bytes_per_nucleus = 220.0 + len(row[-1])   # the feature's envelope and its ring's text

    def flush(self) -> None:
        if not self.rows:
            return
        rows, classes = self.rows, self.classes
        self.rows, self.classes = [], []
        if self.background is None:
            self._write(rows, classes)
        else:
            self.background.submit(self._write, rows, classes)

    def _write(self, rows: list[tuple], classes: list[int]) -> None:
        ids = bulk.allocate_ids(Nucleus, len(rows))
        image_id = self.image.pk
        from .importing import CURRENT_COLUMNS, LABEL_COLUMNS, NUCLEUS_COLUMNS

        if self.copy:
            bulk.copy_text(Nucleus, NUCLEUS_COLUMNS, [
                f"{pk}\t{image_id}\t{i}\t{x0}\t{y0}\t{x1}\t{y1}\t{cx!r}\t{cy!r}\t{area}\t{outline}\n"
                for pk, (i, x0, y0, x1, y1, cx, cy, area, outline) in zip(ids, rows)])
        else:
            bulk.insert_rows(Nucleus, NUCLEUS_COLUMNS, ((pk, image_id, *row) for pk, row in zip(ids, rows)),
                             json_encoded=True)
        labelled = [(pk, c) for pk, c in zip(ids, classes) if c >= 0]
        if self.label_set is None or not labelled:
            return
        self.labelled += len(labelled)
        label_ids = bulk.allocate_ids(Label, len(labelled))
        label_set_id, source, now = self.label_set.pk, LabelSource.GROUND_TRUTH, timezone.now()
        if self.copy:  # COPY text, as a tile import writes its labels
            author = "\\N" if self.author_id is None else str(self.author_id)
            tail = f"\t{source}\t{author}\t\t{now.isoformat()}\n"
            bulk.copy_text(Label, LABEL_COLUMNS, [f"{label_id}\t{pk}\t{label_set_id}\t{c}{tail}"
                                                  for label_id, (pk, c) in zip(label_ids, labelled)])
            bulk.copy_text(CurrentLabel, CURRENT_COLUMNS, [f"{pk}\t{label_set_id}\t{label_id}\t{c}\t{source}\n"
                                                           for label_id, (pk, c) in zip(label_ids, labelled)])
            return
        bulk.insert_rows(Label, LABEL_COLUMNS, ((label_id, pk, label_set_id, c, source, self.author_id, "", now)
                                                for label_id, (pk, c) in zip(label_ids, labelled)))
        bulk.insert_rows(CurrentLabel, CURRENT_COLUMNS, ((pk, label_set_id, label_id, c, source)
                                                         for label_id, (pk, c) in zip(label_ids, labelled)))


def slide_images(queryset=None):
    """Images that are whole slides (their pixels are read from the slide, never from ``file``)."""
    queryset = queryset if queryset is not None else Image.objects.all()
    return queryset.exclude(slide_file="")
