from __future__ import annotations

from django.db import transaction

from webapp.core import audit

from .models import Membership, Project, Role


def do_create_project(name: str, *, actor, description: str = "") -> Project:
    """Create a project; its creator becomes its admin."""
    with transaction.atomic():
        project = Project.objects.create(name=name, description=description, created_by=actor)
        Membership.objects.create(project=project, user=actor, role=Role.ADMIN)
        audit.record("project.created", actor=actor, target=project, name=name)
    return project


def do_set_membership(project: Project, user, role: str, *, actor) -> Membership:
    with transaction.atomic():
        membership, created = Membership.objects.update_or_create(project=project, user=user,
                                                                  defaults={"role": role})
        audit.record("project.member_set", actor=actor, target=project, user=user.username, role=role,
                     created=created)
    return membership


def do_remove_member(project: Project, user, *, actor) -> None:
    with transaction.atomic():
        Membership.objects.filter(project=project, user=user).delete()
        audit.record("project.member_removed", actor=actor, target=project, user=user.username)
