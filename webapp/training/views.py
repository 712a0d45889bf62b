"""Pages of training: a model version's own page (the project page's training section is pages.py)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_safe

from webapp.core.policy import project_role
from webapp.projects.access import get_project_for

from .models import ModelVersion
from .queries import version_of
from .version_page import version_page_context


@require_safe
def version_detail(request, project_id: int, number: int):
    project = get_project_for(request.user, project_id, project_role(request))
    version = version_of(project, number, ModelVersion.objects.select_related("project", "parent", "job"))
    return render(request, "training/version.html", version_page_context(version))
