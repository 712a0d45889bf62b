from django.conf import settings
from django.db import models


class AuditLogEntry(models.Model):
    """One row per state change, written in the same transaction as the change itself."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    # The actor's username when the row was written: the row still says who did it once their account is
    # deleted (the key above is then emptied, and the activity read "automatic" for all they had done).
    actor_name = models.CharField(max_length=150, blank=True, default="", db_default="")
    action = models.CharField(max_length=64, db_index=True)
    # What the change was about, as "app.model:pk" so that the log outlives deleted rows.
    target = models.CharField(max_length=128, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    # The project the change happened in, for its activity page; a plain id, not a key, so that the rows
    # outlive the project as they outlive their targets. Empty for changes of no project (accounts).
    project_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit log entries"
        indexes = [models.Index(fields=["project_id", "-id"], name="audit_by_project")]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"
