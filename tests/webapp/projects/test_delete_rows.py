"""What a deletion job removes, row by row (run in this process, on SQLite and PostgreSQL): every row hanging off
the deleted nuclei (labels, current labels, predictions, leases, skips, undos, settled conflicts) goes, in set-wise
statements that fetch none of them (webapp.core.cascade); every other row stays as it was; the audit row is
written; nothing is left referring to a deleted row."""

import pytest
from django.db import connection
from django.db.models import signals
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.webapp.viewer_project import add_predictions, build_viewer_project, deletion_job, review
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, Nucleus
from webapp.projects.deletion import run_deletion_job
from webapp.projects.models import Project
from webapp.review.models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo
from webapp.training.models import Prediction

pytestmark = pytest.mark.django_db

BY_NUCLEUS = (Label, CurrentLabel, Prediction, ReviewLease, ReviewSkip, ConflictSettlement)


@pytest.fixture
def vp(owner, media_root, tmp_path):
    """The viewer project with a prediction of every nucleus of both datasets and, on an alpha nucleus, a
    decided lease, a skip, an undone decision and a settled conflict; a beta nucleus's label refers to an alpha
    label as the one it replaced (never so in the application: it shows that such a reference is set to null, as
    the field's SET_NULL says, rather than deleted)."""
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=6, size=96)
    add_predictions(vp)
    for image in Image.objects.filter(project=vp.project).exclude(pk=vp.image.pk):
        add_more_predictions(vp, image)
    now = timezone.now()
    first, second = Nucleus.objects.filter(image=vp.image).order_by("instance_id")[:2]
    decision = review(second, vp.alpha_set, 1, author=owner)
    undone = review(second, vp.alpha_set, 2, author=owner)
    ReviewUndo.objects.create(label=undone, restored=decision, actor=owner)
    settled = review(first, vp.alpha_set, 0, author=owner)
    ConflictSettlement.objects.create(label=settled, nucleus=first, label_set=vp.alpha_set, curator=owner)
    for nucleus in (first, second):
        ReviewLease.objects.create(nucleus=nucleus, label_set=vp.alpha_set, user=owner, expires_at=now,
                                   claimed_at=now, decided=True)
        ReviewSkip.objects.create(nucleus=nucleus, label_set=vp.beta_set, user=owner, skipped_at=now)
    beta_nucleus = Nucleus.objects.filter(image__dataset=vp.beta).order_by("id").first()
    vp.stray = review(beta_nucleus, vp.alpha_set, 1, author=owner)
    Label.objects.filter(pk=vp.stray.pk).update(previous=decision)
    ReviewLease.objects.create(nucleus=beta_nucleus, label_set=vp.alpha_set, user=owner, expires_at=now,
                               claimed_at=now, decided=True)
    return vp


def add_more_predictions(vp, image) -> None:
    version = vp.project.model_versions.get()
    Prediction.objects.bulk_create([
        Prediction(nucleus=nucleus, label_set=vp.alpha_set, model_version=version, class_index=0, probability=0.9,
                   base_probs=[0.9, 0.05, 0.05], mlp_probs=None, least_confidence=0.1, margin=0.8, entropy=0.2,
                   disagreement=0.0)
        for nucleus in Nucleus.objects.filter(image=image)])


TABLES = (Dataset, Image, Nucleus, *BY_NUCLEUS, ReviewUndo)


def rows() -> dict[str, dict[int, tuple]]:
    """Every row of the tables a deletion touches, by id, as plain values (what stays must stay as it was)."""
    return {model.__name__: {row[0]: row for row in model.objects.values_list()} for model in TABLES}


def ids_of(dataset_ids) -> dict[str, set[int]]:
    """The ids of the rows of these datasets, table by table."""
    nuclei = Nucleus.objects.filter(image__dataset_id__in=dataset_ids)
    ids = {model.__name__: set(model.objects.filter(nucleus__in=nuclei).values_list("pk", flat=True))
           for model in BY_NUCLEUS}
    ids["ReviewUndo"] = set(ReviewUndo.objects.filter(label__nucleus__in=nuclei).values_list("pk", flat=True))
    ids["Nucleus"] = set(nuclei.values_list("pk", flat=True))
    ids["Image"] = set(Image.objects.filter(dataset_id__in=dataset_ids).values_list("pk", flat=True))
    ids["Dataset"] = set(dataset_ids)
    return ids


def deleted_in_statements(job) -> CaptureQueriesContext:
    with CaptureQueriesContext(connection) as queries:
        run_deletion_job(job, lambda percent, message: None)
    connection.check_constraints()  # the foreign keys, as the commit checks them: nothing refers to a deleted row
    return queries


def test_deleting_a_dataset_removes_every_row_of_its_nuclei_and_nothing_else(vp, owner):
    alpha = ids_of([vp.alpha.pk])
    assert all(alpha.values()), alpha   # each kind of row is there to be deleted
    before = rows()

    queries = deleted_in_statements(deletion_job(vp, owner, "dataset"))

    after = rows()
    for table in before:
        assert set(before[table]) - set(after[table]) == alpha[table], table
        changed = {pk for pk, row in after[table].items() if row != before[table][pk]}
        assert changed == ({vp.stray.pk} if table == "Label" else set()), table
    assert Label.objects.get(pk=vp.stray.pk).previous_id is None   # SET_NULL: the label stays
    audit = AuditLogEntry.objects.get(action="dataset.deleted")
    assert (audit.target, audit.details["nuclei"], audit.details["images"]) == (
        f"datasets.dataset:{vp.alpha.pk}", len(alpha["Nucleus"]), 2)
    # Set-wise: no row of the nuclei, their labels or predictions was fetched to be deleted (the ORM's cascade
    # selected them all, then deleted them in batches of ids).
    tables = [f'"{model._meta.db_table}"' for model in (Nucleus, Label, Prediction, CurrentLabel)]
    fetched = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")
               and any(table in q["sql"].split(" WHERE ")[0] for table in tables)]
    assert fetched == []


def test_deleting_the_project_removes_every_row_of_it(vp, owner, tmp_path):
    keeper = build_viewer_project(owner, tmp_path / "keeper", name="Keeper", n_images=1, nuclei=4, size=64)
    project_id = vp.project.pk
    ours = ids_of(list(Dataset.objects.filter(project_id=project_id).values_list("pk", flat=True)))
    before = rows()

    deleted_in_statements(deletion_job(vp, owner, "project"))

    assert not Project.objects.filter(pk=project_id).exists()
    after = rows()
    for table in before:   # the keeper's rows stay as they were
        assert set(before[table]) - set(after[table]) == ours[table], table
        assert all(row == before[table][pk] for pk, row in after[table].items()), table
    assert Nucleus.objects.filter(image__project=keeper.project).exists()
    assert AuditLogEntry.objects.filter(action="project.deleted", target=f"projects.project:{project_id}").exists()


def test_a_delete_receiver_is_still_called_for_each_row(vp, owner):
    """A model with a delete signal receiver is deleted by the ORM's cascade, which calls it (none has one now:
    a receiver added later must not be skipped silently)."""
    alpha_predictions = set(Prediction.objects.filter(nucleus__image__dataset=vp.alpha).values_list("pk", flat=True))
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    signals.post_delete.connect(receiver, sender=Prediction)
    try:
        deleted_in_statements(deletion_job(vp, owner, "dataset"))
    finally:
        signals.post_delete.disconnect(receiver, sender=Prediction)
    assert set(seen) == alpha_predictions and len(seen) == len(alpha_predictions)
    assert not Prediction.objects.filter(pk__in=alpha_predictions).exists()
