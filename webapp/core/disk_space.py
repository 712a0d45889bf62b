"""Free disk space for what a job writes under the data folder (DATA_DIR: the media, the staging of uploads, a
training's scratch), and the one error a user reads when there is not enough of it.

A job that knows what it will write (an archive's unpacked size from its headers, a slide import's spool of its
detections) checks :func:`require_free` before it writes; one that fills the disk as it writes (``OSError``
ENOSPC, wrapped or not) fails with the same :class:`NotEnoughDiskSpace` (workers.tasks, :func:`disk_error`). Either
way its folder is removed and its rows rolled back as for any failed job, and the message names the setting, never
a path on the server.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from django.conf import settings

# No space left; over the disk quota of the user the server runs as (the same remedy).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NotEnoughDiskSpace(Exception):
    """Not enough free disk where a job writes: ``needed`` bytes (None where it was not known before the disk
    filled), ``free`` bytes free. The message is the whole story (a job's error)."""

    def __init__(self, free: int, needed: int | None = None):
        self.free, self.needed = free, needed
        space = (f"{_size(needed)} needed, {_size(free)} free" if needed is not None
                 else f"the disk filled up as the job wrote its files, {_size(free)} free now")
        super().__init__(f"not enough disk space in the data folder (DATA_DIR): {space}. What the job had written was "
                         "removed; free some space on that disk (or move DATA_DIR to a larger one) and start the job "
                         "again.")


def _size(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


def free_bytes(folder: Path | str | None = None) -> int:
    """The bytes free on the disk that holds ``folder`` (DATA_DIR by default; a folder not made yet: its
    nearest existing parent's)."""
    path = Path(folder if folder is not None else settings.DATA_DIR)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_free(needed: int, folder: Path | str | None = None) -> None:
    """Raise :class:`NotEnoughDiskSpace` unless ``needed`` bytes are free where ``folder`` is."""
    free = free_bytes(folder)
    if free < needed:
        raise NotEnoughDiskSpace(free, needed)


def disk_full(exc: BaseException | None) -> OSError | None:
    """The "no space left" OSError that ``exc`` is or was raised from (torch, for one, wraps it in a
    RuntimeError), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def disk_error(exc: BaseException, folder: Path | str | None = None,
               needed: int | None = None) -> NotEnoughDiskSpace | None:
    """``exc`` as the user reads it if the disk filled (``needed``: what the write needed, if known; an
    OSError that says it, as mlcore's checkpoint writer does, ``needed`` itself); None for any other error."""
    if isinstance(exc, NotEnoughDiskSpace):
        return exc
    full = disk_full(exc)
    if full is None:
        return None
    return NotEnoughDiskSpace(free_bytes(folder), needed if needed is not None else getattr(full, "needed", None))
