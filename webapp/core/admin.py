from django.contrib import admin
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from .models import AuditLogEntry
from .operations import do_revoke_api_token


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


class ApiTokenAdmin(TokenAdmin):
    """Staff revoke a colleague's API token here (one ``account.token_revoked`` row, the staff member its actor)
    and make none: a token made here was a key to someone else's account (a token is made by its owner on the
    account page). The list leaves the keys out, which DRF's listed for every account; the token's own page
    still has its key as its title (the model's name for it)."""

    list_display = ("user", "created")
    readonly_fields = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        do_revoke_api_token(obj.user, reason="revoked by staff", actor=request.user)


admin.site.unregister(TokenProxy)
admin.site.register(TokenProxy, ApiTokenAdmin)
