"""Who may see and do what in a project. Non-members get 404 (a project's existence is private)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import ROLE_RANK, Membership, Project, Role


def visible_projects(user):
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user).distinct()


def membership_of(user, project: Project) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(project=project, user=user).first()


def get_project_for(user, project_id, role: str = Role.VIEWER) -> Project:
    """The project if ``user`` is a member with at least ``role``; 404 for outsiders, 403 for too low a role."""
    project = Project.objects.filter(pk=project_id).first()
    membership = membership_of(user, project) if project else None
    if membership is None:
        raise Http404("No such project, or you are not a member of it.")
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {Role(role).label.lower()} role in project "
                               f"{project.name!r}; you are a {Role(membership.role).label.lower()}.")
    project.role = membership.role  # handy for templates and serializers
    return project


def can(user, project: Project, role: str) -> bool:
    membership = membership_of(user, project)
    return membership is not None and ROLE_RANK[membership.role] >= ROLE_RANK[role]
