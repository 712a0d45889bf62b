"""Giving the embedded SQLite database's free pages back to the disk (PostgreSQL's autovacuum does its own).

SQLite keeps the pages a deletion frees in the file, on its freelist, for later inserts: after a slide of
100,000 nuclei was deleted the file stayed at its 68 MB, 99 % of it free (benchmarks/slide_delete.py). Two ways
give them back:

- ``PRAGMA incremental_vacuum(N)`` moves N free pages to the end of the file and cuts them off: cheap, a short
  write per step. It needs ``auto_vacuum = INCREMENTAL``, which SQLite takes only before the first table exists;
  every connection asks for it (webapp.settings), so a database made since 2026-12-07 has it.
- ``VACUUM`` rewrites the whole file: the only way for a database made before (and it turns incremental
  auto_vacuum on for good). It holds the write lock throughout (every save waits) and needs the file's size again
  in free disk space, so it runs here only for a file of at most ``SQLITE_VACUUM_MAX_BYTES``; a larger one is
  left for ``manage.py sqlite_space --vacuum`` at a quiet time, which the log says.

:func:`reclaim_free_pages` runs after the periodic sweep (beat, every 10 minutes, workers.tasks), outside any
transaction, when the free pages are at least ``SQLITE_RECLAIM_MIN_BYTES`` and ``SQLITE_RECLAIM_SHARE`` of the file.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

NONE, FULL, INCREMENTAL = 0, 1, 2   # PRAGMA auto_vacuum
STEP_PAGES = 2048    # pages per incremental step (8 MiB of 4 KiB pages): a write of a fraction of a second
STEP_PAUSE_S = 0.05  # between steps: saves waiting for the write lock take it meanwhile
BUDGET_S = 60.0      # a sweep's incremental steps at most; the next sweep goes on


@dataclass(frozen=True)
class Space:
    page_size: int
    pages: int
    free: int
    auto_vacuum: int

    @property
    def free_bytes(self) -> int:
        return self.free * self.page_size

    @property
    def bytes(self) -> int:
        return self.pages * self.page_size


def space() -> Space | None:
    """The database's pages, free pages and auto_vacuum mode; None on PostgreSQL."""
    if connection.vendor != "sqlite":
        return None
    return Space(*(_pragma(name) for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")))


def _pragma(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def database_file() -> Path:
    return Path(connection.settings_dict["NAME"])


def reclaim_free_pages(*, force_vacuum: bool = False) -> dict | None:
    """Give the free pages back when they are a large share of the file (see the module's text); with
    ``force_vacuum`` (the management command) VACUUM a database without incremental auto_vacuum whatever its size.
    Returns what was done (``{"how", "pages_before", "pages_after", "free_before", "free_after"}``), or None where
    there was nothing to do: PostgreSQL, inside a transaction (VACUUM cannot run in one, and a step would hold the
    caller's lock), too few free pages, or a VACUUM left to an operator."""
    before = space()
    if before is None or connection.in_atomic_block:
        return None
    if not force_vacuum and (before.free_bytes < settings.SQLITE_RECLAIM_MIN_BYTES
                             or before.free < settings.SQLITE_RECLAIM_SHARE * before.pages):
        return None
    try:
        if before.auto_vacuum == INCREMENTAL and not force_vacuum:
            how = "incremental"
            _incremental(before)
        elif before.auto_vacuum == FULL and not force_vacuum:
            return None   # SQLite gives pages back at each commit itself
        else:
            problem = _vacuum_problem(before, force_vacuum)
            if problem:
                logger.warning("the SQLite database %s has %.0f MiB free of %.0f MiB and %s; run `manage.py "
                               "sqlite_space --vacuum` at a quiet time (every save waits while it runs)",
                               database_file().name, before.free_bytes / 2**20, before.bytes / 2**20, problem)
                return None
            how = "vacuum"
            with connection.cursor() as cursor:
                # Taken by the VACUUM: from then on the file is incremental, and later sweeps need no VACUUM.
                cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
                cursor.execute("VACUUM")
        with connection.cursor() as cursor:
            # Copies the pages back into the file and cuts it to its new length, unless a reader holds an older
            # snapshot (then a later checkpoint does): PASSIVE never waits, so never holds up a writer.
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
    except OperationalError as exc:   # the write lock stayed taken past the busy timeout: the next sweep tries again
        logger.warning("could not give the SQLite database's free pages back now: %s", exc)
        return None
    after = space()
    logger.info("SQLite %s: %d of %d pages were free, now %d pages (%d free)", how, before.free, before.pages,
                after.pages, after.free)
    return {"how": how, "pages_before": before.pages, "pages_after": after.pages, "free_before": before.free,
            "free_after": after.free}


def _incremental(before: Space) -> None:
    """Free pages in steps, each its own short write, until none is left or the budget is spent."""
    deadline = time.monotonic() + BUDGET_S
    free = before.free
    connection.ensure_connection()
    while free > 0 and time.monotonic() < deadline:
        # Each step of the statement frees one page, and the driver's execute() steps it once (one page per
        # call): executescript() steps it to the end. No transaction is open here (checked by the caller).
        connection.connection.executescript(f"PRAGMA incremental_vacuum({STEP_PAGES});")
        free = _pragma("freelist_count")
        if free:
            time.sleep(STEP_PAUSE_S)


def _vacuum_problem(before: Space, force: bool) -> str:
    """Why a VACUUM must not run now, or ""."""
    size = before.bytes
    if not force and size > settings.SQLITE_VACUUM_MAX_BYTES:
        return (f"no incremental auto_vacuum (made before 2026-12-07): a VACUUM of a file over "
                f"{settings.SQLITE_VACUUM_MAX_BYTES / 2**20:.0f} MiB is not run by the sweep")
    free_disk = shutil.disk_usage(database_file().parent).free
    if free_disk < 2 * size:   # the rewritten copy goes through the WAL, then into the file
        return f"only {free_disk / 2**20:.0f} MiB of disk are free, and a VACUUM needs about {2 * size / 2**20:.0f}"
    return ""
