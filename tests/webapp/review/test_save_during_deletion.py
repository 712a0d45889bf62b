"""A reviewer's save on a nucleus of a dataset (or project) being deleted: refused with a 409 that says so, and the
deletion succeeds. On PostgreSQL such a save, committed between the deletion's statements, made the deletion's
commit fail with the database's IntegrityError (the deletion job's error was its words); nothing was half-written,
but the dataset stayed."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction

from tests.threads import in_thread
from tests.webapp.viewer_project import build_viewer_project, deletion_job
from webapp.datasets.being_deleted import BeingDeleted, NucleusGone
from webapp.datasets.models import CurrentLabel, Dataset, Label, Nucleus
from webapp.datasets.operations import do_delete_dataset
from webapp.projects.deletion import do_delete_project, run_deletion_job
from webapp.projects.models import Project
from webapp.review.models import ReviewLease, ReviewSkip
from webapp.review.operations import do_claim_next, do_decide, do_skip
from webapp.review.queue import QueueSpec


@pytest.fixture
def vp(owner, media_root, tmp_path):
    return build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=5, size=64)


def unlabelled_in(vp, dataset, label_set) -> Nucleus:
    """A nucleus of ``dataset`` with no label (and no lease) in ``label_set``: a save on it blocks on nothing."""
    return (Nucleus.objects.filter(image__dataset=dataset).exclude(current_labels__label_set=label_set)
            .order_by("id").first())


def written(nucleus) -> tuple[int, int, int]:
    return (Label.objects.filter(nucleus=nucleus).count(), ReviewLease.objects.filter(nucleus=nucleus).count(),
            ReviewSkip.objects.filter(nucleus=nucleus).count())


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["dataset", "project"])
def test_saves_while_a_deletion_is_pending_are_refused_saying_so(vp, owner, api_client_for, target):
    job = deletion_job(vp, owner, target)
    nucleus = unlabelled_in(vp, vp.alpha, vp.beta_set)
    before = written(nucleus)
    client = api_client_for(owner)
    response = client.post(f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": vp.beta_set.name, "class_index": 1,
                                                                  "version": None}, format="json")
    assert response.status_code == 409, response.content
    body = response.json()
    if target == "dataset":
        assert body["detail"] == (f"Dataset 'alpha' is being deleted (job {job.pk}, running): this nucleus is going "
                                  "with it, nothing was saved. Go on with another nucleus.")
    else:
        assert body["detail"] == (f"Project {vp.project.name!r} is being deleted (job {job.pk}, running): nothing "
                                  "was saved.")
    assert body["being_deleted"] is True and body["job_id"] == job.pk   # the review page goes on to the next
    with pytest.raises(BeingDeleted):
        do_skip(nucleus, vp.beta_set, owner)
    assert written(nucleus) == before

    # The queue of beta-types holds nuclei of both datasets (alpha's have no label there).
    spec = QueueSpec(project=vp.project, label_set=vp.beta_set, user=owner, strategy="random")
    if target == "project":
        with pytest.raises(BeingDeleted):
            do_claim_next(spec)
        return
    # Another dataset's nuclei are saved as ever (the gallery's bulk save answers each on its own), and the queue
    # offers only theirs.
    other = unlabelled_in(vp, vp.beta, vp.alpha_set)
    bulk = client.post(f"/api/projects/{vp.project.pk}/review/bulk/", {"label_set": vp.alpha_set.name, "decisions": [
        {"nucleus": nucleus.pk, "class_index": 0, "version": None},
        {"nucleus": other.pk, "class_index": 0, "version": None}]}, format="json")
    assert bulk.status_code == 200, bulk.content
    refused, saved = bulk.json()["results"]
    assert (refused["status"], refused["being_deleted"], saved["status"]) == (409, True, 201)
    assert refused["detail"].startswith(f"Dataset 'alpha' is being deleted (job {job.pk}, running)")
    assert written(nucleus) == before and CurrentLabel.objects.get(nucleus=other, label_set=vp.alpha_set)
    claimed = []
    while (lease := do_claim_next(spec)) is not None and len(claimed) < 100:
        claimed.append(lease.nucleus_id)
        do_decide(Nucleus.objects.get(pk=lease.nucleus_id), vp.beta_set, 0, user=owner, expected_label_id=None)
    assert claimed and set(claimed) == set(Nucleus.objects.filter(image__dataset=vp.beta).exclude(
        pk__in=CurrentLabel.objects.filter(label_set=vp.beta_set, source="ground_truth").values("nucleus_id"))
        .values_list("pk", flat=True))


def wait_until(condition, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


def waiting_on_locks() -> int:
    """Other connections to the test database that wait on a lock now."""
    with connection.cursor() as cursor:
        # Read afresh: within a transaction, PostgreSQL keeps the first reading of pg_stat_activity.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("target", ["dataset", "project"])
@pytest.mark.parametrize("with_job", [True, False], ids=["deletion-job-running", "save-checked-before-the-job"])
def test_a_save_between_the_deletions_statements_leaves_it_to_succeed(vp, owner, with_job, target):
    """Two real connections (and a third): the deletion is held after it deleted the nucleus's labels and before it deletes the
    nucleus (a third connection share-locks that nucleus's row), and the save comes then. Before, the save
    committed its label there and the deletion's commit failed on it. With a deletion job running the save is
    refused at once; without one (a save that looked for it just before the deletion was asked for) it waits for
    the deletion and finds its nucleus gone. The deletion succeeds either way and nothing of the save is left."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one transaction write at a time: a save cannot come between a deletion's "
                    "statements there (test_saves_while_a_deletion_is_pending_are_refused_saying_so runs on both)")
    nucleus = unlabelled_in(vp, vp.alpha, vp.beta_set)
    nucleus_ids = list(Nucleus.objects.filter(image__dataset=vp.alpha).values_list("pk", flat=True))
    job = deletion_job(vp, owner, target) if with_job else None
    if job is not None:
        def delete():
            return run_deletion_job(job, lambda percent, message: None)
    elif target == "dataset":
        def delete():
            return do_delete_dataset(Dataset.objects.get(pk=vp.alpha.pk))
    else:
        def delete():
            return do_delete_project(Project.objects.get(pk=vp.project.pk))
    outcome: dict = {}
    with transaction.atomic():
        with connection.cursor() as cursor:   # holds the deletion at this nucleus's row
            cursor.execute(f"SELECT id FROM {Nucleus._meta.db_table} WHERE id = %s FOR KEY SHARE", [nucleus.pk])
        deleting = in_thread(delete, outcome, "deletion")
        wait_until(lambda: waiting_on_locks() == 1, "the deletion reaches the nucleus")
        saving = in_thread(lambda: do_decide(nucleus, vp.beta_set, 1, user=owner, expected_label_id=None),
                           outcome, "save")
        # The save ends (refused, or committed as it was before) or waits for the deletion.
        wait_until(lambda: "save" in outcome or waiting_on_locks() == 2, "the save ends or waits")
    deleting.join(60)
    saving.join(60)
    assert not deleting.is_alive() and not saving.is_alive()

    assert not isinstance(outcome["deletion"], Exception), repr(outcome["deletion"])
    assert outcome["deletion"]["deleted"] is True
    assert not Dataset.objects.filter(pk=vp.alpha.pk).exists()
    assert not Nucleus.objects.filter(pk__in=nucleus_ids).exists()
    assert not Label.objects.filter(nucleus_id__in=nucleus_ids).exists()
    assert not CurrentLabel.objects.filter(nucleus_id__in=nucleus_ids).exists()
    assert not ReviewLease.objects.filter(nucleus_id__in=nucleus_ids).exists()
    save = outcome["save"]
    if with_job:
        assert isinstance(save, BeingDeleted) and not isinstance(save, NucleusGone), repr(save)
        assert save.detail.startswith(f"Dataset 'alpha' is being deleted (job {job.pk}, running)" if target == "dataset"
                                      else f"Project {vp.project.name!r} is being deleted (job {job.pk}, running)")
    else:
        assert isinstance(save, NucleusGone), repr(save)
        assert save.detail == (f"Nucleus {nucleus.pk} was deleted meanwhile, with its dataset: nothing was saved. "
                               "Go on with another nucleus.")
    # The other dataset's rows stay, unless the whole project went.
    assert Dataset.objects.filter(pk=vp.beta.pk).exists() == (target == "dataset")
