"""Writes on a nucleus while its dataset (or project) is being deleted.

A deletion removes a dataset's rows in one transaction, table by table (webapp.datasets.deletion), and the foreign
keys are checked at its commit. A reviewer's save on one of its nuclei made meanwhile (a label, a lease, a skip)
wrote a row that the deletion's earlier statement did not see: on PostgreSQL the deletion's commit then failed with
the database's IntegrityError, and the deletion job with it. Every write that refers to a nucleus therefore
calls :func:`hold_dataset_of` first, in its own transaction (a claim of the review queue :func:`dataset_of`), one
statement in the common case:

- while a deletion of the nucleus's dataset or project is queued or running (its job, from the request on), the
  write is refused at once: :class:`BeingDeleted` (409), saying so;
- otherwise it takes a share lock on the dataset's row, which the deletion locks for update before it deletes
  anything (webapp.datasets.operations.do_delete_dataset, webapp.projects.deletion.do_delete_project). A write
  that got there first ends before the deletion starts (which then deletes what it wrote); a deletion that got
  there first ends before the write goes on, which then finds the nucleus gone: :class:`NucleusGone` (409 too).

On SQLite one transaction writes at a time in the whole database, so neither can slip into the other: the lock
is PostgreSQL's only.
"""

from __future__ import annotations

from django.db import connection

from mlcore.types import quoted

from webapp.core import sql
from webapp.core.domain_errors import Conflict
from webapp.jobs.deletion import UNFINISHED
from webapp.jobs.models import Job

from .models import Dataset, Image, Nucleus


class BeingDeleted(Conflict):
    """The nucleus's dataset or project is being deleted: nothing was written."""

    default_code = "being_deleted"


class NucleusGone(BeingDeleted):
    """The nucleus was deleted (with its dataset or project) while the write waited for the deletion: a 409 as
    well, not a 404 (which the review page reads as "you can no longer review this project")."""

    default_code = "nucleus_deleted"


def deletions(project_id: int) -> list[Job]:
    """The project's deletion jobs queued or running."""
    return list(Job.objects.filter(project_id=project_id, kind=Job.Kind.DELETE, state__in=UNFINISHED)
                .only("pk", "state", "params"))


def refusal(dataset_id: int, pending: list[Job]) -> BeingDeleted | None:
    """The refusal of a write on a nucleus of dataset ``dataset_id`` while one of ``pending`` (:func:`deletions`)
    deletes it or its project (``dataset_id`` None on the refusal of the project's), or None."""
    for job in pending:
        params = job.params or {}
        if params.get("target") == "project":
            refused = BeingDeleted(f"Project {quoted(params.get('name'))} is being deleted (job {job.pk}, "
                                   f"{job.state}): nothing was saved.", job_id=job.pk, being_deleted=True)
            refused.dataset_id = None
            return refused
    for job in pending:
        params = job.params or {}
        if params.get("target") == "dataset" and params.get("dataset") == dataset_id:
            refused = BeingDeleted(f"Dataset {quoted(params.get('name'))} is being deleted (job {job.pk}, "
                                   f"{job.state}): this nucleus is going with it, nothing was saved. Go on with "
                                   "another nucleus.", job_id=job.pk, being_deleted=True)
            refused.dataset_id = dataset_id
            return refused
    return None


def _dataset_row(nucleus_id: int, lock: str) -> tuple[int, bool] | None:
    # One statement: the dataset's id, whether a deletion of it or of its project is queued or running (the job's
    # params: webapp.jobs.deletion.enqueue_deletion), and the lock asked for.
    job = sql.table(Job)
    deleting = (f"EXISTS (SELECT 1 FROM {job} j WHERE j.project_id = d.project_id AND j.kind = %s AND j.state IN "
                f"(%s, %s) AND ({sql.json_text('j.params', 'target')} = 'project' OR "
                f"CAST({sql.json_text('j.params', 'dataset')} AS INTEGER) = d.id))")
    row = sql.fetch_one(f"SELECT d.id, {deleting} FROM {sql.table(Dataset)} d JOIN {sql.table(Image)} i ON "
                        f"i.dataset_id = d.id JOIN {sql.table(Nucleus)} n ON n.image_id = i.id WHERE n.id = %s{lock}",
                        [Job.Kind.DELETE.value, *(state.value for state in UNFINISHED), nucleus_id])
    return (row[0], bool(row[1])) if row else None


def dataset_of(nucleus_id: int) -> tuple[int, bool] | None:
    """The nucleus's dataset id and whether a deletion of it (or of its project) is queued or running; the
    dataset's row share-locked until the transaction ends unless it is. None: the nucleus is gone.

    On PostgreSQL the lock is first asked for without waiting (SKIP LOCKED), since a deletion under way holds the
    row for update until it commits: a save is not kept waiting for it. A row locked otherwise (a rename of the
    dataset, a moment; a deletion run without a job) is then waited for. FOR KEY SHARE: the weakest lock, which a
    deletion's FOR UPDATE waits for and writes on other nuclei of the dataset share."""
    if connection.vendor != "postgresql":
        return _dataset_row(nucleus_id, "")   # SQLite: one writer at a time, no row locks
    found = _dataset_row(nucleus_id, " FOR KEY SHARE OF d SKIP LOCKED")
    if found is not None:
        return found
    found = _dataset_row(nucleus_id, "")
    if found is None or found[1]:
        return found
    return _dataset_row(nucleus_id, " FOR KEY SHARE OF d")


def hold_dataset_of(nucleus: Nucleus, project_id: int) -> None:
    """Before a write that refers to ``nucleus`` (of project ``project_id``), inside its transaction: refuse it
    while its dataset or project is being deleted, and keep a deletion from starting until it is committed."""
    found = dataset_of(nucleus.pk)
    if found is not None and found[1]:
        refused = refusal(found[0], deletions(project_id))
        if refused is not None:
            raise refused
        found = _dataset_row(nucleus.pk, " FOR KEY SHARE OF d" if connection.vendor == "postgresql" else "")
    if found is None:
        raise NucleusGone(f"Nucleus {nucleus.pk} was deleted meanwhile, with its dataset: nothing was saved. Go on "
                          "with another nucleus.", being_deleted=True)
