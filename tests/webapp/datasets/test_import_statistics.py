"""Imports and prediction jobs leave PostgreSQL with planner statistics (issue 14, failure 4).

Autovacuum may be off, or late: without statistics the planner takes the freshly filled tables for
empty ones and the review queue's candidate query ran 15 ms instead of 0.8 ms until ANALYZE ran.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from mlcore.synthetic import generate_dataset
from webapp.datasets import bulk
from webapp.datasets.importing import do_import_dataset
from webapp.datasets.models import CurrentLabel, Label, Nucleus
from webapp.projects.operations import do_create_project
from webapp.training.models import Prediction

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_only(db):
    if connection.vendor != "postgresql":
        pytest.skip("planner statistics (ANALYZE, pg_stat_user_tables) are PostgreSQL's")


def statistics(model) -> tuple[float, object]:
    """(reltuples, last manual ANALYZE) of a model's table, as the planner and the stats views see them."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT c.reltuples, s.last_analyze FROM pg_class c "
                       "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = %s", [table])
        return cursor.fetchone()


def database_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_an_import_leaves_statistics_of_the_tables_it_filled(postgres_only, owner, tmp_path, settings):
    settings.IMPORT_PROCESSES = 1
    settings.MEDIA_ROOT = tmp_path / "media"
    folder = generate_dataset(tmp_path / "tiles", format="hovernet", n_images=3, nuclei_per_image=10,
                              class_names=["a", "b"], size=(64, 64), seed=3)
    started = database_now()
    dataset = do_import_dataset(do_create_project("stats", actor=owner), name="tiles", format="hovernet",
                                path=folder, actor=owner)
    nuclei = Nucleus.objects.count()
    assert nuclei == dataset.nucleus_count > 0
    for model, rows in ((Nucleus, nuclei), (Label, Label.objects.count()), (CurrentLabel, CurrentLabel.objects.count())):
        deadline = time.monotonic() + 5
        reltuples, analysed = statistics(model)
        while (analysed is None or analysed < started) and time.monotonic() < deadline:
            time.sleep(0.1)   # the stats views may lag the ANALYZE by a moment
            reltuples, analysed = statistics(model)
        assert analysed is not None and analysed >= started, model.__name__
        assert reltuples == rows, model.__name__   # a small table is sampled whole


@pytest.mark.django_db(transaction=True)
def test_analyze_waits_for_the_commit_and_is_nothing_on_a_rolled_back_transaction(postgres_only):
    from django.db import transaction

    started = database_now()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            bulk.analyze_after_commit(Prediction)
            raise RuntimeError("the import failed")
    _, analysed = statistics(Prediction)
    assert analysed is None or analysed < started
    with transaction.atomic():
        bulk.analyze_after_commit(Prediction)
        _, analysed = statistics(Prediction)
        assert analysed is None or analysed < started   # not before the commit
    deadline = time.monotonic() + 5
    while ((analysed := statistics(Prediction)[1]) is None or analysed < started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert analysed is not None and analysed >= started
