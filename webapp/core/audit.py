"""The audit trail. Domain functions call :func:`record` inside their own transaction."""

from __future__ import annotations

from django.db import models

from .models import AuditLogEntry


def target_of(obj: models.Model) -> str:
    return f"{obj._meta.label_lower}:{obj.pk}"


PROJECT_TARGET = "projects.project:"


def record(action: str, *, actor=None, target: models.Model | str = "", project: models.Model | int | None = None,
           **details) -> AuditLogEntry:
    """One audit row. ``project`` (a project or its id), for the project's activity page, is taken from
    the target where it can be (a project, or a row with a ``project_id``); give it where it cannot (a
    nucleus, or the name of a row deleted)."""
    project_id = getattr(project, "pk", project)
    if project_id is None:
        project_id = _project_of(target)
    if isinstance(target, models.Model):
        target = target_of(target)
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditLogEntry.objects.create(action=action, actor=actor, actor_name=actor.get_username() if actor else "",
                                        target=target, details=details, project_id=project_id)


def _project_of(target: models.Model | str) -> int | None:
    if isinstance(target, str):
        tail = target[len(PROJECT_TARGET):] if target.startswith(PROJECT_TARGET) else ""
        return int(tail) if tail.isdecimal() else None
    if target._meta.label_lower == "projects.project":
        return target.pk
    return getattr(target, "project_id", None)


def save_edit(instance: models.Model, changes: dict[str, tuple], action: str, *, actor) -> None:
    """Save an edit of ``instance``'s fields, ``{field: (before, after)}``, with one audit row that keeps
    each new value and, as ``<field>_before``, the old one; nothing at all when nothing changed."""
    if not changes:
        return
    for field, (_, after) in changes.items():
        setattr(instance, field, after)
    instance.save(update_fields=list(changes))
    record(action, actor=actor, target=instance,
           **{f"{field}_before": before for field, (before, _) in changes.items()},
           **{field: after for field, (_, after) in changes.items()})
