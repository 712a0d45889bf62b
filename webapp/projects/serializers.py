from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from webapp.datasets.models import Dataset, LabelSet

from .models import Membership, Project, Role


@extend_schema_serializer(component_name="ProjectLabelSet")  # "LabelSet" is the review API's request body
class LabelSetSerializer(serializers.ModelSerializer):
    classes = serializers.SerializerMethodField()

    class Meta:
        model = LabelSet
        fields = ["id", "name", "classes"]

    def get_classes(self, label_set) -> list[dict]:
        return [{"index": c.index, "name": c.name, "color": c.color} for c in label_set.classes.all()]


class DatasetSerializer(serializers.ModelSerializer):
    label_set = serializers.SlugRelatedField(slug_field="name", read_only=True)
    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "format", "label_set", "provenance", "uploaded_by", "uploaded_at",
                  "image_count", "nucleus_count"]


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

    def get_role(self, project) -> str | None:
        user = self.context["request"].user
        return next((m.role for m in project.memberships.all() if m.user_id == user.pk), None)


class ProjectDetailSerializer(ProjectSerializer):
    label_sets = LabelSetSerializer(many=True, read_only=True)
    datasets = DatasetSerializer(many=True, read_only=True)

    class Meta(ProjectSerializer.Meta):
        fields = ProjectSerializer.Meta.fields + ["label_sets", "datasets"]


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.SlugRelatedField(source="user", slug_field="username",
                                            queryset=get_user_model().objects.all())
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["username", "role"]


FORMAT_CHOICES = Dataset.Format.choices


class DatasetUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    format = serializers.ChoiceField(choices=FORMAT_CHOICES)
    label_set = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                      help_text="join this label set (class names must match) or create it")
    labelled = serializers.BooleanField(default=True, help_text="false: masks only, every label set missing")
    provenance = serializers.CharField(required=False, allow_blank=True)
    archive = serializers.FileField(required=False, help_text="a zip holding the dataset as its format lays it out")
    files = serializers.ListField(child=serializers.FileField(), required=False,
                                  help_text="or the files directly (names may carry folders, e.g. masks/a.npy)")

    def validate(self, attrs):
        if not attrs.get("archive") and not attrs.get("files"):
            raise serializers.ValidationError({"archive": "upload a zip archive (archive) or the files (files)"})
        return attrs
