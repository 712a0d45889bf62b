"""The per-image work of an import that needs no database, and the worker processes that do it.

For every image: read and validate it (the mlcore reader), checksum its pixels, copy the image file,
write the mask (16-bit PNG) and a thumbnail, and compute every nucleus's geometry and outline, ready to
be inserted. This is CPU work in Python and C extensions; threads share one interpreter lock, so it
runs in worker processes (``IMPORT_PROCESSES``) while the importing process writes the rows.

The workers are forked with os.fork: a Celery prefork child is a daemonic process, from which the
standard library's pools refuse to start children ("daemonic processes are not allowed to have
children"), and billiard's processes would run Celery's after-fork hooks on connections shared with the
importing process. Forked workers inherit the opened dataset reader and run nothing but the per-image
work: they never touch the database or broker connections of the importing process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import orjson
from django.conf import settings

from mlcore.types import DataError
from mlcore.writers import geometry_and_outlines
from webapp.core import media

logger = logging.getLogger(__name__)
THUMBNAIL_SIZE = 192


@dataclass
class PreparedImage:
    """One image, ready for its rows: files written, nuclei as rows (tuples, or COPY text lines)."""

    name: str
    group: str
    source_path: str
    width: int
    height: int
    checksum: str
    image_file: str  # storage names (paths relative to the media work root, webapp.core.media)
    mask_file: str
    thumbnail_file: str
    nuclei: list  # per nucleus, by instance id: NUCLEUS_FIELDS as a tuple, or as one COPY text line
    classes: list[int]  # class index per nucleus, in the same order; -1 = unlabelled
    left_out: dict[str, int] = field(default_factory=dict)  # the reader's AnnotatedImage.left_out


# The nucleus columns a PreparedImage fills (the importer adds id and image_id in front).
NUCLEUS_FIELDS = ("instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area", "outline")


# ------------------------------------------------------------------------------------------ one image

def pixel_checksum(rgb: np.ndarray) -> str:
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def thumbnail(rgb: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """At most ``size`` on its longer side, aspect kept, never enlarged (bilinear for a small reduction,
    area averaging, which is slower, where bilinear would alias)."""
    height, width = rgb.shape[:2]
    scale = min(size / width, size / height)
    if scale >= 1:
        return rgb
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, target, interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)


def save_image_files(folder: Path, stem: str, rgb: np.ndarray, instance_map: np.ndarray,
                     source_path: str) -> tuple[Path, Path, Path]:
    """Keep the original file when there is one (JPEG stays JPEG); masks as lossless 16-bit PNG."""
    source = Path(source_path) if source_path else None
    if source is not None and source.is_file() and source.suffix.lower() in {".png", ".jpg", ".jpeg"}:
        image_path = folder / "images" / f"{stem}{source.suffix.lower()}"
        keep_original(source, image_path)
    else:
        image_path = folder / "images" / f"{stem}.png"
        _write(image_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if instance_map.max(initial=0) < 65536:
        mask_path = folder / "masks" / f"{stem}.png"
        _write(mask_path, instance_map.astype(np.uint16))
    else:
        mask_path = folder / "masks" / f"{stem}.npy"
        np.save(mask_path, instance_map.astype(np.int32))
    thumb_path = folder / "thumbs" / f"{stem}.jpg"
    _write(thumb_path, cv2.cvtColor(thumbnail(rgb), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return image_path, mask_path, thumb_path


def keep_original(source: Path, target: Path) -> None:
    """Copy an original image file, or hard-link it when it lies in an upload's staging folder: that folder
    is ours and is removed after the import, so the file's bytes need not be written a second time. Files
    of a folder imported from elsewhere (manage.py import_dataset) are always copied."""
    staging = media.root() / "staging"
    if source.is_relative_to(staging) and not source.is_symlink():
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or one without hard links
            pass
    shutil.copyfile(source, target)


def _write(path: Path, array: np.ndarray, params=()) -> None:
    # Encoded here and written by Python, not by cv2.imwrite: that one answers a full disk with False only, and
    # the import failed with "could not write" where the worker can tell the user that the disk is full (ENOSPC).
    encoded, data = cv2.imencode(path.suffix, array, list(params))
    if not encoded:
        raise OSError(f"could not encode {path}")
    with open(path, "wb") as sink:
        sink.write(data.tobytes())


def prepare_image(annotated, folder: Path, as_text: bool) -> PreparedImage:
    """Everything about one image except its database ids.

    ``as_text``: nuclei as lines of PostgreSQL COPY text (``NUCLEUS_FIELDS`` tab-separated), else tuples.
    """
    rgb, instance_map = annotated.image, annotated.instance_map
    checksum = pixel_checksum(rgb)
    image_path, mask_path, thumb_path = save_image_files(folder, annotated.name, rgb, instance_map,
                                                         annotated.source_path)
    geometry, outlines = geometry_and_outlines(instance_map)
    classes = annotated.classes or {}
    ids = geometry["id"].tolist()
    # orjson writes lists of integers exactly as json.dumps(o, separators=(",", ":")), ten times faster.
    outline_json = [orjson.dumps(o).decode() for o in outlines]
    fields = zip(ids, *(geometry[k].tolist() for k in ("x0", "y0", "x1", "y1", "cx", "cy", "area")), outline_json)
    if as_text:
        # Only integers, floats (repr: shortest round trip, as psycopg sends them) and JSON of integers:
        # nothing that COPY's text format would need to escape.
        nuclei = [f"{i}\t{x0}\t{y0}\t{x1}\t{y1}\t{cx!r}\t{cy!r}\t{area}\t{o}" for i, x0, y0, x1, y1, cx, cy, area, o
                  in fields]
    else:
        nuclei = list(fields)
    return PreparedImage(
        name=annotated.name, group=annotated.group, source_path=annotated.source_path or "",
        width=int(rgb.shape[1]), height=int(rgb.shape[0]), checksum=checksum,
        image_file=media.name_of(image_path), mask_file=media.name_of(mask_path),
        thumbnail_file=media.name_of(thumb_path), nuclei=nuclei,
        classes=[classes.get(i, -1) for i in ids], left_out=dict(annotated.left_out))


# ------------------------------------------------------------------------------------------ many images

def read_image(reader, index: int):
    """Image ``index`` of an opened mlcore dataset reader (random access for the workers). The
    duplicate-name check that iteration makes is made by the caller, which sees the images in order."""
    return reader.read(index)


class _Failed:
    """A DataError raised in a worker (DataError itself does not survive pickling: its __init__ has
    two arguments)."""

    def __init__(self, path: str | None, problem: str):
        self.path, self.problem = path, problem


class ImportWorkerLost(RuntimeError):
    """A worker process ended without answering (killed, out of memory)."""


_WORKER_STATE: tuple | None = None  # (reader, folder, as_text), inherited by forked workers


def _prepare_index(index: int):
    reader, folder, as_text = _WORKER_STATE
    try:
        return prepare_image(read_image(reader, index), folder, as_text)
    except DataError as exc:
        return _Failed(exc.path, exc.problem)


def _worker_main(connection) -> None:
    """A worker: prepare the image indices it receives, answer (index, result), stop at None."""
    import pickle

    cv2.setNumThreads(1)  # the parallelism is the processes; no OpenCV thread pool in each of them
    while True:
        try:
            index = connection.recv()
        except EOFError:
            return
        if index is None:
            return
        try:
            result = _prepare_index(index)
        except Exception as exc:  # a bug, not bad input: the importer re-raises it
            try:
                pickle.dumps(exc)
                result = exc
            except Exception:
                result = RuntimeError(f"{type(exc).__name__}: {exc}")
        connection.send((index, result))


def default_processes() -> int:
    configured = getattr(settings, "IMPORT_PROCESSES", 0)
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def prepared_images(reader, folder: Path, as_text: bool, processes: int | None = None) -> Iterator[PreparedImage]:
    """Yield every image of ``reader`` prepared, in order, raising the first DataError in that order.

    With more than one process (and image), forked workers prepare the next images while the caller
    writes rows; a few images per worker wait in memory at most. Leaving the generator early (an error,
    a cancel) kills the workers and waits for them before it returns, so no file is written after that.
    """
    global _WORKER_STATE
    total = len(reader)
    processes = min(default_processes() if processes is None else processes, total)
    if not hasattr(os, "fork"):  # Windows
        processes = 1
    _WORKER_STATE = (reader, folder, as_text)
    logger.info("preparing %d images in %s", total,
                f"{processes} worker processes" if processes > 1 else "the importing process")
    try:
        if processes <= 1:
            for index in range(total):
                yield _checked(_prepare_index(index))
        else:
            yield from _from_workers(total, processes)
    finally:
        _WORKER_STATE = None


class _Worker:
    """A forked worker process and the pipe to it."""

    def __init__(self, others: list[_Worker]):
        from multiprocessing import Pipe

        self.connection, theirs = Pipe()
        importer = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the worker
            code = 1
            try:
                _die_with(importer)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the handler of the process it was forked from
                self.connection.close()
                for other in others:
                    other.connection.close()
                _worker_main(theirs)
                code = 0
            finally:
                os._exit(code)  # no atexit handlers, no flushing of the importing process's buffers
        theirs.close()  # the worker's end lives only in the worker: its death reads as the end of the pipe
        self.indices: set[int] = set()  # sent, not answered yet
        self.exit_code: int | None = None

    def reap(self, kill: bool) -> None:
        if self.exit_code is not None:
            return
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(self.pid, 0)
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.connection.close()


def _die_with(importer: int) -> None:
    """A worker ends with the importing process, even one killed by SIGKILL (which runs no clean-up): it
    would otherwise go on writing files into the dataset folder that the retried import starts afresh."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux only
    except (OSError, AttributeError):
        pass
    if os.getppid() != importer:  # it died before the line above took effect
        os._exit(1)


def _from_workers(total: int, processes: int) -> Iterator[PreparedImage]:
    # Plain os.fork, not multiprocessing or billiard: the standard library refuses to start children from
    # a daemonic process such as a Celery prefork child, and billiard's processes run the after-fork hooks
    # that Celery registers, which touch the connections to the broker shared with this process. A forked
    # worker inherits the opened reader and runs nothing but _worker_main.
    from multiprocessing.connection import wait

    workers: list[_Worker] = []
    finished = False
    # OpenCV's thread pool must not be forked while it has threads: a child that touches it (setNumThreads,
    # any parallel function) destroys a condition variable the parent's pool threads wait on, and hangs for
    # ever. That happens whenever this process used OpenCV before, as `create_demo` does when it draws its
    # tiles. One thread in here while the workers are forked and run; the caller's setting comes back after.
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for _ in range(processes):
            workers.append(_Worker(workers))
        by_connection = {id(w.connection): w for w in workers}
        window = 4 * processes  # images prepared ahead of the one the caller waits for, at most
        per_worker = 2  # indices queued per worker, so that none idles while the caller writes rows
        next_to_send, next_to_yield, ready = 0, 0, {}

        def send(worker: _Worker) -> None:
            nonlocal next_to_send
            while len(worker.indices) < per_worker and next_to_send < min(total, next_to_yield + window):
                worker.connection.send(next_to_send)
                worker.indices.add(next_to_send)
                next_to_send += 1

        for worker in workers:
            send(worker)
        while next_to_yield < total:
            while next_to_yield not in ready:
                for connection in wait([w.connection for w in workers if w.indices]):
                    worker = by_connection[id(connection)]
                    try:
                        index, result = connection.recv()
                    except (EOFError, OSError):  # it ended without answering (killed, out of memory)
                        worker.reap(kill=True)
                        raise ImportWorkerLost(f"a worker process preparing images ended unexpectedly "
                                               f"(exit code {worker.exit_code})") from None
                    worker.indices.discard(index)
                    ready[index] = result
                    send(worker)
            result = ready.pop(next_to_yield)
            next_to_yield += 1
            if isinstance(result, BaseException):
                raise result
            for worker in workers:
                send(worker)
            yield _checked(result)
        finished = True
    finally:
        for worker in workers:
            if finished:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass  # it has ended already
        for worker in workers:
            worker.reap(kill=not finished)  # an error or a cancel: it may be writing files, stop it now
        cv2.setNumThreads(opencv_threads)


def _checked(result):
    if isinstance(result, _Failed):
        raise DataError(result.path, result.problem)
    return result
