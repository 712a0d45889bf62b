"""Backup and restore of a whole installation: its database and its media files (``manage.py backup`` and
``manage.py restore``, README "Backups").

A backup is a folder: ``manifest.json`` (written last, so a folder without it is an unfinished backup), the
database (``database.sqlite3``, a copy made with SQLite's online backup API, or ``database.dump``, PostgreSQL's
own ``pg_dump`` in its custom format) and ``media/``, a copy of MEDIA_ROOT. The database is copied first, in one
snapshot, while the server and the workers go on writing; the media files after it. A file written later is
harmless (no row of the snapshot names it; the orphan sweep removes it an hour after a restore); a file deleted
between the snapshot and its copy (a dataset deleted meanwhile) would leave a row pointing at nothing, so every
file and dataset folder the snapshot names is checked in the copy, and a missing one makes a new snapshot (a few
times at most). With object storage (STORAGE_URL) the bucket is not copied: its own versioning or replication
keeps it (README).

Above every app (it names every app's files), below the management commands that call it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.utils import load_backend

from webapp.core import media
from webapp.datasets.models import Dataset, Image
from webapp.jobs.models import Job
from webapp.jobs.operations import do_end_jobs_interrupted_by_restore
from webapp.projects.models import Project
from webapp.training.models import ModelVersion

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.dump"
MEDIA_DIR = "media"
# Derived from other files and rebuilt on use (the training's crops cache); a download in progress.
SKIPPED_TOP_FOLDERS = {"cache"}
PARTIAL_PREFIX = ".part-"
SNAPSHOT_TRIES = 3
CHUNK = 1024 * 1024
POSTGRES_TOOLS_HINT = ("install PostgreSQL's client tools of the server's major version or newer (Debian/Ubuntu: "
                       "apt-get install postgresql-client; the Docker image has them)")

Progress = Callable[[int], None]   # told the bytes copied since its last call


class BackupError(Exception):
    """What stops a backup or a restore, in words for the operator."""


@dataclass
class Snapshot:
    migrations: list[str]
    rows: dict[str, int]
    files: set[str] = field(default_factory=set)     # storage names the rows name
    folders: set[str] = field(default_factory=set)   # dataset folders


def engine() -> str:
    vendor = connections[DEFAULT_DB_ALIAS].vendor
    if vendor not in ("sqlite", "postgresql"):
        raise BackupError(f"a {vendor} database cannot be backed up by this command")
    return vendor


def release() -> str | None:
    """The commit of this checkout, when it is one (the Docker image has no .git: its migrations say enough)."""
    try:
        return subprocess.run(["git", "-C", str(settings.BASE_DIR), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------- what rows name

def snapshot_of(using: str) -> Snapshot:
    """What the database ``using`` holds: its applied migrations, its rows per model and the media it names."""
    snapshot = Snapshot(migrations=applied_migrations(using), rows=row_counts(using))
    for names in Image.objects.using(using).values_list("file", "mask_file", "thumbnail_file"):
        snapshot.files.update(names)
    snapshot.files.update(Image.objects.using(using).filter(slide_root="media").exclude(slide_file="")
                          .values_list("slide_file", flat=True))
    snapshot.files.update(ModelVersion.objects.using(using).values_list("checkpoint_file", flat=True))
    for job in Job.objects.using(using).filter(state=Job.State.SUCCEEDED).only("kind", "params", "result"):
        if job.kind == Job.Kind.INFER:
            folder = job.params.get("folder")
            snapshot.files.update(f"{folder}/{job.params[key]}" for key in ("image", "mask") if job.params.get(key))
            snapshot.files.update(job.result.get("files", []))
    for job in Job.objects.using(using).filter(kind=Job.Kind.TRAIN).only("result"):
        resume = (job.result or {}).get("resume") or {}
        if resume.get("checkpoint"):
            snapshot.files.add(resume["checkpoint"])
    snapshot.folders.update(Dataset.objects.using(using).values_list("storage_dir", flat=True))
    snapshot.files.discard("")
    snapshot.folders.discard("")
    return snapshot


def applied_migrations(using: str) -> list[str]:
    return sorted(f"{app}.{name}" for app, name in MigrationRecorder(connections[using]).applied_migrations())


def row_counts(using: str) -> dict[str, int]:
    tables = set(connections[using].introspection.table_names())
    return {model._meta.label: model._base_manager.using(using).count() for model in apps.get_models()
            if model._meta.managed and not model._meta.proxy and model._meta.db_table in tables}


# --------------------------------------------------------------------------------------------- the database

def _sqlite_file() -> Path:
    return Path(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"])


def _snapshot_sqlite(target: Path) -> Snapshot:
    """SQLite's online backup API: one read of every page, consistent however the others write meanwhile (WAL)."""
    target.unlink(missing_ok=True)
    source = sqlite3.connect(_sqlite_file(), timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")   # one file, no -wal beside it
    finally:
        copy.close()
        source.close()
    # The copy read through the ORM, as a connection of its own beside the configured ones (not in DATABASES).
    alias = "backup-snapshot"
    settings_dict = {**connections[DEFAULT_DB_ALIAS].settings_dict, "NAME": str(target), "OPTIONS": {"timeout": 30}}
    connections[alias] = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)
    try:
        return snapshot_of(alias)
    finally:
        connections[alias].close()
        del connections[alias]


def _postgres_command(tool: str, *parameters: str) -> tuple[list[str], dict]:
    """``tool`` (pg_dump, psql) with the connection of DATABASE_URL, as Django's dbshell builds it for psql."""
    connection = connections[DEFAULT_DB_ALIAS]
    args, env = connection.client.settings_to_cmd_args_env(connection.settings_dict, list(parameters))
    if shutil.which(tool) is None:
        raise BackupError(f"{tool} is not on the PATH: {POSTGRES_TOOLS_HINT}")
    return [tool, *args[1:]], {**os.environ, **(env or {})}


def _snapshot_postgres(target: Path) -> Snapshot:
    """pg_dump in the snapshot of a transaction that also reads what the rows name: both see the same rows."""
    with transaction.atomic():
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot()")
            (exported,) = cursor.fetchone()
        args, env = _postgres_command("pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                                      f"--snapshot={exported}", f"--file={target}")
        done = subprocess.run(args, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()[-2000:]}"
                              + (f" ({POSTGRES_TOOLS_HINT})" if "version mismatch" in done.stderr else ""))
        return snapshot_of(DEFAULT_DB_ALIAS)


# --------------------------------------------------------------------------------------------- files

def _copy(source: Path, target: Path, progress: Progress) -> tuple[int, str]:
    """Copy a file, hashing what is written; its size and sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            progress(len(chunk))
    shutil.copystat(source, target)
    return size, digest.hexdigest()


def sha256_of(path: Path, progress: Progress = lambda n: None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()


def media_files(folder: Path) -> dict[str, Path]:
    """The files of a media folder by storage name, less the derived cache and downloads in progress."""
    found = {}
    if not folder.is_dir():
        return found
    for directory, subfolders, names in os.walk(folder):
        here = Path(directory)
        if here == folder:
            subfolders[:] = [name for name in subfolders if name not in SKIPPED_TOP_FOLDERS]
        for name in names:
            if not name.startswith(PARTIAL_PREFIX):
                path = here / name
                found[path.relative_to(folder).as_posix()] = path
    return found


# --------------------------------------------------------------------------------------------- backup

@dataclass
class BackupResult:
    manifest: dict
    snapshots: int   # 1, or more when a file the first snapshot named was deleted before its copy


def backup(dest: Path, *, progress_bar: Callable[[int], Progress] | None = None,
           between: Callable[[], None] | None = None) -> BackupResult:
    """Back this installation up into ``dest`` (absent or empty). ``progress_bar(total_bytes)`` gives the
    callable told the bytes copied; ``between`` runs after each snapshot, before its files are copied (tests)."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty folder: name a new one (e.g. one per date)")
    vendor = engine()
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _backup_into(dest, vendor, progress_bar, between)
    except BaseException:   # nothing half-written stays: the folder is as it was (absent, or empty)
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise


def _backup_into(dest: Path, vendor: str, progress_bar, between) -> BackupResult:
    database_file = dest / (SQLITE_FILE if vendor == "sqlite" else POSTGRES_FILE)
    copied: dict[str, dict] = {}
    remote = media.is_remote()
    for attempt in range(1, SNAPSHOT_TRIES + 1):
        taken_at = datetime.datetime.now(datetime.timezone.utc)
        snapshot = _snapshot_sqlite(database_file) if vendor == "sqlite" else _snapshot_postgres(database_file)
        if between is not None:
            between()
        if remote:   # the bucket is not copied (README "Backups"), but what the rows name must be in it
            listed = set(media.names())
            missing = {name for name in snapshot.files if name not in listed}
            if not missing:
                break
            if attempt == SNAPSHOT_TRIES:
                raise BackupError(f"{len(missing)} media files named by the database are not in the bucket (e.g. "
                                  f"{sorted(missing)[:3]}): restore them from the bucket's versioning or replica")
            continue
        source = Path(settings.MEDIA_ROOT)
        todo = {name: path for name, path in media_files(source).items() if name not in copied}
        total = 0
        for path in todo.values():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        tell = progress_bar(total) if progress_bar else (lambda n: None)
        for name, path in todo.items():
            try:
                size, digest = _copy(path, dest / MEDIA_DIR / name, tell)
            except FileNotFoundError:   # deleted since the listing: checked against the snapshot below
                (dest / MEDIA_DIR / name).unlink(missing_ok=True)
                continue
            copied[name] = {"bytes": size, "sha256": digest}
        for folder in snapshot.folders:   # a dataset's folder, even one that holds no file yet
            if (source / folder).is_dir():
                (dest / MEDIA_DIR / folder).mkdir(parents=True, exist_ok=True)
        missing = _missing(snapshot, copied, dest / MEDIA_DIR)
        if not missing:
            break
        if attempt == SNAPSHOT_TRIES:
            raise BackupError(f"{len(missing)} media files named by the database were deleted while they were "
                              f"copied, {SNAPSHOT_TRIES} times over (e.g. {sorted(missing)[:3]}): try again at a "
                              "quieter time")
    (dest / MEDIA_DIR).mkdir(exist_ok=True)
    manifest = {
        "format": FORMAT,
        "created_at": taken_at.isoformat(timespec="seconds"),   # when the database was copied
        "release": release(),
        "database": {"engine": vendor, "file": database_file.name, "bytes": database_file.stat().st_size,
                     "sha256": sha256_of(database_file), "migrations": snapshot.migrations, "rows": snapshot.rows},
        "media": {"storage": "remote" if remote else "local", "named_by_rows": len(snapshot.files),
                  "dataset_folders": len(snapshot.folders),
                  "bytes": sum(entry["bytes"] for entry in copied.values()), "files": dict(sorted(copied.items()))},
    }
    if remote:
        manifest["media"]["bucket"] = getattr(getattr(media.default_storage, "bucket", None), "name", None)
        manifest["media"]["in_bucket"] = len(snapshot.files)
    partial = dest / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1))
    partial.replace(dest / MANIFEST)
    return BackupResult(manifest, attempt)


def _missing(snapshot: Snapshot, copied: dict, media_copy: Path) -> set[str]:
    return ({name for name in snapshot.files if name not in copied}
            | {folder for folder in snapshot.folders if not (media_copy / folder).is_dir()})


# --------------------------------------------------------------------------------------------- restore

def read_manifest(src: Path) -> dict:
    path = Path(src) / MANIFEST
    if not path.is_file():
        raise BackupError(f"{src} holds no {MANIFEST}: it is not a backup, or one that did not finish")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON ({exc}): the backup is damaged") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is a backup of format {manifest.get('format')!r}; this release reads format "
                          f"{FORMAT}: restore it with the release that made it (its manifest names it)")
    return manifest


def check_migrations(manifest: dict) -> list[str]:
    """The migrations this code will apply after the restore; a backup from a newer release is refused."""
    known = {f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).disk_migrations}
    unknown = sorted(set(manifest["database"]["migrations"]) - known)
    if unknown:
        raise BackupError(f"the backup was made by a newer release (release {manifest.get('release') or 'unknown'}"
                          f"): this code does not know its migrations {unknown[:5]}: upgrade the code first")
    return sorted(known - set(manifest["database"]["migrations"]))


def verify(src: Path, manifest: dict, progress_bar: Callable[[int], Progress] | None = None) -> None:
    """Every file of the backup is there with the size and checksum the manifest gives it."""
    entries = {manifest["database"]["file"]: manifest["database"]}
    entries.update({f"{MEDIA_DIR}/{name}": entry for name, entry in manifest["media"]["files"].items()})
    tell = progress_bar(sum(entry["bytes"] for entry in entries.values())) if progress_bar else (lambda n: None)
    damaged = []
    for name, entry in entries.items():
        path = Path(src) / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_of(path, tell) != entry["sha256"]:
            damaged.append(name)
    if damaged:
        raise BackupError(f"{len(damaged)} files of the backup are missing or differ from its manifest "
                          f"(e.g. {damaged[:3]}): the backup is damaged; nothing was restored")


def installation_contents() -> str:
    """What this installation holds, in words; empty when there is nothing a restore would replace."""
    held = []
    if "projects_project" in connections[DEFAULT_DB_ALIAS].introspection.table_names():
        projects = Project.objects.count()
        if projects:
            held.append(f"{projects} projects")
    if not media.is_remote():
        files = len(media_files(Path(settings.MEDIA_ROOT)))
        if files:
            held.append(f"{files} media files in {settings.MEDIA_ROOT}")
    return " and ".join(held)


@dataclass
class RestoreResult:
    migrated: list[str]
    ended_jobs: list[Job]
    files: int
    # With object storage: the files the restored rows name that the bucket does not hold (sorted).
    missing_in_bucket: list[str] = field(default_factory=list)


def restore(src: Path, *, force: bool = False, progress_bar: Callable[[int], Progress] | None = None,
            say: Callable[[str], None] = lambda line: None) -> RestoreResult:
    src = Path(src)
    manifest = read_manifest(src)
    vendor = engine()
    if manifest["database"]["engine"] != vendor:
        raise BackupError(f"the backup holds a {manifest['database']['engine']} database and DATABASE_URL names a "
                          f"{vendor} one: restore into a {manifest['database']['engine']} database")
    remote = media.is_remote()
    if (manifest["media"]["storage"] == "remote") != remote:
        raise BackupError("the backup's media were in " + ("an object store" if not remote else "MEDIA_ROOT")
                          + " and this installation's are " + ("in an object store (STORAGE_URL)" if remote else
                                                               "in MEDIA_ROOT (no STORAGE_URL)")
                          + ": restore with the same kind of media storage")
    to_migrate = check_migrations(manifest)
    held = installation_contents()
    if held and not force:
        raise BackupError(f"this installation is not empty ({held}): a restore replaces all of it; stop it and "
                          "add --force to do so")
    say("checking the backup's checksums")
    verify(src, manifest, progress_bar)

    say(f"restoring the {vendor} database")
    for connection in connections.all():
        connection.close()
    if vendor == "sqlite":
        _restore_sqlite(src / manifest["database"]["file"])
    else:
        _restore_postgres(src / manifest["database"]["file"])
    rows = row_counts(DEFAULT_DB_ALIAS)
    differ = {label: (count, rows.get(label)) for label, count in manifest["database"]["rows"].items()
              if rows.get(label) != count}
    if differ:
        raise BackupError(f"the restored database's rows differ from the manifest's: {differ}")

    files = manifest["media"]["files"]
    if not remote:
        say(f"restoring {len(files)} media files")
        root = Path(settings.MEDIA_ROOT)
        if root.exists():
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        root.mkdir(parents=True, exist_ok=True)
        tell = progress_bar(manifest["media"]["bytes"]) if progress_bar else (lambda n: None)
        for name in files:
            _copy(src / MEDIA_DIR / name, root / name, tell)
        for folder in _dataset_folders():   # a dataset folder may hold no file yet
            (root / folder).mkdir(parents=True, exist_ok=True)

    if to_migrate:
        say(f"migrating forward: {len(to_migrate)} migrations of this release are newer than the backup")
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    ended = do_end_jobs_interrupted_by_restore()
    missing = []
    if remote:   # the bucket was not in the backup: say at once whether it holds what the restored rows name
        listed = set(media.names())
        missing = sorted(name for name in snapshot_of(DEFAULT_DB_ALIAS).files if name not in listed)
    return RestoreResult(to_migrate, ended, len(files), missing)


def _dataset_folders() -> list[str]:
    return [folder for folder in Dataset.objects.values_list("storage_dir", flat=True) if folder]


def _restore_sqlite(backup_file: Path) -> None:
    """SQLite's backup API again, into the configured file: it replaces every page, under SQLite's own locks
    (a WAL beside an old file stays consistent, where copying the file over it would not)."""
    target = _sqlite_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(backup_file)
    copy = sqlite3.connect(target, timeout=30)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()


def _restore_postgres(dump: Path) -> None:
    """pg_restore's SQL streamed into psql, in one transaction: all of the dump or nothing of it. The tables that
    are there (a database migrated by a first start, or --force) are dropped first."""
    connection = connections[DEFAULT_DB_ALIAS]
    args, env = _postgres_command("psql", "--quiet", "--no-psqlrc", "--set=ON_ERROR_STOP=1", "--single-transaction",
                                  "--output=/dev/null")
    if shutil.which("pg_restore") is None:
        raise BackupError(f"pg_restore is not on the PATH: {POSTGRES_TOOLS_HINT}")
    tables = connection.introspection.table_names(include_views=False)
    with transaction.atomic(), connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)} CASCADE")
    connection.close()
    reader = subprocess.Popen(["pg_restore", "--no-owner", "--no-privileges", "--file=-", str(dump)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = subprocess.run(args, stdin=reader.stdout, env=env, capture_output=True)
    reader.stdout.close()
    read_error = reader.stderr.read().decode(errors="replace")
    read = reader.wait()
    if done.returncode != 0:
        raise BackupError(f"psql could not restore the dump (no table of it was kept): "
                          f"{done.stderr.decode(errors='replace')[-2000:]} {read_error[-500:]}".strip())
    if read != 0:
        raise BackupError(f"pg_restore could not read {dump.name}: {read_error[-2000:]}")
