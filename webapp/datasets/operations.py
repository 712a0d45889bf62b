"""State changes of labels and datasets: every correction appends a Label row and moves the CurrentLabel
pointer; a dataset's deletion is asked for here and carried out by a job (webapp.jobs.deletion)."""

from __future__ import annotations

from django.db import transaction

from mlcore.types import name_problem, quoted, strip_invisible
from webapp.core import audit, sql
from webapp.core.cache import delete_on_commit, unreviewed_counts_key
from webapp.core.domain_errors import Invalid
from webapp.core.notes import clean_note
from webapp.jobs.deletion import refuse_while_deleting
from webapp.projects.models import Project

from .models import CurrentLabel, Dataset, Label, LabelSet, LabelSource, Nucleus
from .uploads import refuse_taken_name


class StaleLabel(Exception):
    """The label changed since the client read it (someone else labelled the nucleus meanwhile)."""

    def __init__(self, current: CurrentLabel | None):
        self.current = current
        super().__init__("the label changed meanwhile")


def do_record_label(nucleus: Nucleus, label_set: LabelSet, class_index: int, *, author,
                    source: str = LabelSource.REVIEW, check_current: bool = False,
                    expected_label_id: int | None = None, client_id: str = "", model_version_id: int | None = None,
                    class_count: int | None = None, actor=None, action: str = "label.recorded",
                    **details) -> Label:
    """Append a label. With ``check_current``, ``expected_label_id`` (the current label the client saw,
    None for none) guards against lost updates: another current label raises StaleLabel. A ``client_id`` that was used before violates its unique constraint
    (IntegrityError): the caller answers with the row it names (see webapp.review.operations.do_decide).

    The audit row (``action``, with ``details``) names ``actor``, who need not be the label's ``author``:
    an undo restores someone else's label in their name.

    Four statements, no savepoint: the review queue saves a decision on every key press, so this is
    the hottest write of the application. ``class_count`` (the label set's number of classes, when the
    caller has it at hand) saves a query.
    """
    if class_count is None:
        class_count = label_set.classes.count()
    if not 0 <= class_index < class_count:
        raise ValueError(f"class index {class_index} is outside label set {quoted(label_set.name)}")
    # No savepoint of its own: an error here ends the caller's transaction, which re-raises anyway.
    with transaction.atomic(savepoint=False):
        current = sql.fetch_one(f"SELECT id, label_id, class_index FROM {sql.table(CurrentLabel)} "
                                f"WHERE nucleus_id = %s AND label_set_id = %s{sql.lock_clause()}",
                                [nucleus.pk, label_set.pk])
        current_id, current_label_id, current_class = current or (None, None, None)
        if check_current and current_label_id != expected_label_id:
            raise StaleLabel(_current_row(nucleus.pk, label_set.pk))
        label = Label.objects.create(nucleus=nucleus, label_set=label_set, class_index=class_index, source=source,
                                     author=author, previous_id=current_label_id, client_id=client_id,
                                     model_version_id=model_version_id)
        if current_id is not None:  # locked above: nobody moves it meanwhile
            sql.execute(f"UPDATE {sql.table(CurrentLabel)} SET label_id = %s, class_index = %s, source = %s "
                        f"WHERE id = %s", [label.pk, class_index, source, current_id])
        elif not _insert_current(nucleus.pk, label_set.pk, label.pk, class_index, source):
            # Someone recorded the first label of this nucleus since we looked (there was no row to lock).
            raise StaleLabel(_current_row(nucleus.pk, label_set.pk))
        audit.record(action, actor=actor or author, target=nucleus, project=label_set.project_id,
                     label_set=label_set.name,
                     class_index=class_index, source=source, previous=current_class, **details)
        delete_on_commit([unreviewed_counts_key(label_set.pk)])  # the gallery's per-class counts
    return label


def _current_row(nucleus_id: int, label_set_id: int) -> CurrentLabel | None:
    return CurrentLabel.objects.filter(nucleus_id=nucleus_id, label_set_id=label_set_id).first()


def _insert_current(nucleus_id: int, label_set_id: int, label_id: int, class_index: int, source: str) -> bool:
    """The nucleus's first current label; False when another transaction inserted one first (the
    unique constraint decides, without an error that would end the transaction)."""
    return sql.fetch_one(f"INSERT INTO {sql.table(CurrentLabel)} (nucleus_id, label_set_id, label_id, class_index, "
                         f"source) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (nucleus_id, label_set_id) DO NOTHING "
                         f"RETURNING id", [nucleus_id, label_set_id, label_id, class_index, source]) is not None


# ------------------------------------------------------------------------------------------- naming

NAME_MAX_LENGTH = Dataset._meta.get_field("name").max_length


def do_edit_dataset(dataset: Dataset, *, actor, name: str | None = None, provenance: str | None = None) -> Dataset:
    """Rename a dataset or change its provenance note (curators); the audit row keeps what it was.

    Only the name shown changes: its files, its label set and the model versions that trained on it (which
    list it under the name it had then) stay as they are. A name the project has, or is importing, is
    refused, as at upload."""
    with transaction.atomic():
        # The project's row first: two renames in one project run one at a time, so that the name check sees the
        # other's name (two datasets renamed to one name, or to "Same" and "same", at once passed it both).
        Project.objects.select_for_update().get(pk=dataset.project_id)
        current = Dataset.objects.select_for_update().get(pk=dataset.pk)
        refuse_while_deleting(current.project, "A change of a dataset's name or provenance")
        changes = {}
        if name is not None:
            name = strip_invisible(name)
            if (problem := name_problem(name, NAME_MAX_LENGTH)) is not None:
                raise Invalid(f"the name {problem}", field="name")
            if name != current.name:
                refuse_taken_name(current.project, name, exclude=current)
                changes["name"] = (current.name, name)
                if not current.split_key:   # the split stays drawn by the name it was drawn by (Dataset.split_key)
                    dataset.split_key = current.name
                    Dataset.objects.filter(pk=current.pk).update(split_key=current.name)
        if provenance is not None:
            provenance = clean_note(provenance, field="provenance", what="A provenance note")
            if provenance != current.provenance:
                changes["provenance"] = (current.provenance, provenance)
        audit.save_edit(dataset, changes, "dataset.edited", actor=actor)
    return dataset


# ----------------------------------------------------------------------------------------- deletion

def do_request_dataset_deletion(dataset: Dataset, *, actor):
    """Queue the deletion of a dataset (rows and files) as a job, once nothing in its project is at work
    that the deletion would break (409 otherwise); returns the job."""
    from webapp.jobs.deletion import DATASET_BLOCKERS, enqueue_deletion

    return enqueue_deletion(dataset.project_id, DATASET_BLOCKERS, f"Dataset {quoted(dataset.name)}", actor=actor,
                            params={"target": "dataset", "dataset": dataset.pk, "name": dataset.name},
                            action="dataset.deletion_requested", target=dataset,
                            still_there=Dataset.objects.filter(pk=dataset.pk).exists)


def do_delete_dataset(dataset: Dataset, *, job=None, progress=None) -> dict:
    """Delete a dataset's rows (images, nuclei, their labels, predictions and reviews) in one transaction,
    then its folder of files. Its label set stays: other datasets' nuclei may be labelled in it."""
    from webapp.jobs.deletion import DATASET_BLOCKERS, DeletionRefused, busy_job, busy_message, remove_media
    from webapp.projects.models import Project

    from .deletion import delete_images

    progress = progress or (lambda percent, message: None)
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=dataset.project_id)
        blocker = busy_job(dataset.project_id, DATASET_BLOCKERS, exclude=job)
        if blocker is not None:
            raise DeletionRefused(busy_message(blocker, f"Dataset {quoted(dataset.name)}"))
        # Locked before anything is deleted: a reviewer's save on one of its nuclei in flight ends first, and one
        # made meanwhile waits and finds it gone (webapp.datasets.being_deleted).
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        summary = {"target": "dataset", "deleted": True, "name": dataset.name, "dataset": dataset.pk,
                   "images": dataset.image_count, "nuclei": dataset.nucleus_count}
        progress(0, f"deleting {dataset.image_count} images and {dataset.nucleus_count} nuclei")
        slide_ids = list(dataset.images.exclude(slide_file="").values_list("id", flat=True))
        delete_images([dataset.pk], progress, done=0, total=dataset.nucleus_count, start=0, span=95)
        storage_dir = dataset.storage_dir
        target = audit.target_of(dataset)
        dataset.delete()
        audit.record("dataset.deleted", actor=getattr(job, "created_by", None), target=target,
                     project=dataset.project_id,
                     job=getattr(job, "pk", None), **{k: summary[k] for k in ("name", "images", "nuclei")})
        transaction.on_commit(lambda: remove_media(storage_dir))
        if slide_ids:  # the viewer's cached Deep Zoom tiles of its slides go with it
            from .slides import remove_cached_tiles

            transaction.on_commit(lambda: [remove_cached_tiles(pk) for pk in slide_ids])
    return summary
