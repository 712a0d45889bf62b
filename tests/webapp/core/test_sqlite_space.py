"""SQLite gives a large deletion's free pages back to the disk at the periodic sweep (webapp.core.sqlite_space): a
new database by incremental auto_vacuum, one made before it by a VACUUM up to SQLITE_VACUUM_MAX_BYTES, a larger one
by ``manage.py sqlite_space --vacuum``. Asserted on the file's real size, as the disk sees it."""

import json
import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from webapp.core import sqlite_space
from webapp.datasets import bulk
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.datasets.operations import do_delete_dataset
from webapp.projects.operations import do_create_project
from workers.tasks import sweep_orphan_files

pytestmark = pytest.mark.django_db(transaction=True)   # the deletion commits; a VACUUM runs in no transaction
on_sqlite = pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
                               reason="SQLite's own file")
MiB = 2**20


@pytest.fixture(autouse=True)
def reclaim_from_one_mib(settings, media_root):
    settings.SQLITE_RECLAIM_MIN_BYTES = 1 * MiB


def big_dataset(owner, nuclei: int = 20_000) -> Dataset:
    """A dataset of one image whose nuclei fill about 14 MB (long outlines), written in bulk."""
    project = do_create_project("space", actor=owner)
    dataset = Dataset.objects.create(project=project, name="big", format="seed", storage_dir="projects/x/big",
                                     image_count=1, nucleus_count=nuclei)
    image = Image.objects.create(project=project, dataset=dataset, name="tile", file="t.png", mask_file="m.png",
                                 thumbnail_file="th.png", width=4096, height=4096, checksum="c", nucleus_count=nuclei)
    outline = json.dumps([[x, x + 1] for x in range(60)])
    with transaction.atomic():   # one commit (in autocommit each row was one)
        ids = bulk.allocate_ids(Nucleus, nuclei)
        bulk.insert_rows(Nucleus, ["id", "image_id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x",
                                   "centroid_y", "area", "outline"],
                         ((pk, image.pk, i, 0, 0, 9, 9, 4.5, 4.5, 81, outline) for i, pk in enumerate(ids, start=1)),
                         json_encoded=True)
    return dataset


def file_bytes() -> int:
    """The database file with its WAL, once the WAL is copied back and cut to nothing (as the disk sees it)."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    name = Path(connection.settings_dict["NAME"])
    return sum(path.stat().st_size for path in (name, name.with_name(name.name + "-wal")) if path.exists())


def deleted_big_dataset(owner) -> tuple[sqlite_space.Space, int]:
    do_delete_dataset(big_dataset(owner))
    freed = sqlite_space.space()
    assert freed.free_bytes > 10 * MiB and freed.free > 0.5 * freed.pages   # the deletion left them free
    return freed, file_bytes()


def make_legacy() -> None:
    """The database as one made before incremental auto_vacuum was asked for."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA auto_vacuum = NONE")
        cursor.execute("VACUUM")
    assert sqlite_space.space().auto_vacuum == sqlite_space.NONE


def assert_given_back(freed: sqlite_space.Space, size_before: int) -> None:
    after = sqlite_space.space()
    assert after.free < 0.05 * freed.free and after.pages <= freed.pages - 0.9 * freed.free
    assert file_bytes() <= size_before - 0.9 * freed.free_bytes
    assert after.auto_vacuum == sqlite_space.INCREMENTAL


@on_sqlite
def test_a_new_database_gives_a_deletions_pages_back_at_the_sweep(owner):
    assert sqlite_space.space().auto_vacuum == sqlite_space.INCREMENTAL   # asked for before its first table
    freed, size = deleted_big_dataset(owner)
    assert size >= freed.bytes   # SQLite alone keeps every freed page in the file

    sweep_orphan_files()   # what beat runs every 10 minutes

    assert_given_back(freed, size)


@on_sqlite
def test_a_few_free_pages_are_kept_for_the_next_inserts(owner, settings):
    settings.SQLITE_RECLAIM_MIN_BYTES = 64 * MiB
    freed, size = deleted_big_dataset(owner)
    assert sqlite_space.reclaim_free_pages() is None
    assert sqlite_space.space().free == freed.free and file_bytes() == size


@on_sqlite
def test_a_database_made_before_incremental_auto_vacuum_is_vacuumed_once_up_to_the_limit(owner):
    make_legacy()
    freed, size = deleted_big_dataset(owner)

    done = sqlite_space.reclaim_free_pages()

    assert done["how"] == "vacuum"
    assert_given_back(freed, size)   # and incremental from now on


@on_sqlite
def test_over_the_limit_the_log_says_to_run_the_command(owner, settings, caplog, capsys):
    settings.SQLITE_VACUUM_MAX_BYTES = 1 * MiB
    make_legacy()
    freed, size = deleted_big_dataset(owner)
    with caplog.at_level(logging.WARNING, logger="webapp.core.sqlite_space"):
        assert sqlite_space.reclaim_free_pages() is None
    assert "run `manage.py sqlite_space --vacuum` at a quiet time" in caplog.text
    assert sqlite_space.space().free == freed.free and file_bytes() == size

    call_command("sqlite_space", "--vacuum")

    assert_given_back(freed, size)
    assert "auto_vacuum none" in capsys.readouterr().out


@on_sqlite
def test_nothing_is_done_inside_a_transaction(owner):
    freed, _ = deleted_big_dataset(owner)
    with transaction.atomic():
        assert sqlite_space.reclaim_free_pages() is None
    assert sqlite_space.space().free == freed.free


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3", reason="PostgreSQL")
def test_postgresql_is_left_to_its_autovacuum():
    assert sqlite_space.space() is None and sqlite_space.reclaim_free_pages() is None
    with pytest.raises(Exception, match="not SQLite"):
        call_command("sqlite_space")
