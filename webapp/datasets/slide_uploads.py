"""Resumable, chunked uploads of whole-slide images and their detections (issue 17).

A slide is 1-5 GB: one multipart request of that size fails on any network hiccup and starts again from
nothing. Here a file is sent as a sequence of ``PUT``s of raw bytes, each saying where it goes
(``Content-Range: bytes START-END/TOTAL``); a chunk is appended only where the file ends now, so a client
that lost its connection asks how far the server got (``GET``) and carries on from there.

No database row: an upload is a folder ``DATA_DIR/uploads/slides/<id>`` holding ``data`` (the bytes received
so far, so its size is the offset) and ``upload.json`` (project, user, file name, size). The folder is on the
web host's own disk, not in the media storage: an object cannot be appended to, and a chunk is appended. (So
with several web hosts, the chunks of one upload must reach the same host: route uploads stickily.)
Registering a slide with a complete upload moves ``data`` into the import's staging folder, which is then
published to the media storage (:func:`claim_upload`, called by
:func:`webapp.datasets.slide_import.do_register_slide`). What is abandoned is removed by the sweep
(:func:`webapp.jobs.sweep.sweep_orphans`, through :mod:`webapp.datasets.orphans` and :func:`sweep_abandoned`)
once untouched for :data:`MAX_AGE`.

An import that does not succeed (it failed, or was cancelled) gives its chunked uploads back under their ids
(:func:`do_give_back_uploads`, as the job ends), so that the user registers again without sending gigabytes
again. A file sent whole in the registration's multipart request is given back the same way, under an id it
is given as it is staged (:func:`sent_entry`). They are kept in the media storage, as ``slide-uploads/<id>/`` (:data:`STORED_FOLDER`: ``data`` and
``upload.json``), where :func:`get_upload` finds them on any web host (a *stored* upload: complete, nothing to
append): the worker that ends the job may share no disk with the web host that received the chunks. With
local media storage the staged file is renamed there (the staging folder is in the same tree); with a remote
store it is copied inside the store. Either way it counts as touched when given back, and the sweep removes
it a day later.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from django.http import Http404

from mlcore.slides import SLIDE_SUFFIXES
from webapp.core import audit, media
from webapp.core.domain_errors import Conflict

from .importing import ImportRejected

logger = logging.getLogger(__name__)
FOLDER = "uploads/slides"  # under DATA_DIR: host-local, never in the media storage
# In the media storage: the uploads an import that did not succeed gave back, as slide-uploads/<id>/data and
# slide-uploads/<id>/upload.json (the worker may share no disk with the web host that received the chunks).
STORED_FOLDER = "slide-uploads"
MAX_CHUNK_BYTES = 64 * 1024**2
BLOCK_BYTES = 1024**2  # a chunk is read from the request and written this much at a time
MAX_AGE = timedelta(days=1)  # an upload untouched this long is abandoned: the sweep removes it
DETECTIONS_SUFFIXES = (".geojson", ".json", ".tif", ".tiff")
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class UploadConflict(Conflict):
    """A chunk that does not start where the received bytes end (409): the client resumes at ``offset``."""

    default_code = "chunk_offset"

    def __init__(self, message: str, offset: int):
        super().__init__(message, offset=offset)
        self.offset = offset


@dataclass
class SlideUpload:
    id: str
    folder: Path
    project_id: int
    user_id: int
    filename: str
    size: int
    stored: bool = False  # given back into the media storage by an import that did not succeed: STORED_FOLDER/<id>/

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def stored_name(self) -> str:
        """Its folder's storage name in the media storage (where a stored upload is)."""
        return stored_name(self.id)

    @property
    def offset(self) -> int:
        if self.stored:
            return self.size
        try:
            return self.data.stat().st_size
        except FileNotFoundError:
            return 0

    @property
    def complete(self) -> bool:
        return self.offset == self.size

    def state(self) -> dict:
        offset = self.offset
        return {"id": self.id, "filename": self.filename, "offset": offset, "size": self.size,
                "complete": offset == self.size}


def stored_name(upload_id: str) -> str:
    return f"{STORED_FOLDER}/{upload_id}"


def uploads_root() -> Path:
    return Path(settings.DATA_DIR) / FOLDER


def _client_name(filename: str) -> str:
    return PurePosixPath(str(filename or "").replace("\\", "/")).name[:200]


def suffix_kind(filename: str) -> set[str]:
    """What a file of this name can be: {"slide"}, {"detections"}, both (a TIFF) or neither."""
    suffix = Path(filename).suffix.lower()
    return ({"slide"} if suffix in SLIDE_SUFFIXES else set()) | (
        {"detections"} if suffix in DETECTIONS_SUFFIXES else set())


def do_start_slide_upload(project, *, actor, filename: str, size: int) -> SlideUpload:
    """Make room for an upload of ``size`` bytes of ``filename`` (a slide or its detections). Refusals
    (ImportRejected) start with the field they are about."""
    from webapp.jobs.deletion import refuse_while_deleting

    name = _client_name(filename)
    if not name:
        raise ImportRejected("give the name of the file to upload", field="filename")
    if not suffix_kind(name):
        raise ImportRejected(f"{name!r} is neither a slide ({', '.join(SLIDE_SUFFIXES)}) nor its "
                             f"detections ({', '.join(DETECTIONS_SUFFIXES)})", field="filename")
    limit = settings.SLIDE_UPLOAD_MAX_BYTES
    if size is None or size < 1:
        raise ImportRejected(f"{name!r} must have at least one byte", field="size")
    if size > limit:
        instead = ("register it by its path under SLIDES_ROOT instead" if settings.SLIDES_ROOT else
                   "this server has no slide folder (SLIDES_ROOT) to register it from: ask its administrator")
        raise ImportRejected(f"{name!r} is {size / 1024**3:.2f} GiB, over this server's limit of "
                             f"{limit / 1024**3:.2f} GiB (SLIDE_UPLOAD_MAX_BYTES); {instead}", field="size")
    refuse_while_deleting(project, "A slide upload")
    upload_id = uuid.uuid4().hex
    folder = uploads_root() / upload_id
    folder.mkdir(parents=True)
    upload = SlideUpload(upload_id, folder, project.pk, actor.pk, name, int(size))
    try:
        upload.data.touch()
        (folder / "upload.json").write_text(json.dumps(
            {"project_id": project.pk, "user_id": actor.pk, "filename": name, "size": int(size)}))
        with transaction.atomic():
            audit.record("slide_upload.start", actor=actor, target=project, upload=upload_id, filename=name,
                         size=int(size))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return upload


def get_upload(project, user, upload_id: str) -> SlideUpload:
    """The upload ``user`` started in ``project``; 404 for anyone else's (its existence is theirs)."""
    missing = Http404("No such slide upload (it was finished, removed, or abandoned for over a day), or it "
                      "is not yours: start the upload again.")
    if not ID_PATTERN.match(str(upload_id or "")):
        raise missing
    folder = uploads_root() / upload_id
    stored = False
    try:
        meta = json.loads((folder / "upload.json").read_text())
    except (OSError, ValueError):
        meta = _stored_meta(upload_id)
        if meta is None:
            raise missing from None
        stored = True
    if meta.get("project_id") != project.pk or meta.get("user_id") != user.pk:
        raise missing
    return SlideUpload(upload_id, folder, meta["project_id"], meta["user_id"], meta["filename"], int(meta["size"]),
                       stored=stored)


def _stored_meta(upload_id: str) -> dict | None:
    """The upload.json of an upload given back into the media storage, if any."""
    try:
        return json.loads(media.read_stored(f"{stored_name(upload_id)}/upload.json"))
    except (OSError, ValueError):
        return None


def parse_content_range(header: str | None, upload: SlideUpload) -> tuple[int, int]:
    """(start, length) of a chunk from its ``Content-Range``; ImportRejected when it is malformed."""
    match = CONTENT_RANGE.match((header or "").strip())
    if not match:
        raise ImportRejected("send each chunk with a header 'Content-Range: bytes START-END/TOTAL' "
                             "(END inclusive)", field="Content-Range")
    start, end, total = (int(group) for group in match.groups())
    if total != upload.size:
        raise ImportRejected(f"the total {total} is not the size of {upload.filename!r} given when "
                             f"the upload started ({upload.size})", field="Content-Range")
    if end < start or end >= total:
        raise ImportRejected(f"bytes {start}-{end} is not a range inside {upload.filename!r} "
                             f"(0-{total - 1})", field="Content-Range")
    length = end - start + 1
    if length > MAX_CHUNK_BYTES:
        raise ImportRejected(f"a chunk is at most {MAX_CHUNK_BYTES // 1024**2} MiB; this one is "
                             f"{length / 1024**2:.1f} MiB", field="Content-Range")
    return start, length


def append_chunk(upload: SlideUpload, start: int, length: int, stream) -> dict:
    """Append ``length`` bytes read from ``stream`` (a block at a time) when ``start`` is where the received
    bytes end; UploadConflict otherwise. A chunk is whole or not at all: a short body is cut off again."""
    if upload.stored:  # complete, in the media storage: no chunk starts at its end
        raise UploadConflict(f"{upload.filename!r} has been received whole ({upload.size} bytes): register the "
                             "slide with it", upload.size)
    with open(upload.data, "r+b") as data:
        # One chunk at a time per upload: two clients (or a retry racing its original) cannot interleave.
        fcntl.flock(data, fcntl.LOCK_EX)
        offset = os.fstat(data.fileno()).st_size
        if start != offset:
            raise UploadConflict(f"{upload.filename!r}: this chunk starts at byte {start}, but {offset} bytes have "
                                 f"been received: send the chunk that starts at {offset}", offset)
        data.seek(offset)
        written = 0
        try:
            while written < length:
                block = stream.read(min(BLOCK_BYTES, length - written))
                if not block:
                    break
                data.write(block)
                written += len(block)
            if written != length or stream.read(1):
                raise ImportRejected(f"the body of this chunk of {upload.filename!r} is not the "
                                     f"{length} bytes its Content-Range announces", field="Content-Range")
            data.flush()
        except BaseException:
            data.truncate(offset)
            raise
    return upload.state()


def do_delete_slide_upload(upload: SlideUpload, *, actor) -> None:
    shutil.rmtree(upload.folder, ignore_errors=True)
    if upload.stored:
        media.delete(upload.stored_name)
    with transaction.atomic():
        audit.record("slide_upload.delete", actor=actor, target=f"projects.project:{upload.project_id}",
                     upload=upload.id, filename=upload.filename)


def claim_upload(project, actor, upload_id: str, field: str, kind: str) -> SlideUpload:
    """The complete upload ``upload_id`` of ``actor`` in ``project``, usable as a ``kind`` ("slide" or
    "detections"); ImportRejected naming ``field`` and the user's file otherwise."""
    try:
        upload = get_upload(project, actor, upload_id)
    except Http404:
        raise ImportRejected(f"there is no upload {upload_id!r} of yours in this project (an import that is "
                             "queued, running or succeeded took it, or it was removed, or abandoned for over a "
                             "day): upload the file again", field=field) from None
    if kind not in suffix_kind(upload.filename):
        allowed = SLIDE_SUFFIXES if kind == "slide" else DETECTIONS_SUFFIXES
        raise ImportRejected(f"{upload.filename!r} is not a {kind} file ({', '.join(allowed)})", field=field)
    offset = upload.offset
    if offset != upload.size:
        raise ImportRejected(f"the upload of {upload.filename!r} is not complete ({offset:,} of "
                             f"{upload.size:,} bytes received): send the rest before registering the slide",
                             field=field)
    return upload


def taken_entry(upload: SlideUpload, kind: str, staged_file: str) -> dict:
    """What a slide import's job keeps (``params["chunked_uploads"]``) of a chunked upload it took, staged as
    ``staged_file`` of its staging folder: enough to give it back (:func:`do_give_back_uploads`)."""
    return {"id": upload.id, "kind": kind, "file": staged_file, "filename": upload.filename, "size": upload.size}


def sent_entry(filename: str, size: int, kind: str, staged_file: str) -> dict | None:
    """The same as :func:`taken_entry` for a file sent in the registration's own (multipart) request, staged
    as ``staged_file``: it becomes an upload with an id of its own, so that an import that does not succeed
    gives it back like a chunked one (the user registers again with ``<kind>_upload_id`` instead of sending
    the gigabytes again). None for a file that could not be used as a ``kind`` upload (a name without a
    slide's or detections' suffix: :func:`claim_upload` would refuse it)."""
    name = _client_name(filename)
    if kind not in suffix_kind(name):
        return None
    return {"id": uuid.uuid4().hex, "kind": kind, "file": staged_file, "filename": name, "size": int(size),
            "chunked": False}


def do_give_back_uploads(job) -> str:
    """Make the uploads that the slide import ``job`` took (chunked ones, and the files sent in its request:
    :func:`sent_entry`) usable again under their ids, by the same
    user in the same project, when the job ended without succeeding (failed, or cancelled): called as the job
    ends (registered with :func:`webapp.jobs.sweep.register`), before its staging folder is removed, and only
    then, so a retried job (its worker lost) still finds its staged files. Each one given back writes an audit
    row. Returns a sentence for the job's owner naming what was kept (the job's error, or its log), or ""."""
    params = job.params or {}
    entries, staging_name = params.get("chunked_uploads") or [], params.get("staging")
    if not entries or not staging_name or job.created_by_id is None:
        return ""
    kept = []
    for entry in entries:
        try:
            if _give_back(job, staging_name, entry):
                kept.append(entry)
        except Exception:  # never keeps the job from ending: the upload is lost, as before, and not named
            logger.exception("job %s: could not give back the upload %s", job.pk, entry.get("id"))
    for entry in kept:
        audit.record("slide_upload.kept", actor=job.created_by, target=f"projects.project:{job.project_id}",
                     upload=entry["id"], filename=entry["filename"], job=job.pk)
    return _kept_sentence(kept)


def _kept_sentence(kept: list[dict]) -> str:
    """What the owner of an import that did not succeed reads about the uploads given back."""
    if not kept:
        return ""
    # The upload form (static/js/slides.js) sends in chunks and remembers its uploads; a file sent in the
    # registration's request is reused only by its id.
    by_form = all(entry.get("chunked", True) for entry in kept)
    if len(kept) == 1:
        entry = kept[0]
        form = "; the project page's upload form reuses it when the same file is chosen again" if by_form else ""
        return (f"The uploaded {entry['kind']} {entry['filename']} is kept as upload {entry['id']} for a day: "
                f"register again with it ({entry['kind']}_upload_id{form}).")
    names = " and ".join(f"{entry['kind']} {entry['filename']}" for entry in kept)
    ids = " and ".join(entry["id"] for entry in kept)
    fields = ", ".join(f"{entry['kind']}_upload_id" for entry in kept)
    form = "; the project page's upload form reuses them when the same files are chosen again" if by_form else ""
    return f"The uploaded {names} are kept as uploads {ids} for a day: register again with them ({fields}{form})."


def _meta(job, entry: dict) -> bytes:
    return json.dumps({"project_id": job.project_id, "user_id": job.created_by_id, "filename": entry["filename"],
                       "size": int(entry["size"])}).encode()


def _give_back(job, staging_name: str, entry: dict) -> bool:
    """The staged file of ``entry`` as the stored upload STORED_FOLDER/<id>/data with its upload.json, touched
    now: renamed there (local storage: the same tree as the staging folder), or copied inside the store
    (remote). False when there is nothing to give back."""
    from webapp.jobs.sweep import import_folder

    from .models import Dataset

    stored = stored_name(entry["id"])
    if media.is_remote():
        try:
            media.copy_stored(f"{staging_name}/{entry['file']}", f"{stored}/data")
        except FileNotFoundError:
            return False
        media.save_stored(f"{stored}/upload.json", _meta(job, entry))
        return True
    staged = media.work_path(staging_name) / entry["file"]
    if not staged.is_file():
        # A killed attempt moved the slide into the job's dataset folder (a retry would have moved it back);
        # unless that import committed, it is the upload's.
        folder_name = import_folder(job)
        moved = media.work_path(folder_name) / entry["file"]
        if not moved.is_file() or Dataset.objects.filter(storage_dir=folder_name).exists():
            return False
        staged = moved
    folder = media.work_path(stored)
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        return False  # an upload of that id is there already: never overwritten
    data = folder / "data"
    try:
        shutil.move(str(staged), data)  # a rename
        (folder / "upload.json").write_bytes(_meta(job, entry))
        os.utime(data)  # touched now: the sweep counts its day from here
    except BaseException:
        if data.exists() and not staged.exists():
            shutil.move(str(data), staged)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return True


def sweep_abandoned(now: float | None = None) -> list[str]:
    """Remove the uploads untouched for :data:`MAX_AGE` (their newest file tells); returns their paths
    relative to DATA_DIR. An upload in progress is touched by every chunk, so only abandoned ones go."""
    root = uploads_root()
    if not root.is_dir():
        return []
    oldest = (now or time.time()) - MAX_AGE.total_seconds()
    removed = []
    for folder in sorted(root.iterdir()):
        try:
            touched = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
        except OSError:
            continue
        if touched < oldest:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
            removed.append(folder.relative_to(settings.DATA_DIR).as_posix())
    return removed
