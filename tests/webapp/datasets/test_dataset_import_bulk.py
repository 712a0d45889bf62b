"""PostgreSQL: the bulk rows of an import skip their per-row foreign-key checks only where the role may, only
for the import's own rows, and the checks are back for everything after them."""

from __future__ import annotations

import os

import pytest
from django.db import connection, transaction

from mlcore.synthetic import generate_dataset
from mlcore.types import DataError
from webapp.datasets import bulk
from webapp.datasets.importing import do_import_dataset
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def postgres_only(db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (SQLite has no COPY and no replication role)")


def replication_role() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        return cursor.fetchone()[0]


def test_a_role_that_may_set_it_skips_the_checks_until_told_otherwise():
    with transaction.atomic():
        bulk.check_constraints_now()
        assert bulk.trust_own_references() is True
        assert replication_role() == "replica"
        bulk.check_own_references()
        assert replication_role() == "origin"
    assert replication_role() == "origin"


def test_a_role_that_may_not_keeps_the_checks_and_its_transaction():
    role = f"nucleus_import_test_{os.getpid()}"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE ROLE "{role}" NOSUPERUSER')  # rolled back with the test's transaction
            cursor.execute(f'SET LOCAL ROLE "{role}"')
        assert bulk.trust_own_references() is False
        assert replication_role() == "origin"
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # the transaction is still usable
            assert cursor.fetchone() == (1,)
            cursor.execute("RESET ROLE")


def test_after_an_import_and_after_a_failed_one_the_checks_are_back(owner, tmp_path, settings):
    settings.IMPORT_PROCESSES = 1
    folder = generate_dataset(tmp_path / "tiles", format="hovernet", n_images=3, nuclei_per_image=8,
                              class_names=["a", "b"], size=(64, 64), seed=2)
    project = do_create_project("checks", actor=owner)
    dataset = do_import_dataset(project, name="tiles", format="hovernet", path=folder, actor=owner)
    assert dataset.nucleus_count > 0 and replication_role() == "origin"

    (sorted((folder / "Images").iterdir())[2]).write_bytes(b"junk")
    with pytest.raises(DataError):
        do_import_dataset(do_create_project("checks 2", actor=owner), name="tiles", format="hovernet", path=folder,
                          actor=owner)
    assert replication_role() == "origin"
