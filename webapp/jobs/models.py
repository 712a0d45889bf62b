from django.conf import settings
from django.db import models

from mlcore.types import quoted


class Job(models.Model):
    """The record of one background task. This row, not Redis, is the source of truth."""

    class Kind(models.TextChoices):
        DIAGNOSTICS = "diagnostics", "Worker diagnostics"
        IMPORT = "import", "Dataset import"
        TRAIN = "train", "Training"
        PREDICT = "predict", "Project prediction"
        INFER = "infer", "Image inference"
        EXPORT = "export", "Export"
        DELETE = "delete", "Deletion"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
    # Kinds that need the accelerator-bearing workers (docker-compose runs them apart).
    GPU_KINDS = (Kind.TRAIN, Kind.PREDICT, Kind.INFER)
    # Parameters that name storage on the server (where an upload was staged, where an inference writes, a
    # registered slide's place under SLIDES_ROOT): the workers' business, of no use to whoever reads the job,
    # and not every member's to know (the project's activity hides them too).
    INTERNAL_PARAMETERS = frozenset({"staging", "folder", "slide_path", "detections_path"})

    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="jobs")
    project = models.ForeignKey("projects.Project", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="jobs")
    params = models.JSONField(default=dict, blank=True)
    # {"stage": ..., "epoch": ..., "epochs": ..., "percent": 0-100, "eta_s": ..., "loss": ..., "message": ...}
    progress = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kind", "state"])]

    def __str__(self):
        return f"job {self.pk} ({self.kind}, {self.state})"

    @property
    def finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def described(self) -> str:
        """What the job does, in a sentence's words: "a training", "the classification of slide 'case 1'"."""
        params = self.params or {}
        if self.kind == self.Kind.PREDICT and params.get("image_name"):
            return f"the classification of slide {quoted(params['image_name'])}"
        if self.kind == self.Kind.DELETE and params.get("target") == "dataset" and params.get("name"):
            return f"the deletion of dataset {quoted(params['name'])}"
        if self.kind == self.Kind.DELETE and params.get("target") == "project":
            return "the deletion of the project"
        return f"a {self.get_kind_display().lower()}"

    @property
    def queued_by_job(self) -> int | None:
        """The job that queued this one by itself (a training, its version's predictions), where no person did."""
        started_by = (self.params or {}).get("started_by_job")
        return int(started_by) if isinstance(started_by, int) else None

    @property
    def queued_by_words(self) -> str:
        """"training job 12": the job that queued this one, as the job cards say who started a job."""
        reason = (self.params or {}).get("reason")
        return f"{reason} job {self.queued_by_job}" if reason else f"job {self.queued_by_job}"

    @property
    def shown_params(self) -> dict:
        """What the job was asked to do, as its page and the API show it: an inference's image and mask by the
        names they were uploaded with (``uploaded``), not those the server stores them under ("my_tile_mask.npy"
        read "my_tile-mask.npy")."""
        shown = {key: value for key, value in self.params.items() if key not in self.INTERNAL_PARAMETERS}
        uploaded = shown.pop("uploaded", None)
        if isinstance(uploaded, dict):
            shown.update({field: name for field, name in uploaded.items() if field in shown})
        return shown

    @property
    def shown_result(self) -> dict:
        """The job's result as its page and the API show it: the files it wrote by their names (what the files
        route takes, not their storage keys), a resumable training's point without its checkpoint's key."""
        result = dict(self.result or {})
        if isinstance(result.get("files"), list):
            result["files"] = [str(name).rsplit("/", 1)[-1] for name in result["files"]]
        if isinstance(result.get("resume"), dict):
            result["resume"] = {k: v for k, v in result["resume"].items() if k != "checkpoint"}
        return result

    @property
    def queue(self) -> str:
        return "gpu" if self.kind in self.GPU_KINDS else "default"
