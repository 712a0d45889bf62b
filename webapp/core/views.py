from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from webapp.jobs.access import job_for, visible_jobs

from . import operations


@require_GET
def home(request):
    from webapp.datasets.queries import project_summaries

    jobs = visible_jobs(request.user).select_related("created_by").order_by("-created_at", "-id")[:10]
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
def job_detail(request, job_id: int):
    job = job_for(request.user, job_id)
    return render(request, "core/job_detail.html", {"job": job})


__all__ = ["home", "account", "regenerate_token", "job_detail", "login_required"]
