from rest_framework import serializers

from mlcore.backbones import list_backbones
from mlcore.train import STAGES

from .models import ModelVersion, RetrainPolicy


class TrainRequestSerializer(serializers.Serializer):
    stages = serializers.ListField(child=serializers.ChoiceField(choices=STAGES), required=False,
                                   help_text="default: all three, in order")
    epochs = serializers.IntegerField(min_value=1, max_value=1000, required=False, help_text="per stage")
    backbone = serializers.ChoiceField(choices=list_backbones(), required=False)
    device = serializers.ChoiceField(choices=["auto", "cpu", "cuda"], required=False)
    batch_size = serializers.IntegerField(min_value=2, max_value=4096, required=False)
    samples_per_epoch = serializers.IntegerField(min_value=1, required=False)

    def validate_stages(self, stages):
        if list(stages) != sorted(stages, key=STAGES.index) or len(set(stages)) != len(stages):
            raise serializers.ValidationError(f"stages must be a subset of {list(STAGES)} in that order")
        return stages


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)
    checkpoint_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "number", "parent", "is_active", "created_at", "label_sets", "trained_on", "metrics",
                  "config", "checkpoint_url", "job"]

    def get_checkpoint_url(self, version) -> str:
        return f"/api/projects/{version.project_id}/versions/{version.number}/checkpoint/"


class TrainOptionsSerializer(TrainRequestSerializer):
    """The training options a retraining policy stores: the train API's own rules, and nothing else."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(f"unknown training option(s) {unknown}; allowed: {list(self.fields)}")
        return super().to_internal_value(data)


class RetrainPolicySerializer(serializers.ModelSerializer):
    options = TrainOptionsSerializer(required=False, help_text="the options of POST .../train/, for scheduled runs")

    class Meta:
        model = RetrainPolicy
        fields = ["enabled", "min_new_reviews", "check_every_minutes", "cron", "options"]


class InferRequestSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="the image (png, jpg, tif)")
    mask = serializers.FileField(help_text="its instance mask: npy (H x W int) or a PNG label image")
