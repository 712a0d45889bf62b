"""A project's activity: its audit rows, newest first, as its members read them on the activity page and
in the API. Who renamed a dataset, changed a role, started a training or published a model, and when.

What a row's details may show is a declared list: details also hold worker names, storage names and
slide paths, which are for the admin site, not for every member of the project.
"""

from __future__ import annotations

from django.db.models import Q

from webapp.core.domain_errors import Invalid
from webapp.core.models import AuditLogEntry

# A job's rows ("job.failed") go with what the job was about: an import's or a deletion's with the
# datasets, the others with trainings and models. Rows written before jobs' rows named their kind have none.
DATASET_JOB_KINDS = ("import", "delete")
MODEL_JOB_KINDS = ("train", "predict", "infer", "export")

# ?kind= on the page and in the API.
KINDS = {
    "team": Q(action__startswith="project."),
    "datasets": Q(action__startswith="dataset.") | Q(action__startswith="slide_upload.")
    | Q(action__startswith="job.", details__kind__in=DATASET_JOB_KINDS),
    "models": Q(action__startswith="model.") | Q(action__startswith="training.")
    | Q(action__startswith="job.", details__kind__in=MODEL_JOB_KINDS),
    "labels": Q(action__startswith="label."),
    # The page's first view: one row per label buried the uploads and trainings under pages of decisions.
    "changes": ~Q(action__startswith="label."),
}
PAGE_DEFAULT_KIND = "changes"
# Rows that say how the work went rather than what changed: a reviewer's claim on a nucleus, its release
# or skip, each checkpoint kept during a training, a worker taking a job. Shown only with ?kind=all.
ROUTINE = ("review.claimed", "review.released", "review.skipped", "training.epoch_kept", "training.stage_kept",
           "job.started")
KIND_CHOICES = [("changes", "Changes but single labels"), ("", "Every change, labels too"), ("team", "Project and team"),
                ("datasets", "Datasets"), ("models", "Trainings and models"), ("labels", "Labels"),
                ("all", "Everything, with routine rows")]

SHOWN_DETAILS = ("name", "name_before", "description", "description_before", "provenance", "provenance_before",
                 "user", "role", "previous", "kind", "format", "images", "nuclei", "label_set", "class_index",
                 "source", "number", "parent", "active", "stage", "epoch", "error", "enabled", "min_new_reviews",
                 "check_every_minutes", "cron", "options", "activate_only_if_not_lower", "filename", "datasets",
                 "members", "job", "jobs", "reason", "started_by_job", "slides_folder")
LONGEST_SHOWN = 300   # characters of one value on the page (a provenance note may hold 10,000)

# Words for the actions a member meets most; others show their code.
ACTION_WORDS = {
    "project.created": "created the project",
    "project.edited": "edited the project",
    "project.member_added": "added a member",
    "project.member_set": "set a member's role",
    "project.member_role_changed": "changed a member's role",
    "project.member_removed": "removed a member",
    "project.member_left": "left the project",
    "project.retrain_policy_set": "set the retraining policy",
    "project.deletion_requested": "asked for the project's deletion",
    "project.slides_folder_set": "set the project's folder of the slide share",
    "dataset.imported": "imported a dataset",
    "dataset.edited": "edited a dataset",
    "dataset.deletion_requested": "asked for a dataset's deletion",
    "dataset.deleted": "deleted a dataset",
    "slide_upload.start": "started a slide upload",
    "slide_upload.delete": "removed a slide upload",
    "slide_upload.kept": "got a slide upload back from an import that did not succeed",
    "job.enqueued": "started {a_job}",
    "job.started": "a worker took {a_job}",
    "job.cancel_requested": "asked to cancel {a_job}",
    "job.lost": "{a_job} lost its worker",
    "job.ended_by_restore": "{a_job} was ended by a restore from a backup taken while it was unfinished",
    "job.succeeded": "{a_job} succeeded",
    "job.failed": "{a_job} failed",
    "job.cancelled": "{a_job} was cancelled",
    "model.published": "published a model version",
    "model.activated": "activated a model version",
    "training.resume_points_discarded": "discarded resume points",
    "training.epoch_kept": "kept a training's epoch",
    "training.stage_kept": "kept a training's stage",
    "label.recorded": "labelled a nucleus",
    "label.undone": "undid a label",
    "review.claimed": "took a nucleus to review",
    "review.released": "gave a nucleus back",
    "review.skipped": "skipped a nucleus",
}
JOB_NOUNS = {"import": "an import", "train": "a training", "predict": "a prediction", "infer": "an inference",
             "export": "an export", "delete": "a deletion", "diagnostics": "a diagnostics job"}


def activity_rows(project, kind: str | None = None):
    """The project's audit rows of ``kind`` (see :data:`KINDS`; none: every change, "all": routine rows
    too), newest first; :class:`Invalid` on ``kind`` for a kind there is not."""
    rows = AuditLogEntry.objects.filter(project_id=project.pk).select_related("actor").order_by("-id")
    if kind == "all":
        return rows
    if kind and kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}; one of: {', '.join(['all', *KINDS])}", field="kind")
    if kind:
        rows = rows.filter(KINDS[kind])
    return rows.exclude(action__in=ROUTINE)


def shown_details(entry: AuditLogEntry) -> dict:
    """The details a project member may read, in :data:`SHOWN_DETAILS` order (a finished job's empty error
    left out)."""
    details = entry.details or {}
    return {key: details[key] for key in SHOWN_DETAILS if key in details and details[key] != ""}


# A training the retraining policy started, by its reason (no person started it).
POLICY_STARTS = {"threshold": "the retraining policy started a training (enough new reviews)",
                 "schedule": "the retraining policy started a training (its schedule)"}


def words(entry: AuditLogEntry) -> str:
    """What happened, in words: "edited a dataset", "a training failed"."""
    details = entry.details or {}
    text = ACTION_WORDS.get(entry.action, entry.action)
    if entry.action == "job.enqueued" and details.get("reason") in POLICY_STARTS:
        text = POLICY_STARTS[details["reason"]]
    elif entry.action == "job.enqueued" and details.get("started_by_job"):
        # A job queued by another (a training, its version's predictions): no person started it.
        text = f"{details.get('reason') or 'another'} job {details['started_by_job']} queued {{a_job}}"
    elif entry.action == "project.member_set" and details.get("created"):
        text = "added a member"
    a_job = JOB_NOUNS.get(details.get("kind"), "a job")
    text = text.format(a_job=a_job)
    starts_with_a_noun = text.startswith((a_job, "the retraining policy", "a worker")) or (
        entry.action == "job.enqueued" and bool(details.get("started_by_job")))
    return text[0].upper() + text[1:] if starts_with_a_noun and entry.actor_id is None and not entry.actor_name else text


def detail_lines(entry: AuditLogEntry, class_names: dict | None = None) -> list[tuple[str, str]]:
    """The shown details as (key, text) for the page: values as a person writes them, an edit's old and new
    value as one line ("a → b"), a label's class by name where ``class_names`` ({(label set, index): name})
    knows it."""
    details = shown_details(entry)
    if entry.action.startswith("label.") and class_names:
        for key in ("class_index", "previous"):
            name = class_names.get((details.get("label_set"), details.get(key)))
            if name is not None:
                details[key] = name
    lines = []
    for key, value in details.items():
        if key.endswith("_before") and key[:-len("_before")] in details:
            continue
        before = f"{_text(details[key + '_before'])} → " if key + "_before" in details else ""
        label = {"class_index": "class"}.get(key, key.replace("_", " "))
        lines.append((label, f"{before}{_text(value)}"))
    return lines


def _text(value) -> str:
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_text(v) for v in value) or "none"
    elif isinstance(value, dict):   # a policy's training options: "epochs 2; stages sparse, completion"
        text = "; ".join(f"{key.replace('_', ' ')} {_text(v)}" for key, v in sorted(value.items())) or "defaults"
    else:
        text = str(value)
    return text if len(text) <= LONGEST_SHOWN else text[:LONGEST_SHOWN] + "…"


def target_words(entry: AuditLogEntry, nucleus_names: dict | None = None) -> str:
    """"job 12", "dataset 3": the kind of the target and its id, from "jobs.job:12"; a nucleus by the name
    ``nucleus_names`` ({id: "nucleus 13 in tile_0001"}) has for it."""
    nucleus = target_nucleus_id(entry)
    if nucleus is not None and nucleus in (nucleus_names or {}):
        return nucleus_names[nucleus]
    label, _, pk = entry.target.partition(":")
    return f"{label.rpartition('.')[2].replace('modelversion', 'model version')} {pk}".strip() if pk else ""


def target_nucleus_id(entry: AuditLogEntry) -> int | None:
    """The nucleus a row is about (a label, a review claim), for its name and a link to its page."""
    label, _, pk = entry.target.partition(":")
    return int(pk) if label == "datasets.nucleus" and pk.isdecimal() else None


def target_job_id(entry: AuditLogEntry) -> int | None:
    """The job a row is about, for a link to its page."""
    label, _, pk = entry.target.partition(":")
    return int(pk) if label == "jobs.job" and pk.isdecimal() else None
