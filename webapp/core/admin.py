from django.contrib import admin

from .models import AuditLogEntry


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "target", "actor_name")
    list_filter = ("action",)
    search_fields = ("target", "action", "actor_name")
    readonly_fields = ("created_at", "actor", "actor_name", "action", "target", "details")

    def has_add_permission(self, request):  # the log is written by domain functions only
        return False

    def has_change_permission(self, request, obj=None):
        return False
