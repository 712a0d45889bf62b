"""Upgrading an installation with data: a worker not yet upgraded (another host, or the moment between the web
container's migration and the workers' restart) writes rows without the columns added since, and decisions
made before the decided-lease gate stay decided. Found by a helper who upgraded a populated installation from a
release two sessions old."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations import AddField
from django.db.migrations.loader import MigrationLoader
from django.db.models import NOT_PROVIDED, ForeignKey

from webapp.datasets.models import CurrentLabel, LabelSource
from webapp.review.models import ReviewLease


def test_columns_added_to_a_released_table_have_a_database_default():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    final = loader.project_state()
    missing = []
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        if not migration.__module__.startswith("webapp.") or migration.initial:
            continue
        for operation in migration.operations:
            if not isinstance(operation, AddField) or operation.field.null or isinstance(operation.field, ForeignKey):
                continue
            field = final.apps.get_model(app, operation.model_name)._meta.get_field(operation.name)
            if field.db_default is NOT_PROVIDED:
                missing.append(f"{app}.{operation.model_name}.{operation.name} (added in {name})")
    assert not missing, ("NOT NULL columns without db_default: code of the previous release cannot insert rows "
                         f"once they exist: {missing}")


@pytest.mark.django_db
def test_a_row_written_without_the_new_columns_takes_their_defaults(owner):
    """As a worker of the previous release writes a dataset: the INSERT names only the columns it knew."""
    from webapp.projects.operations import do_create_project

    project = do_create_project("old worker", actor=owner)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO datasets_dataset (project_id, name, format, provenance, uploaded_at, storage_dir, "
                       "image_count, nucleus_count) VALUES (%s, %s, %s, '', CURRENT_TIMESTAMP, 'x', 0, 0)",
                       [project.pk, "from an old worker", "seed"])
    assert project.datasets.get().split_key == ""


@pytest.mark.django_db
def test_decisions_without_a_decided_lease_get_one_and_nothing_else_changes(rp, users):
    """A reviewer's decision whose lease row is missing (the account was deleted before its rows were kept, or it
    was made before the gate existed) left the nucleus open to a second decision without a second opinion."""
    from webapp.review.operations import AlreadyDecided, do_decide

    reviewed = list(CurrentLabel.objects.filter(label_set=rp.breast_set)[:3])
    others = CurrentLabel.objects.exclude(pk__in=[c.pk for c in reviewed])
    CurrentLabel.objects.filter(pk__in=[c.pk for c in reviewed]).update(source=LabelSource.REVIEW)
    ReviewLease.objects.filter(nucleus_id__in=[c.nucleus_id for c in reviewed]).delete()
    kept = ReviewLease.objects.count()
    assert not others.filter(source=LabelSource.REVIEW).exists()

    migration = importlib.import_module("webapp.review.migrations.0006_leases_of_decisions_before")
    migration.decisions_stay_decided(apps, connection.schema_editor())
    added = ReviewLease.objects.filter(nucleus_id__in=[c.nucleus_id for c in reviewed], label_set=rp.breast_set)
    assert added.count() == 3 and ReviewLease.objects.count() == kept + 3
    assert all(lease.decided and lease.user_id is None for lease in added)
    current = CurrentLabel.objects.get(pk=reviewed[0].pk)
    with pytest.raises(AlreadyDecided):
        do_decide(current.nucleus, rp.breast_set, 0, user=users["reviewer"], expected_label_id=current.label_id)
    migration.decisions_stay_decided(apps, connection.schema_editor())   # twice: nothing more
    assert ReviewLease.objects.count() == kept + 3
