from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from mlcore.backbones import backbone_choices
from mlcore.config import MACHINE_FIELDS, MAX_ENSEMBLE, MAX_SAMPLES_PER_EPOCH, TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES, TTA_HELP
from mlcore.crops import CONTEXT_VIEWS
from mlcore.train import STAGES

from webapp.core.domain_errors import Invalid
from webapp.core.ids import MAX_ID
from webapp.core.known_fields import KnownFieldsOnly

from .models import ModelVersion, RetrainPolicy
from .schedule import parse_cron


class OptionalBooleanField(serializers.BooleanField):
    """A boolean whose default holds in a multipart or form body too: DRF reads a boolean missing from
    one as False (an unticked HTML checkbox is not sent), which would turn a default of True off."""

    default_empty_html = serializers.empty


class TrainRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    # A misspelt option (``epoch``) must not quietly start a default training of many minutes.
    unknown_fields_label = "training option"

    stages = serializers.ListField(child=serializers.ChoiceField(choices=STAGES), required=False,
                                   help_text="default: all three, in order")
    epochs = serializers.IntegerField(min_value=1, max_value=1000, required=False, help_text="per stage")
    backbone = serializers.ChoiceField(choices=backbone_choices(), required=False, help_text=(
        "auto: the small CPU net on a CPU worker, a ResNet-18 on a GPU worker"))
    device = serializers.ChoiceField(choices=["auto", "cpu", "cuda"], required=False)
    batch_size = serializers.IntegerField(min_value=2, max_value=4096, required=False)
    samples_per_epoch = serializers.IntegerField(min_value=1, max_value=MAX_SAMPLES_PER_EPOCH, required=False)
    # 0.025 by default: it completed unseen datasets better in every seed of the leave-one-out check (README).
    stain_jitter = serializers.FloatField(min_value=0.0, max_value=0.5, required=False, help_text=(
        "HED stain augmentation: each training crop's stain amounts scaled and shifted by up to this fraction; "
        "0.025 is the default, 0 turns it off. Unset: the active version's setting (or the default for a first "
        "version)"))
    # Off by default: on datasets left out of training it completed CoNSeP's tumour nuclei far better, and cost
    # the validation nuclei of the datasets trained on a little (README, "Grey crops").
    grayscale = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, help_text=(
        "the share of training crops turned grey, so that the network also learns nuclei by shape and texture: "
        "for slides from other centres, scanners or stains; 0, the default, turns it off. Unset: the active "
        "version's setting"))
    # 2 by default (TrainConfig): with its dropout (0.5) it was ahead on CoNSeP's and PanNuke-breast's validation
    # nuclei; on datasets left out of training it completed CoNSeP and NuCLS better and PanNuke worse (README).
    crop_context_view = serializers.ChoiceField(choices=list(CONTEXT_VIEWS), required=False, help_text=(
        "a second view of each nucleus at a coarser scale: 2, the default, shows the 128 px around it at half "
        "resolution beside the full-resolution crop; 0 turns it off. Unset: the active version's setting (2 for a "
        "first version)"))
    ensemble = serializers.IntegerField(min_value=1, max_value=MAX_ENSEMBLE, required=False, help_text=(
        "models trained with consecutive seeds and averaged (their predictions are the mean of their logits): 1, "
        "the default, is one model; 2 were about as good as the better of two seeds on the validation nuclei "
        "(README), at that many times the training and prediction time. Unset: the active version's setting"))
    predict_tta = OptionalBooleanField(required=False, help_text=(
        f"whether the new version's predictions of the project's tile images use {TTA_HELP} (default: "
        f"{TTA_DEFAULT_TILES}; whole slides are classified once per nucleus). The new version's validation "
        "metrics and its comparison with the version it replaces are scored the same way"))

    def validate_stages(self, stages):
        if not stages:
            raise serializers.ValidationError(f"choose at least one stage of {list(STAGES)}; "
                                              "leave the field out to train all three")
        if list(stages) != sorted(stages, key=STAGES.index) or len(set(stages)) != len(stages):
            raise serializers.ValidationError(f"stages must be a subset of {list(STAGES)} in that order")
        return stages


class TrainStartSerializer(TrainRequestSerializer):
    resume_from = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text=(
        "a cancelled or failed training job of this project that finished a stage: run its remaining stages "
        "from that stage's checkpoint, with its options (only device may be given besides)"))

    def validate(self, attrs):
        # A resumed training goes on with the options it started with: another option given with it would be
        # quietly ignored, and the script that sent it would believe it ran.
        others = sorted(set(attrs) - {"resume_from", "device"})
        if attrs.get("resume_from") and others:
            raise serializers.ValidationError({"resume_from": (
                f"a resumed training keeps the options it started with; leave out {', '.join(others)} "
                "(only device may be given with resume_from)")})
        return attrs


class TrainEstimateSerializer(TrainStartSerializer):
    """The query of GET .../train/estimate/: the options of POST .../train/ (stages repeated or comma-separated)."""

    # DRF's URL format override (?format=json), which every GET of the API takes, is no training option.
    ignored_fields = TrainStartSerializer.ignored_fields | {"format"}

    def to_internal_value(self, data):
        if hasattr(data, "getlist") and "stages" in data:
            data = data.copy()
            data.setlist("stages", [s for value in data.getlist("stages") for s in value.split(",") if s])
        return super().to_internal_value(data)


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True,
                                          help_text="the version that was active when this one was trained")
    fine_tuned_from = serializers.IntegerField(read_only=True, allow_null=True,
                                               help_text="the version whose network this one was fine-tuned from; "
                                                         "null for a new network")
    checkpoint_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "number", "parent", "fine_tuned_from", "is_active", "created_at", "label_sets", "trained_on",
                  "metrics", "config", "checkpoint_url", "job", "history", "training_data"]

    def get_checkpoint_url(self, version) -> str:
        url = f"/api/projects/{version.project_id}/versions/{version.number}/checkpoint/"
        request = self.context.get("request")  # absolute, as a job's file URLs are, so a script can fetch it
        return request.build_absolute_uri(url) if request else url

    def to_representation(self, version):
        data = super().to_representation(version)
        # Versions saved before TrainConfig.portable_dict kept the worker's crop cache folder: a server path.
        data["config"] = {k: v for k, v in (data.get("config") or {}).items() if k not in MACHINE_FIELDS}
        return data


class ActivatedVersionSerializer(ModelVersionSerializer):
    """A version made active, with the prediction jobs it queued (operations.do_activate_version)."""

    prediction_jobs = serializers.SerializerMethodField()

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "prediction_jobs"]

    def get_prediction_jobs(self, version) -> list[int]:
        return [job.pk for job in getattr(version, "prediction_jobs", [])]


class TrainOptionsSerializer(TrainRequestSerializer):
    """The training options a retraining policy stores: the train API's own rules, and nothing else."""


class RetrainPolicySerializer(KnownFieldsOnly, serializers.ModelSerializer):
    options = TrainOptionsSerializer(required=False, help_text="the options of POST .../train/, for scheduled runs")
    saved = serializers.SerializerMethodField(help_text="false until the policy is first saved")
    time_zone = serializers.SerializerMethodField(help_text="the time zone the cron schedule runs in")
    next_run_at = serializers.SerializerMethodField(help_text="when the cron schedule next starts a training")
    next_check_at = serializers.SerializerMethodField(help_text="when the new-review count is next checked")
    schedule_text = serializers.SerializerMethodField(help_text="what the policy does next, in words")

    class Meta:
        model = RetrainPolicy
        fields = ["enabled", "min_new_reviews", "check_every_minutes", "cron", "options", "activate_only_if_not_lower",
                  "saved", "time_zone", "next_run_at", "next_check_at", "schedule_text"]
        # Beat runs the check at this interval: 0 sent it without pause, and a year's worth of minutes overflowed
        # its next-run date on every tick.
        extra_kwargs = {"enabled": {"help_text": "whether the policy starts trainings; a PUT that leaves it out turns the "
                                                 "policy on (PUT replaces), a PATCH keeps it as it was (off before the "
                                                 "first save)"},
                        "check_every_minutes": {"min_value": 1, "max_value": RetrainPolicy.MAX_CHECK_EVERY_MINUTES},
                        "min_new_reviews": {"min_value": 0, "max_value": RetrainPolicy.MAX_MIN_NEW_REVIEWS}}

    def validate_cron(self, value: str) -> str:
        value = " ".join((value or "").split())
        if value:
            try:
                parse_cron(value)
            except Invalid as exc:
                raise serializers.ValidationError(exc.detail, code=exc.code) from None
        return value

    def to_representation(self, policy):
        data = super().to_representation(policy)
        if policy.pk is None:
            data["enabled"] = False  # nothing is scheduled until a policy is saved
        return data

    def get_saved(self, policy) -> bool:
        return policy.pk is not None

    def get_time_zone(self, policy) -> str:
        from django.conf import settings

        return settings.CELERY_TIMEZONE

    def get_next_run_at(self, policy) -> str | None:
        from .schedule import next_cron_run

        when = next_cron_run(policy) if policy.pk is not None else None
        return when.isoformat() if when else None

    def get_schedule_text(self, policy) -> str:
        from .schedule import describe_schedule

        return describe_schedule(policy)

    def get_next_check_at(self, policy) -> str | None:
        from .schedule import next_check

        when = next_check(policy) if policy.pk is not None else None
        return when.isoformat() if when else None


@extend_schema_serializer(component_name="Infer")  # "InferRequest" in the schema, whose requests end in Request
class InferRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    image = serializers.FileField(help_text="the image (png, jpg, tif)")
    mask = serializers.FileField(help_text="its instance mask: npy (H x W int) or a PNG label image")
    tta = OptionalBooleanField(default=TTA_DEFAULT_TILES, help_text=f"{TTA_HELP} (default: {TTA_DEFAULT_TILES})")


@extend_schema_serializer(component_name="SlideInfer")
class SlideInferRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    tta = OptionalBooleanField(default=TTA_DEFAULT_SLIDES, help_text=(
        f"{TTA_HELP} (default: {TTA_DEFAULT_SLIDES}: a slide's nuclei would take 8 times as long)"))
