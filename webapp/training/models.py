"""Model versions, the predictions they made, and each project's retraining policy."""

from django.db import models

from webapp.datasets.models import LabelSet, Nucleus
from webapp.projects.models import Project


class ModelVersion(models.Model):
    """A trained model, published only when its training job succeeded."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    checkpoint_file = models.CharField(max_length=255, help_text="its storage name (webapp.core.media)")
    config = models.JSONField(default=dict)
    label_sets = models.JSONField(default=list, help_text="[{name, classes}] in the model's output order")
    # {label set: {"ground_truth": n, "review": n}, "unlabelled_nuclei": n}
    trained_on = models.JSONField(default=dict)
    # {label set: {n, accuracy, macro_f1, weighted_f1, per_class, confusion}} on the fixed validation split
    metrics = models.JSONField(default=dict)
    # One entry per epoch of every stage (mlcore's history): stage, epoch, loss, val_macro_f1 {label set: f1},
    # samples, seconds, samples_per_s; a resumed training's includes the epochs of the run it resumed.
    history = models.JSONField(default=list, db_default=[], blank=True)
    # What it was trained on beyond the label counts: {"datasets": [{name, format, images, nuclei}],
    # "nuclei": n, "split": {"train": n, "validation": n}, "stages": [...], "resumed_from_job": id or None}
    training_data = models.JSONField(default=dict, db_default={}, blank=True)
    # Reviews after this instant are "new" for the retraining policy: the data snapshot time.
    data_snapshot_at = models.DateTimeField()
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["project"], condition=models.Q(is_active=True),
                                    name="one_active_version_per_project"),
        ]

    def __str__(self):
        return f"{self.project} v{self.number}"

    @property
    def fine_tuned_from(self) -> int | None:
        """The number of the version whose network this one's training went on from; None for a new network.
        Versions from before it was recorded say their parent (the active version they replaced)."""
        data = self.training_data or {}
        if "fine_tuned_from" in data:
            return data["fine_tuned_from"]
        return self.parent.number if self.parent_id else None


class Prediction(models.Model):
    """One model version's prediction for one nucleus in one label set, with its uncertainty."""

    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="predictions")
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    class_index = models.PositiveSmallIntegerField()
    probability = models.FloatField(help_text="probability of the predicted class (mean of both branches)")
    base_probs = models.JSONField(help_text="softmax of the base head, per class")
    mlp_probs = models.JSONField(null=True, help_text="softmax of the label-correlation branch, per class")
    least_confidence = models.FloatField()
    margin = models.FloatField()
    entropy = models.FloatField()
    disagreement = models.FloatField()
    # The nucleus is cut by its image's edge or tiny (webapp.training.operations.sliver_ids): the review
    # queue serves slivers after the other nuclei, whatever their uncertainty (a fragment's class
    # probabilities are uncertain because it is a fragment). Copied here so the queue's indexes have it.
    sliver = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_version", "label_set", "nucleus"],
                                               name="one_prediction_per_version")]
        indexes = [models.Index(fields=["model_version", "label_set", "sliver", "-entropy"], name="pred_entropy_idx"),
                   models.Index(fields=["model_version", "label_set", "sliver", "-least_confidence"],
                                name="pred_lc_idx"),
                   models.Index(fields=["model_version", "label_set", "sliver", "margin"], name="pred_margin_idx"),
                   models.Index(fields=["model_version", "label_set", "sliver", "-disagreement"],
                                name="pred_disagree_idx"),
                   models.Index(fields=["nucleus", "label_set"], name="pred_nucleus_idx")]


class RetrainPolicy(models.Model):
    """When a project retrains by itself. Its schedules live in django-celery-beat (editable in the admin)."""

    MAX_CHECK_EVERY_MINUTES = 7 * 24 * 60    # a week
    MAX_MIN_NEW_REVIEWS = 1_000_000

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="retrain_policy")
    enabled = models.BooleanField(default=True)
    min_new_reviews = models.PositiveIntegerField(null=True, blank=True,
                                                  help_text="retrain when at least this many new reviewed labels exist")
    check_every_minutes = models.PositiveIntegerField(default=15)
    cron = models.CharField(max_length=100, blank=True, help_text="'minute hour day month weekday', e.g. '0 3 * * 0'")
    options = models.JSONField(default=dict, blank=True, help_text="training options for scheduled runs")
    activate_only_if_not_lower = models.BooleanField(default=False, db_default=False, help_text=(
        "a scheduled training's version becomes active only where its macro-F1 is not lower than the active "
        "version's beyond chance on any label set, both scored on the new version's validation nuclei"))
    updated_at = models.DateTimeField(auto_now=True)
