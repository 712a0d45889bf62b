from django.contrib import admin

from .models import AuditLogEntry


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "target", "actor")
    list_filter = ("action",)
    search_fields = ("target", "action")
    readonly_fields = ("created_at", "actor", "action", "target", "details")

    def has_add_permission(self, request):  # the log is written by domain functions only
        return False

    def has_change_permission(self, request, obj=None):
        return False
