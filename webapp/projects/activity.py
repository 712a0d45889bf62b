"""A project's activity: its audit rows, newest first, as its members read them on the activity page and
in the API. Who renamed a dataset, changed a role, started a training or published a model, and when.

What a row's details may show is a declared list: details also hold worker names, storage names and
slide paths, which are for the admin site, not for every member of the project.
"""

from __future__ import annotations

from webapp.core.domain_errors import Invalid
from webapp.core.models import AuditLogEntry

# ?kind= on the page and in the API: which actions each shows, by the start of their name.
KINDS = {
    "team": ("project.",),
    "datasets": ("dataset.", "slide_upload."),
    "models": ("model.", "training.", "job."),
    "labels": ("label.",),
}
# Rows that say how the work went rather than what changed: a reviewer's claim on a nucleus, its release
# or skip, each checkpoint kept during a training, a worker taking a job. Shown only with ?kind=all.
ROUTINE = ("review.claimed", "review.released", "review.skipped", "training.epoch_kept", "training.stage_kept",
           "job.started")
KIND_CHOICES = [("", "Changes"), ("team", "Project and team"), ("datasets", "Datasets"),
                ("models", "Trainings and models"), ("labels", "Labels"), ("all", "Everything, with routine rows")]

SHOWN_DETAILS = ("name", "name_before", "description", "description_before", "provenance", "provenance_before",
                 "user", "role", "previous", "kind", "format", "images", "nuclei", "label_set", "class_index",
                 "source", "number", "parent", "active", "stage", "epoch", "error", "enabled", "min_new_reviews",
                 "cron", "activate_only_if_not_lower", "filename", "datasets", "members", "job", "jobs")

# Words for the actions a member meets most; others show their code ("job.succeeded").
ACTION_WORDS = {
    "project.created": "created the project",
    "project.edited": "edited the project",
    "project.member_added": "added a member",
    "project.member_set": "set a member's role",
    "project.member_role_changed": "changed a member's role",
    "project.member_removed": "removed a member",
    "project.retrain_policy_set": "set the retraining policy",
    "project.deletion_requested": "asked for the project's deletion",
    "dataset.imported": "imported a dataset",
    "dataset.edited": "edited a dataset",
    "dataset.deletion_requested": "asked for a dataset's deletion",
    "dataset.deleted": "deleted a dataset",
    "slide_upload.start": "started a slide upload",
    "slide_upload.delete": "removed a slide upload",
    "job.enqueued": "started a job",
    "job.cancel_requested": "asked to cancel a job",
    "job.lost": "a job lost its worker",
    "job.succeeded": "a job succeeded",
    "job.failed": "a job failed",
    "job.cancelled": "a job was cancelled",
    "model.published": "published a model version",
    "model.activated": "activated a model version",
    "training.resume_points_discarded": "discarded resume points",
    "label.recorded": "labelled a nucleus",
    "label.undone": "undid a label",
}


def activity_rows(project, kind: str | None = None):
    """The project's audit rows of ``kind`` (see :data:`KINDS`; none: every change, "all": routine rows
    too), newest first; :class:`Invalid` on ``kind`` for a kind there is not."""
    rows = AuditLogEntry.objects.filter(project_id=project.pk).select_related("actor").order_by("-id")
    if not kind:
        return rows.exclude(action__in=ROUTINE)
    if kind == "all":
        return rows
    if kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}; one of: {', '.join(['all', *KINDS])}", field="kind")
    starts = KINDS[kind]
    matching = AuditLogEntry.objects.none()
    for start in starts:
        matching = matching | rows.filter(action__startswith=start)
    return matching.exclude(action__in=ROUTINE).order_by("-id")


def shown_details(entry: AuditLogEntry) -> dict:
    """The details a project member may read, in :data:`SHOWN_DETAILS` order."""
    details = entry.details or {}
    return {key: details[key] for key in SHOWN_DETAILS if key in details}


def detail_lines(entry: AuditLogEntry) -> list[tuple[str, str]]:
    """The shown details as (key, text) for the page; an edit's old and new value as one line, "a → b"."""
    details = shown_details(entry)
    lines = []
    for key, value in details.items():
        if key.endswith("_before") and key[:-len("_before")] in details:
            continue
        before = f"{details[key + '_before']!s} → " if key + "_before" in details else ""
        lines.append((key.replace("_", " "), f"{before}{value}"))
    return lines


def action_words(action: str) -> str:
    return ACTION_WORDS.get(action, action)


def target_words(entry: AuditLogEntry) -> str:
    """"job 12", "dataset 3": the kind of the target and its id, from "jobs.job:12"."""
    label, _, pk = entry.target.partition(":")
    return f"{label.rpartition('.')[2].replace('modelversion', 'model version')} {pk}".strip() if pk else ""


def target_job_id(entry: AuditLogEntry) -> int | None:
    """The job a row is about, for a link to its page."""
    label, _, pk = entry.target.partition(":")
    return int(pk) if label == "jobs.job" and pk.isdecimal() else None
