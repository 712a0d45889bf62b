from rest_framework import serializers

from webapp.core.known_fields import KnownFieldsOnly

from . import activity
from .models import Membership, Project, Role
from .operations import UserNotFound, find_user


class ProjectSerializer(KnownFieldsOnly, serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "created_at", "role", "slides_folder"]
        # slides_folder: granted by a server administrator (webapp.datasets.slide_import.do_set_slides_folder)
        read_only_fields = ["id", "created_at", "role", "slides_folder"]

    def get_role(self, project) -> str | None:
        user = self.context["request"].user
        return next((m.role for m in project.memberships.all() if m.user_id == user.pk), None)


class ProjectEditSerializer(KnownFieldsOnly, serializers.Serializer):
    """A project's new name and/or description (PATCH): fields left out stay as they are."""

    name = serializers.CharField(required=False, allow_blank=True, help_text="unique among your projects")
    description = serializers.CharField(required=False, allow_blank=True)


class ActivitySerializer(serializers.Serializer):
    """One row of a project's activity (webapp.projects.activity): who did what, when, to which target."""

    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor = serializers.SerializerMethodField(help_text="the person's username (kept after their account is "
                                                        "deleted); null for what workers and schedules did")
    actor_deleted = serializers.SerializerMethodField(help_text="true when the actor's account has been deleted")
    action = serializers.CharField(help_text='e.g. "dataset.edited", "model.published"')
    words = serializers.SerializerMethodField()
    target = serializers.CharField(help_text='what it was about, as "app.model:id"')
    details = serializers.SerializerMethodField()

    def get_actor(self, entry) -> str | None:
        return entry.actor.username if entry.actor is not None else (entry.actor_name or None)

    def get_actor_deleted(self, entry) -> bool:
        return entry.actor_id is None and bool(entry.actor_name)

    def get_words(self, entry) -> str:
        return activity.words(entry)

    def get_details(self, entry) -> dict:
        return activity.shown_details(entry)


class MembershipSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(source="user.pk", read_only=True,
                                       help_text="the member's id, for changing their role or removing them")
    username = serializers.CharField(source="user.username", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    active = serializers.BooleanField(source="user.is_active", read_only=True,
                                      help_text="false: staff deactivated the account (a colleague who left); "
                                                "it cannot sign in, and does not count as the project's admin")

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "active"]


class AddMemberSerializer(KnownFieldsOnly, serializers.Serializer):
    """Adding a member, or changing their role: an existing account, by username or e-mail address."""

    username = serializers.CharField(max_length=254, help_text="username, or e-mail address, of an existing account")
    role = serializers.ChoiceField(choices=Role.choices)

    def validate_username(self, value: str):
        try:
            request = self.context.get("request")
            return find_user(value, actor=request.user if request is not None else None)
        except UserNotFound as exc:
            raise serializers.ValidationError(exc.detail, code=exc.code) from None


class MemberRoleSerializer(KnownFieldsOnly, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)
