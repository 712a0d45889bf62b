"""Who may see and do what in a project. Non-members get 404 (a project's existence is private)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from mlcore.types import quoted

from webapp.core import sql

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
    """The project if ``user`` is a member with at least ``role``; 404 for outsiders, 403 for too low a role.

    One plain statement (project and membership joined): the hot paths of the review queue call it on
    every request. ``project.role`` is the user's role (handy for templates and serializers).
    """
    project = None
    if user.is_authenticated:
        project = sql.first(Project.objects.raw(
            f"SELECT p.*, m.role AS member_role FROM {sql.table(Project)} p "
            f"JOIN {sql.table(Membership)} m ON m.project_id = p.id WHERE p.id = %s AND m.user_id = %s",
            [project_id, user.pk]))
    if project is None:
        raise Http404("No such project, or you are not a member of it.")
    if ROLE_RANK[project.member_role] < ROLE_RANK[role]:
        raise PermissionDenied(f"This needs the {Role(role).label.lower()} role in project "
                               f"{quoted(project.name)}; you are a {Role(project.member_role).label.lower()}.")
    project.role = project.member_role
    return project


def can(user, project: Project, role: str) -> bool:
    membership = membership_of(user, project)
    return membership is not None and ROLE_RANK[membership.role] >= ROLE_RANK[role]
