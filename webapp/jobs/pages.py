"""The page of one job (server-rendered): what it was asked to do, its progress, log and result."""

from django.shortcuts import render
from django.views.decorators.http import require_safe

from webapp.projects.models import Membership

from .access import job_for, may_cancel


@require_safe
def job_detail(request, job_id: int):
    job = job_for(request.user, job_id)
    membership = (Membership.objects.filter(project_id=job.project_id, user=request.user).first()
                  if job.project_id else None)
    can_cancel = not job.finished and may_cancel(request.user, job, membership)
    return render(request, "core/job_detail.html", {"job": job, "parameters": job_parameters(job),
                                                    "files": job_files(job), "can_cancel": can_cancel,
                                                    "cancel_note": CANCEL_NOTES.get(job.kind, "")})


# What a cancel leaves, in the confirmation the job page asks (the pages that start trainings ask their own).
CANCEL_NOTES = {
    "import": "Nothing of the import is kept.",
    "train": ("The work since its last finished epoch is lost; it can be resumed from there on the project page "
              "once it has finished one."),
    "predict": "The images classified so far keep their predictions; the project page offers to make the rest.",
    "infer": "No files are written.",
    "export": "Nothing of the export is kept.",
    "delete": "Nothing is deleted: everything stays as it was.",
}


def job_files(job) -> list[str]:
    """The names of the files a finished job wrote for the user (an inference's npy, JSON and overlays), each
    served by the job-file API: the page that started the job linked them, a reload must still reach them."""
    if job.state != job.State.SUCCEEDED or not isinstance(job.result, dict):
        return []
    return job.shown_result.get("files") or []


def job_parameters(job) -> list[tuple[str, str]]:
    """What the job was asked to do, as ``(name, value)`` lines for its page (nested options flattened)."""
    lines = []
    for key, value in job.shown_params.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {_parameter_text(v)}" for k, v in value.items()) or "defaults"
        else:
            text = _parameter_text(value)
        lines.append((key.replace("_", " "), text))
    return lines


def _parameter_text(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_parameter_text(v) for v in value) or "—"
    return str(value)
