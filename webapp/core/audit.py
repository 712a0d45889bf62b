"""The audit trail. Domain functions call :func:`record` inside their own transaction."""

from __future__ import annotations

from django.db import models

from .models import AuditLogEntry


def target_of(obj: models.Model) -> str:
    return f"{obj._meta.label_lower}:{obj.pk}"


def record(action: str, *, actor=None, target: models.Model | str = "", **details) -> AuditLogEntry:
    if isinstance(target, models.Model):
        target = target_of(target)
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditLogEntry.objects.create(action=action, actor=actor, target=target, details=details)


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
