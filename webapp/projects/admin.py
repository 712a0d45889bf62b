"""The admin site's pages for projects and accounts. Memberships change only through the domain functions (the
project's Members page, the API): they keep one admin in every project and write the activity rows, which the
admin site's own forms did not. What only a server administrator decides, a project's folder of the slide share,
is edited here, through its domain function too, and so is the one membership change staff make: an account made
an admin of a project whose admins have left (a departed owner's project had nobody to manage it)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse

from mlcore.types import quoted

from webapp.core import audit
from webapp.core.domain_errors import Invalid

from .models import Membership, Project, Role
from .operations import UserNotFound, do_remove_member, do_set_membership, find_user
from .slides_folder import clean_slides_folder, do_set_slides_folder


class MembershipInline(admin.TabularInline):
    """Shown, not edited here: see the module's docstring."""
    model = Membership
    extra = 0
    readonly_fields = ("user", "role")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ProjectAdminForm(forms.ModelForm):
    new_admin = forms.CharField(
        required=False, max_length=254, label="Make an account an admin",
        help_text="For a project whose admins have left the lab: a username or e-mail address; a member becomes an "
                  "admin, anyone else is added as one. They then manage its members on the project's Members page. "
                  "One activity row, with you as its actor.")

    class Meta:
        model = Project
        fields = ["slides_folder"]

    def clean_new_admin(self):
        identifier = self.cleaned_data.get("new_admin", "").strip()
        if not identifier:
            return None
        try:
            return find_user(identifier)
        except UserNotFound as exc:
            raise forms.ValidationError(exc.detail) from None

    def clean_slides_folder(self):
        try:
            return clean_slides_folder(self.cleaned_data.get("slides_folder", ""))
        except Invalid as exc:
            raise forms.ValidationError(exc.detail) from None


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    """Name, description and members are the project admins' (the project's pages); the grant of a folder
    under SLIDES_ROOT is the server administrator's, here."""
    form = ProjectAdminForm
    list_display = ("name", "created_by", "created_at", "slides_folder")
    fields = ("name", "description", "created_by", "created_at", "slides_folder", "new_admin")
    readonly_fields = ("name", "description", "created_by", "created_at")
    inlines = [MembershipInline]

    def has_add_permission(self, request):
        return False  # a project is made on the home page, so that its creator becomes its admin

    def has_delete_permission(self, request, obj=None):
        # A project is deleted by its admins on its page or with the API: a deletion job that removes its rows set-wise
        # and then its files, refuses while a job of it runs, and is audited. The admin site's own deletion collected
        # every nucleus of the project for its confirmation page, deleted them in the request, left the files and
        # wrote no activity row. A project whose admins left gets a new one here first (new_admin).
        return False

    def save_model(self, request, obj, form, change):
        if "slides_folder" in form.changed_data:
            do_set_slides_folder(obj, form.cleaned_data["slides_folder"], actor=request.user)
        if form.cleaned_data.get("new_admin") is not None:
            do_set_membership(obj, form.cleaned_data["new_admin"], Role.ADMIN, actor=request.user)


def projects_only_they_administer(user) -> list[Project]:
    """The projects of which ``user`` is the only admin with an active account: deleting the account would
    leave them with nobody to manage their members or delete them."""
    return [membership.project for membership in
            Membership.objects.filter(user=user, role=Role.ADMIN).select_related("project").order_by("project_id")
            if not Membership.objects.filter(project_id=membership.project_id, role=Role.ADMIN,
                                             user__is_active=True).exclude(user=user).exists()]


User = get_user_model()


def only_admin_refusal(user, doing: str) -> str | None:
    """Why ``user`` may not be deleted or deactivated (``doing``), or None: they are the only active admin of a
    project, which would then have nobody to manage its members or delete it."""
    projects = projects_only_they_administer(user)
    if not projects:
        return None
    names = ", ".join(quoted(project.name) for project in projects)
    return (f"{user.get_username()} is the only admin of project{'s' if len(projects) > 1 else ''} {names} and cannot "
            f"be {doing}: make another member an admin first, on the project's Members page or, here, on the "
            "project's page (Make an account an admin).")


class AccountChangeForm(UserChangeForm):
    def clean_is_active(self):
        """A departed colleague is locked out by unticking Active; the only admin of a project stays active
        until another member is its admin (before, the project was left with no admin who could sign in)."""
        active = self.cleaned_data.get("is_active")
        if not active and self.instance.pk is not None and self.instance.is_active:
            refusal = only_admin_refusal(self.instance, "deactivated")
            if refusal:
                raise forms.ValidationError(refusal)
        return active


class AccountAdmin(UserAdmin):
    """Django's account pages, except that an account is deleted only where no project would lose its last
    admin, and its memberships go through :func:`do_remove_member` first (one activity row each, by the staff
    member who deleted it). Before, the only admin's account deleted here left a project nobody could manage,
    and the activity lost who had done what without saying why. Deactivating such an account is refused alike
    (:class:`AccountChangeForm`), and making an account, deactivating or reactivating one is on the audit log."""

    form = AccountChangeForm

    def _refusal(self, user) -> str | None:
        return only_admin_refusal(user, "deleted")

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if not change:   # as an account made with manage.py create_account is (before, this one was not)
                audit.record("account.created", actor=request.user, target=obj, user=obj.get_username())
            elif "is_active" in form.changed_data:
                audit.record("account.activated" if obj.is_active else "account.deactivated", actor=request.user,
                             target=obj, user=obj.get_username())

    def delete_view(self, request, object_id, extra_context=None):
        user = self.get_object(request, object_id)
        refusal = self._refusal(user) if user is not None else None
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            return redirect(reverse("admin:auth_user_change", args=[user.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        with transaction.atomic():
            for membership in Membership.objects.filter(user=obj).select_related("project"):
                do_remove_member(membership.project, obj, actor=request.user)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            refusal = self._refusal(user)
            if refusal:
                self.message_user(request, f"Not deleted: {refusal}", messages.ERROR)
            else:
                self.delete_model(request, user)


admin.site.unregister(User)
admin.site.register(User, AccountAdmin)
