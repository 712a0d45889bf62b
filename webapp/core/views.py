from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from webapp.jobs.access import job_for, visible_jobs

from . import operations


@require_GET
def home(request):
    from webapp.datasets.queries import project_summaries

    jobs = visible_jobs(request.user).select_related("created_by", "project").order_by("-created_at", "-id")[:10]
    return render(request, "core/home.html", {"jobs": jobs, "projects": project_summaries(request.user)})


@require_GET
def account(request):
    token = Token.objects.filter(user=request.user).first()
    return render(request, "core/account.html", {"token": token})


@require_POST
def regenerate_token(request):
    operations.do_regenerate_api_token(request.user)
    messages.success(request, "A new API token was created; the previous one no longer works.")
    return redirect("account")


@require_GET
def favicon(request):
    """/favicon.ico, which browsers ask for on pages that name no icon (the API's documentation pages):
    the site's icon, from the static files."""
    return redirect(static("favicon.svg"), permanent=True)


@require_GET
def job_detail(request, job_id: int):
    job = job_for(request.user, job_id)
    return render(request, "core/job_detail.html", {"job": job, "parameters": job_parameters(job)})


# Parameters that name server folders (where the upload was staged, where an inference writes): of no use
# to the person reading the page, and not theirs to know.
INTERNAL_PARAMETERS = {"staging", "folder"}


def job_parameters(job) -> list[tuple[str, str]]:
    """What the job was asked to do, as ``(name, value)`` lines for its page (nested options flattened)."""
    lines = []
    for key, value in job.params.items():
        if key in INTERNAL_PARAMETERS:
            continue
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


__all__ = ["home", "account", "regenerate_token", "favicon", "job_detail", "login_required"]
