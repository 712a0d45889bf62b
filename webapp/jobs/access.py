"""Who may see and cancel a job. A job has no rights of its own: it follows the roles of its project.

- Reading a job (API, page, its files) needs membership of its project (any role). Outsiders and
  members who have since been removed get 404, like every other object of a private project.
- Cancelling needs the curator role in the project, or to have started the job while still holding a
  role that could start it now (a reviewer may cancel the inference they asked for, not a colleague's).
- Jobs without a project belong to staff, and to whoever started them: worker diagnostics, and the
  deletion of a project, which outlives the project it deleted to tell its creator how it went.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404

from mlcore.types import quoted

from webapp.core import policy
from webapp.projects.models import Membership, Role

from .models import Job

# The project role that starting each kind of job needs: the role of the route that starts it, from
# the declared policy table (a prediction follows training; an export is a curator's).
START_ROLE = {
    Job.Kind.IMPORT: policy.ROUTES["api-project-datasets"]["POST"].project_role,
    Job.Kind.TRAIN: policy.ROUTES["api-train"]["POST"].project_role,
    Job.Kind.PREDICT: policy.ROUTES["api-train"]["POST"].project_role,
    Job.Kind.INFER: policy.ROUTES["api-infer"]["POST"].project_role,
    Job.Kind.EXPORT: Role.CURATOR,
    # A dataset's deletion (curators); a project's needs its admin and is detached from it when it is done.
    Job.Kind.DELETE: policy.ROUTES["api-project-dataset"]["DELETE"].project_role,
}
# Cancelling anyone's job of the project.
CANCEL_ROLE = policy.ROUTES["api-job-cancel"]["POST"].project_role


def visible_jobs(user):
    """The jobs of the projects the user is a member of; staff also see the jobs of no project."""
    if not user.is_authenticated:
        return Job.objects.none()
    member_of = Membership.objects.filter(user=user).values("project_id")
    visible = Q(project_id__in=member_of)
    if user.is_staff:
        visible |= Q(project__isnull=True)
    else:
        visible |= Q(project__isnull=True, created_by=user)
    return Job.objects.filter(visible)


def job_for(user, job_id, *, cancel: bool = False) -> Job:
    """The job if ``user`` may read it (and cancel it, with ``cancel``): 404 when they may not see it,
    403 when they may see it but not cancel it."""
    missing = Http404("No such job, or you are not a member of its project.")
    try:
        job = Job.objects.select_related("project").filter(pk=int(job_id)).first()
    except (TypeError, ValueError):
        raise missing from None
    if job is None or not getattr(user, "is_authenticated", False):
        raise missing
    if job.project_id is None:
        if not (user.is_staff or job.created_by_id == user.pk):
            raise missing
        return job
    membership = Membership.objects.filter(project_id=job.project_id, user=user).first()
    if membership is None:
        raise missing
    if cancel and not may_cancel(user, job, membership):
        raise PermissionDenied(
            f"Cancelling job {job.pk} needs the {Role(CANCEL_ROLE).label.lower()} role in project "
            f"{quoted(job.project.name)}, or to have started it; you are a {Role(membership.role).label.lower()}.")
    return job


def may_cancel(user, job: Job, membership: Membership | None) -> bool:
    if job.project_id is None:
        return bool(user.is_staff) or job.created_by_id == user.pk
    if membership is None:
        return False
    if membership.allows(CANCEL_ROLE):
        return True
    return job.created_by_id == user.pk and membership.allows(START_ROLE.get(job.kind, Role.CURATOR))
