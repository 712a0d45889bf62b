"""Media files (uploads, images, masks, checkpoints, job outputs, exports) through Django's storage API.

Every name here is a storage name: a relative POSIX path such as ``projects/3/datasets/<uuid>/images/a.png``,
the same string the database keeps. Two modes, chosen by ``STORAGE_URL``:

- **local** (the embedded default): the storage is a ``FileSystemStorage`` on ``MEDIA_ROOT``. The work root
  is ``MEDIA_ROOT`` itself, :func:`local_path` is the file, :func:`publish` has nothing to do.
- **remote** (``STORAGE_URL=s3://...``, any S3-compatible store): the bucket is the truth and
  ``MEDIA_ROOT`` is never touched. Each process keeps a local mirror of the names it used under
  ``DATA_DIR/media-mirror`` (the work root): a job writes its files there and :func:`publish` uploads them
  *before* the database refers to them; a reader's :func:`local_path` downloads a name on first use. Names
  are never rewritten in place (a new dataset, model version or output gets a new folder), so a mirrored
  file never goes stale; the mirror is a cache that may be deleted at any time.

Downloads to a browser go through :func:`download_response`: a streamed file in local mode, a redirect
to a pre-signed URL that expires ``MEDIA_URL_EXPIRY_S`` seconds after the permission check in remote mode.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, HttpResponseRedirect


class MediaNameError(ValueError):
    """A storage name that is absolute, climbs out with '..', or is empty."""


def is_remote() -> bool:
    return bool(getattr(settings, "STORAGE_URL", ""))


def root() -> Path:
    """Where this process reads and writes media files: MEDIA_ROOT (local) or the mirror (remote)."""
    if is_remote():
        return Path(settings.MEDIA_MIRROR)
    return Path(settings.MEDIA_ROOT)


def clean_name(name: str | os.PathLike) -> str:
    """A storage name as the database keeps it, refused when it could leave the media tree."""
    text = str(name).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if not parts or text.startswith("/") or ".." in parts:
        raise MediaNameError(f"not a media name: {text!r}")
    return PurePosixPath(*parts).as_posix()


def name_of(path: Path) -> str:
    """The storage name of a path under the work root."""
    return Path(path).resolve().relative_to(root().resolve()).as_posix()


def work_path(name: str) -> Path:
    """The local path a job writes ``name`` to (then :func:`publish`)."""
    return root() / clean_name(name)


# --------------------------------------------------------------------------------------------- reading

_download_lock = threading.Lock()


def local_path(name: str) -> Path:
    """A local file holding ``name``'s bytes: the file itself (local), or the mirror's copy, downloaded
    on first use as a stream (remote). Raises FileNotFoundError when the storage has no such name."""
    path = work_path(name)
    if not is_remote():
        return path
    if path.is_file():
        try:
            os.utime(path)   # recently used: trim_mirror removes the least recently used first
        except FileNotFoundError:   # trimmed just now: download it again below
            pass
        else:
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target, then rename: a reader never sees half a file, and two processes that
    # download the same name both end with a whole one.
    handle, partial = tempfile.mkstemp(prefix=".part-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            _download(clean_name(name), sink)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def _missing_raises_file_not_found(name: str):
    """An S3 call on the object ``name``: its 404 raised as FileNotFoundError, as a local file's would be."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            raise FileNotFoundError(f"no media file {name!r} in the storage") from None
        raise


def _download(name: str, sink) -> None:
    storage = default_storage
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:  # S3: boto3's managed transfer, in parts, straight to the file
        with _missing_raises_file_not_found(name):
            bucket.download_fileobj(storage._normalize_name(name), sink)
        return
    if not storage.exists(name):
        raise FileNotFoundError(f"no media file {name!r} in the storage")
    with storage.open(name, "rb") as source:
        shutil.copyfileobj(source, sink, 1024 * 1024)


def exists(name: str) -> bool:
    if is_remote():
        return work_path(name).is_file() or default_storage.exists(clean_name(name))
    return work_path(name).exists()


def read_stored(name: str) -> bytes:
    """The bytes of a small stored file, read from the storage itself, never from this host's mirror (which
    may keep a copy of a name deleted since by another host). FileNotFoundError when there is none."""
    if not is_remote():
        return work_path(name).read_bytes()
    sink = io.BytesIO()
    _download(clean_name(name), sink)
    return sink.getvalue()


# --------------------------------------------------------------------------------------------- writing

def publish(name: str) -> list[str]:
    """Upload the file or folder ``name`` of the work root to the storage (remote; local: nothing to
    do). Returns the names uploaded. Large files go up in parts, streamed from disk."""
    path = work_path(name)
    if not is_remote():
        return []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    uploaded = []
    for file in files:
        file_name = name_of(file)
        _upload(file, file_name)
        uploaded.append(file_name)
    return uploaded


def _upload(path: Path, name: str) -> None:
    storage = default_storage
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        bucket.upload_file(str(path), storage._normalize_name(name))
        return
    from django.core.files import File

    with open(path, "rb") as source:
        storage.save(name, File(source))


def save_stored(name: str, data: bytes) -> None:
    """Store the small file ``name`` (local: in the work root; remote: straight into the storage, no mirror
    copy left on this host)."""
    name = clean_name(name)
    if not is_remote():
        path = work_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    storage = default_storage
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        bucket.upload_fileobj(io.BytesIO(data), storage._normalize_name(name))
        return
    from django.core.files.base import ContentFile

    storage.delete(name)
    storage.save(name, ContentFile(data))


def copy_stored(source: str, target: str) -> None:
    """Copy the stored file ``source`` to the name ``target``. Remote: inside the store (a server-side copy,
    in parts for a large file: no byte passes through this host, and nothing is left in its mirror); local: a
    copy in the work root. FileNotFoundError when there is no ``source``."""
    source, target = clean_name(source), clean_name(target)
    if not is_remote():
        work_path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work_path(source), work_path(target))
        return
    storage = default_storage
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        with _missing_raises_file_not_found(source):
            bucket.copy({"Bucket": bucket.name, "Key": storage._normalize_name(source)},
                        storage._normalize_name(target))
        return
    if not storage.exists(source):
        raise FileNotFoundError(f"no media file {source!r} in the storage")
    with storage.open(source, "rb") as data:
        storage.delete(target)
        storage.save(target, data)


def delete(name: str) -> None:
    """Remove a file or a whole folder ``name``: from the work root and, remote, from the bucket."""
    name = clean_name(name)
    forget_local_copy(name)
    if not is_remote():
        return
    bucket = getattr(default_storage, "bucket", None)
    if bucket is not None:
        key = default_storage._normalize_name(name)
        bucket.objects.filter(Prefix=key + "/").delete()   # a folder: everything under it
        bucket.Object(key).delete()                         # a file (no error when there is none)
        return
    default_storage.delete(name)


def forget_local_copy(name: str) -> None:
    """Remove this host's copy of ``name`` (a file or a folder of the mirror), never the stored files."""
    path = work_path(clean_name(name))
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def names(prefix: str = "") -> Iterator[str]:
    """Every stored file name under ``prefix`` (a folder), for sweeps and consistency checks."""
    for name, _ in listing(prefix):
        yield name


def listing(prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every stored file under ``prefix`` as (name, last modified as a POSIX time): the sweep keeps what
    is younger than its grace period. One listing of the bucket, no request per file."""
    if is_remote():
        bucket = default_storage.bucket
        location = default_storage._normalize_name(clean_name(prefix)) + "/" if prefix else \
            (default_storage.location.strip("/") + "/" if default_storage.location else "")
        strip = len(default_storage.location.strip("/")) + 1 if default_storage.location else 0
        for summary in bucket.objects.filter(Prefix=location):
            yield summary.key[strip:], summary.last_modified.timestamp()
        return
    base = root() / clean_name(prefix) if prefix else root()
    if not base.is_dir():
        return
    for folder, _, files in os.walk(base):
        for file in files:
            path = Path(folder) / file
            yield name_of(path), path.stat().st_mtime


# ------------------------------------------------------------------------------------------- downloads

def download_response(name: str, *, filename: str | None = None, as_attachment: bool = True,
                      content_type: str | None = None) -> HttpResponse:
    """The file ``name`` for a browser or a script, after the caller checked who may have it.

    Local: streamed from disk. Remote: an attachment is a redirect to a pre-signed URL that lapses after
    ``MEDIA_URL_EXPIRY_S`` seconds (minutes at most), naming the file for the download; an inline file is
    streamed from this process's mirror."""
    name = clean_name(name)
    filename = filename or PurePosixPath(name).name
    if not is_remote() or not as_attachment:
        # Inline files (an overlay PNG in a page) come from this origin, through the mirror: the page's CSP
        # allows images from 'self' only, and a redirect to the store would be blocked.
        return FileResponse(open(local_path(name), "rb"), as_attachment=as_attachment, filename=filename,
                            content_type=content_type)
    disposition = "attachment" if as_attachment else "inline"
    parameters = {"ResponseContentDisposition": f"{disposition}; filename*=UTF-8''{quote(filename)}"}
    if content_type:
        parameters["ResponseContentType"] = content_type
    url = default_storage.url(name, parameters=parameters, expire=settings.MEDIA_URL_EXPIRY_S)
    return HttpResponseRedirect(url)


def local_folder(name: str) -> Path:
    """A local folder holding every stored file under ``name`` (remote: each downloaded unless the mirror
    has it; local: the folder itself)."""
    if is_remote():
        for file_name in names(name):
            local_path(file_name)
    return work_path(name)


# ----------------------------------------------------------------------------------- the mirror's size

_IN_USE = ".in-use"   # the lock file: shared while a job runs, exclusive while the mirror is trimmed


@contextmanager
def mirror_in_use():
    """Held by every job (a shared lock on the mirror's lock file): :func:`trim_mirror` never removes files
    from under a job that is running on this host, whichever process runs it."""
    if not is_remote():
        yield
        return
    with _lock_file() as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def mirror_alone():
    """Yields True while no job runs on this host (an exclusive lock on the mirror's lock file, taken without
    waiting), False when one does: what removes mirror files runs only then."""
    with _lock_file() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def trim_mirror(max_bytes: int | None = None) -> int:
    """Remote: remove the least recently used files of this host's mirror until it holds at most
    ``max_bytes`` (``MEDIA_MIRROR_MAX_BYTES``; 0 keeps nothing: every job then works in scratch space that
    is emptied after it). Skipped while a job runs here. Returns the bytes removed."""
    if not is_remote():
        return 0
    limit = settings.MEDIA_MIRROR_MAX_BYTES if max_bytes is None else max_bytes
    with mirror_alone() as alone:
        if not alone:
            return 0   # a job runs on this host: the last one to end trims
        files = []
        for folder, _, names_here in os.walk(root()):
            for file in names_here:
                if file == _IN_USE:
                    continue
                path = os.path.join(folder, file)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        freed = 0
        for _, size, path in sorted(files):          # least recently used first
            if total - freed <= limit:
                break
            Path(path).unlink(missing_ok=True)
            freed += size
        _remove_empty_folders(root())
        return freed


@contextmanager
def _lock_file():
    root().mkdir(parents=True, exist_ok=True)
    with open(root() / _IN_USE, "a+b") as handle:
        yield handle


def _remove_empty_folders(top: Path) -> None:
    for folder, subfolders, files in os.walk(top, topdown=False):
        if Path(folder) != top and not subfolders and not files:
            try:
                os.rmdir(folder)
            except OSError:   # a file appeared meanwhile
                pass
