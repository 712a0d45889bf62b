"""manage.py backup and manage.py restore (webapp/backup.py, README "Backups"): a populated installation backed up
while it runs and restored into a fresh DATA_DIR and database serves the same rows, files and labels; a backup taken
while reviewers write and a dataset is deleted names no missing file; a backup is refused where it would do harm."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from tests.conftest import ROOT, database_url_for_subprocess, run_in, subprocess_env
from webapp import backup
from webapp.core import media
from webapp.datasets.models import Image, Label
from webapp.datasets.operations import do_delete_dataset
from webapp.jobs.models import Job
from webapp.review.models import ReviewLease
from webapp.review.operations import do_decide

pytestmark = pytest.mark.django_db(transaction=True)

CHECKPOINT = b"a model version's weights\n" * 100

# What the restored installation answers, read by a process of its own (its DATABASE_URL, DATA_DIR and MEDIA_ROOT).
SERVES = """
import json, django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
from webapp import backup
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Image
from webapp.jobs.models import Job
from webapp.projects.models import Project
client = Client()
client.force_login(get_user_model().objects.get(username="owner"))
project = Project.objects.get()
csv = b"".join(client.get(f"/api/projects/{project.pk}/export/merged.csv").streaming_content).decode()
image = Image.objects.order_by("pk").first()
picture = client.get(f"/media-files/images/{image.pk}/image")
print(json.dumps({"rows": backup.row_counts("default"), "csv": csv,
                  "page": client.get(f"/projects/{project.pk}/").status_code,
                  "picture": [picture.status_code, b"".join(picture.streaming_content).hex()],
                  "jobs": {job.pk: [job.state, job.error] for job in Job.objects.all()},
                  "ended_by_restore": AuditLogEntry.objects.filter(action="job.ended_by_restore").count()}))
"""


def populate(rp, users, *, jobs: bool = True) -> None:
    """The review project with reviews, a checkpoint file for its model version and two jobs left unfinished."""
    media.work_path(rp.version.checkpoint_file).parent.mkdir(parents=True, exist_ok=True)
    media.work_path(rp.version.checkpoint_file).write_bytes(CHECKPOINT)
    for nucleus in rp.nuclei(rp.colon)[:5]:
        do_decide(nucleus, rp.breast_set, 1, user=users["reviewer"], expected_label_id=None)
    if not jobs:
        return
    Job.objects.create(kind=Job.Kind.TRAIN, state=Job.State.RUNNING, project=rp.project, created_by=users["owner"])
    Job.objects.create(kind=Job.Kind.EXPORT, state=Job.State.QUEUED, project=rp.project, created_by=users["owner"])


def serves(install: dict | None) -> dict:
    if install is None:   # this process's installation, answering as the restored one does
        out = subprocess.run([sys.executable, "-c", SERVES], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=subprocess_env(MEDIA_ROOT=str(settings.MEDIA_ROOT)))
    else:
        out = run_in(install, "-c", SERVES)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow   # processes of their own, two restores: about 30 s
def test_a_restored_backup_serves_the_same_rows_files_and_labels(rp, users, tmp_path, restored_install):
    if connection.vendor == "postgresql" and not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump and pg_restore are not on the PATH (apt-get install postgresql-client)")
    populate(rp, users)
    before = serves(None)
    dest = tmp_path / "backup"
    call_command("backup", str(dest), verbosity=0)

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == backup.FORMAT and manifest["database"]["engine"] == connection.vendor
    assert manifest["database"]["rows"]["datasets.Image"] == Image.objects.count() == 4
    media_root = Path(media.root())
    on_disk = {path.relative_to(media_root).as_posix() for path in media_root.rglob("*") if path.is_file()}
    assert set(manifest["media"]["files"]) == on_disk
    for name, entry in manifest["media"]["files"].items():
        assert entry["sha256"] == sha256(media_root / name) == sha256(dest / "media" / name)

    restored = run_in(restored_install, "manage.py", "restore", str(dest))
    assert restored.returncode == 0, restored.stderr
    assert "2 jobs that were queued or running at the backup ended as failed" in restored.stdout

    after = serves(restored_install)
    assert after["csv"] == before["csv"] and after["csv"].count("\n") > 40      # the same labels, reviews included
    assert after["page"] == before["page"] == 200
    assert after["picture"] == before["picture"] and after["picture"][0] == 200
    changed = {label for label in before["rows"] if after["rows"][label] != before["rows"][label]}
    assert changed <= {"core.AuditLogEntry", "sessions.Session", "axes.AccessLog",  # the checks' own logins "django_celery_beat.PeriodicTask",
                       "django_celery_beat.IntervalSchedule", "django_celery_beat.CrontabSchedule",
                       "django_celery_beat.PeriodicTasks"}
    assert after["rows"]["core.AuditLogEntry"] == before["rows"]["core.AuditLogEntry"] + 4  # each job: failed, why
    assert after["ended_by_restore"] == 2 and before["ended_by_restore"] == 0
    for job_id, (state, error) in after["jobs"].items():
        assert state == "failed" and "restored from a backup" in error, (job_id, state, error)
    restored_media = Path(restored_install["MEDIA_ROOT"])
    assert {path.relative_to(restored_media).as_posix() for path in restored_media.rglob("*") if path.is_file()} \
        == on_disk
    assert (restored_media / rp.version.checkpoint_file).read_bytes() == CHECKPOINT

    again = run_in(restored_install, "manage.py", "restore", str(dest))
    assert again.returncode != 0 and "not empty (1 projects" in again.stderr and "--force" in again.stderr
    (restored_media / "left-by-the-installation.txt").write_text("replaced")
    forced = run_in(restored_install, "manage.py", "restore", "--force", str(dest))   # over its tables and files
    assert forced.returncode == 0, forced.stderr   # its row counts are checked against the manifest's
    assert not (restored_media / "left-by-the-installation.txt").exists()
    assert f"{sum(manifest['database']['rows'].values())} rows, {len(on_disk)} media files" in forced.stdout


def snapshot_images(dest: Path) -> list[tuple[str, str, str]]:
    """The (file, mask_file, thumbnail_file) of every image row in the backup's database, read with the
    database's own tools, and the integrity check of a SQLite copy."""
    manifest = json.loads((dest / "manifest.json").read_text())
    if manifest["database"]["engine"] == "sqlite":
        import sqlite3

        copy = sqlite3.connect(dest / manifest["database"]["file"])
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        return copy.execute("SELECT file, mask_file, thumbnail_file FROM datasets_image").fetchall()
    sql = subprocess.run(["pg_restore", "--data-only", "--table=datasets_image", "--file=-",
                          str(dest / manifest["database"]["file"])], capture_output=True, text=True, check=True).stdout
    header, *lines = sql[sql.index("COPY public.datasets_image"):].split("\n")
    columns = [name.strip() for name in header[header.index("(") + 1:header.index(")")].split(",")]
    rows = [dict(zip(columns, line.split("\t"))) for line in lines[:lines.index("\\.")]]
    return [(row["file"], row["mask_file"], row["thumbnail_file"]) for row in rows]


def test_a_backup_taken_while_reviewers_write_and_a_dataset_goes_names_no_missing_file(rp, users, tmp_path):
    """A reviewer saves before, during and after the first snapshot; the colon dataset is deleted (rows, then
    files) between that snapshot and the copy of the files. The copy must not name its files: the backup takes a
    second snapshot, which holds every decision saved by then."""
    if connection.vendor == "postgresql" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not on the PATH (apt-get install postgresql-client)")
    populate(rp, users, jobs=False)   # a running training would hold the deletion back
    nuclei = rp.nuclei(rp.breast)
    started, snapshot_taken = threading.Event(), threading.Event()
    decided = []

    def review():
        try:
            for index, nucleus in enumerate(nuclei[:12]):
                if index == 6:
                    started.set()
                    snapshot_taken.wait(60)
                do_decide(nucleus, rp.colon_set, 0, user=users["reviewer2"], expected_label_id=None)
                decided.append(nucleus.pk)
        finally:
            started.set()
            connections.close_all()

    writer = threading.Thread(target=review)
    snapshots = []

    def between_snapshot_and_copy():
        snapshots.append(1)
        if len(snapshots) == 1:
            snapshot_taken.set()
            writer.join(60)                 # six more decisions, after the snapshot
            do_delete_dataset(rp.colon)     # its rows are in the snapshot, its files go now

    writer.start()
    started.wait(60)
    try:
        result = backup.backup(tmp_path / "backup", between=between_snapshot_and_copy)
    finally:
        snapshot_taken.set()
        writer.join(60)
    assert len(decided) == 12 and result.snapshots == 2
    rows = result.manifest["database"]["rows"]
    assert rows["datasets.Label"] == Label.objects.count() and rows["review.ReviewLease"] == ReviewLease.objects.count()
    images = snapshot_images(tmp_path / "backup")
    assert len(images) == rows["datasets.Image"] == 2   # the colon dataset is gone
    assert {name for row in images for name in row if name} <= set(result.manifest["media"]["files"])


def test_a_backup_is_not_written_into_a_folder_that_holds_files(db, tmp_path):
    dest = tmp_path / "old"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="not an empty folder"):
        call_command("backup", str(dest), verbosity=0)
    assert [path.name for path in dest.iterdir()] == ["keep.txt"]


def test_a_restore_refuses_a_damaged_backup_or_one_from_a_newer_release(db, tmp_path):
    dest = tmp_path / "backup"
    call_command("backup", str(dest), verbosity=0)
    manifest = json.loads((dest / "manifest.json").read_text())

    newer = {**manifest, "database": {**manifest["database"],
                                      "migrations": manifest["database"]["migrations"] + ["review.9999_future"]}}
    (dest / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(backup.BackupError, match="newer release.*review.9999_future"):
        backup.check_migrations(newer)

    (dest / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(CommandError, match="format 99"):
        call_command("restore", str(dest), verbosity=0)

    (dest / "manifest.json").write_text(json.dumps(manifest))
    with (dest / manifest["database"]["file"]).open("r+b") as database:
        database.seek(200)
        database.write(b"damage")
    with pytest.raises(backup.BackupError, match="damaged"):
        backup.verify(dest, manifest)


@pytest.mark.slow   # four processes migrating databases of their own: about 40 s
def test_a_backup_of_an_older_release_is_migrated_forward(tmp_path, restored_install):
    """An installation one migration behind this code (as a previous release left it) is backed up and restored
    here: the restore applies the newer migration."""
    if connection.vendor == "postgresql" and not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump and pg_restore are not on the PATH (apt-get install postgresql-client)")
    older = {"DATA_DIR": str(tmp_path / "older"), "MEDIA_ROOT": str(tmp_path / "older" / "media")}
    if connection.vendor == "sqlite":
        older["DATABASE_URL"] = f"sqlite:///{tmp_path / 'older' / 'db.sqlite3'}"
    else:
        name = f"{connection.settings_dict['NAME']}_older"
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        older["DATABASE_URL"] = database_url_for_subprocess({**connection.settings_dict, "NAME": name})
    try:
        for step in (["migrate", "-v0"], ["migrate", "training", "0005", "-v0"],
                     ["backup", str(tmp_path / "backup")]):
            done = run_in(older, "manage.py", *step)
            assert done.returncode == 0, done.stderr
        manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
        assert "training.0006_db_defaults_for_workers_not_yet_upgraded" not in manifest["database"]["migrations"]

        restored = run_in(restored_install, "manage.py", "restore", str(tmp_path / "backup"))
        assert restored.returncode == 0, restored.stderr
        assert "migrated forward by 1 migrations" in restored.stdout
        plan = run_in(restored_install, "manage.py", "showmigrations", "training")
        assert "[X] 0006_db_defaults_for_workers_not_yet_upgraded" in plan.stdout and "[ ]" not in plan.stdout
    finally:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{connection.settings_dict["NAME"]}_older"')


def test_without_pg_dump_the_backup_says_what_to_install(db, tmp_path, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite is backed up through Python's sqlite3 module: no tool to install")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CommandError, match="pg_dump is not on the PATH: .*apt-get install postgresql-client"):
        call_command("backup", str(tmp_path / "backup"), verbosity=0)
    assert not (tmp_path / "backup").exists()


def test_a_dataset_folder_without_files_is_kept_and_needs_no_second_snapshot(owner, media_root, tmp_path):
    from tests.workers.training_helpers import labelled_dataset_row
    from webapp.projects.operations import do_create_project

    dataset = labelled_dataset_row(do_create_project("empty", actor=owner))
    assert not any((media_root / dataset.storage_dir).iterdir())
    result = backup.backup(tmp_path / "backup")
    assert result.snapshots == 1 and result.manifest["media"]["files"] == {}
    assert (tmp_path / "backup" / "media" / dataset.storage_dir).is_dir()
