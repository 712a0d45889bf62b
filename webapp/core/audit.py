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
