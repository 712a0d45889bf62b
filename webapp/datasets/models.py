"""Label sets, datasets, images, nuclei and the append-only history of their labels."""

from django.conf import settings
from django.db import models

from mlcore.readers import FORMATS
from webapp.projects.models import Project


class LabelSet(models.Model):
    """A taxonomy: ordered class names, each with a colour (the classes are LabelClass rows)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_sets")
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="label_set_name_unique")]

    def __str__(self):
        return self.name

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes.all()]


class LabelClass(models.Model):
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="classes")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7, help_text="#rrggbb")

    class Meta:
        ordering = ["label_set", "index"]
        constraints = [models.UniqueConstraint(fields=["label_set", "index"], name="class_index_unique"),
                       models.UniqueConstraint(fields=["label_set", "name"], name="class_name_unique")]

    def __str__(self):
        return self.name


class Dataset(models.Model):
    class Format(models.TextChoices):
        SEED = "seed", "Seed (png + npy mask + npy types)"
        HOVERNET = "hovernet", "HoVer-Net .mat"
        COCO = "coco", "COCO instances JSON"
        GEOJSON = "geojson", "QuPath GeoJSON"
        PANNUKE = "pannuke", "PanNuke fold arrays"
        SLIDE = "slide", "Whole-slide image + QuPath GeoJSON detections"

    # The formats of a tile upload (one archive or a folder of files); a slide comes in its own way.
    TILE_FORMATS = FORMATS

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    label_set = models.ForeignKey(LabelSet, null=True, blank=True, on_delete=models.PROTECT, related_name="datasets",
                                  help_text="empty for an unlabelled dataset (masks only)")
    format = models.CharField(max_length=16, choices=Format.choices)
    provenance = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)
    storage_dir = models.CharField(max_length=255, help_text="storage name of the folder holding its files")
    image_count = models.PositiveIntegerField(default=0)
    nucleus_count = models.PositiveIntegerField(default=0)
    # db_default: a worker not yet upgraded (another host) creates datasets without the column.
    split_key = models.CharField(max_length=200, blank=True, default="", db_default="", help_text=(
        "what a training draws the dataset's validation split by: empty for its name, the name it had before its "
        "first rename after that, so that a rename does not move nuclei a version trained on into validation"))

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="dataset_name_unique")]

    @property
    def split_name(self) -> str:
        return self.split_key or self.name

    def __str__(self):
        return self.name


class Image(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")  # for the checksum rule
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=255)
    file = models.CharField(max_length=255, help_text="storage name of the image file")
    mask_file = models.CharField(max_length=255, help_text="storage name of the instance mask (16-bit PNG or npy)")
    thumbnail_file = models.CharField(max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    checksum = models.CharField(max_length=64, help_text="sha256 of the decoded RGB pixels")
    group = models.CharField(max_length=255, blank=True, help_text="source tile/slide, for splits")
    nucleus_count = models.PositiveIntegerField(default=0)
    # A whole-slide image (issue 17): ``file`` then holds a preview, and the pixels are read from the slide
    # through mlcore.slides at any level; ``width``/``height`` are level 0's.
    slide_file = models.CharField(max_length=1024, blank=True, default="", db_default="", help_text=(
        "the slide: a path under SLIDES_ROOT (registered) or a storage name (uploaded), see slide_root"))
    slide_root = models.CharField(max_length=16, blank=True, default="", db_default="", choices=[("media", "media storage"),
                                                                       ("slides", "SLIDES_ROOT")])
    mpp = models.FloatField(null=True, blank=True, help_text="microns per level-0 pixel, when recorded")

    @property
    def is_slide(self) -> bool:
        return bool(self.slide_file)

    class Meta:
        ordering = ["dataset", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "checksum"], name="image_once_per_project"),
                       models.UniqueConstraint(fields=["dataset", "name"], name="image_name_unique")]

    def __str__(self):
        return self.name


class Nucleus(models.Model):
    # No index of its own: the unique (image, instance_id) index serves every per-image query.
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="nuclei", db_index=False)
    instance_id = models.PositiveIntegerField()
    x0 = models.IntegerField()
    y0 = models.IntegerField()
    x1 = models.IntegerField()
    y1 = models.IntegerField()
    centroid_x = models.FloatField()
    centroid_y = models.FloatField()
    area = models.PositiveIntegerField()
    outline = models.JSONField(help_text="simplified outer polygon [[x, y], ...] for drawing")

    class Meta:
        ordering = ["image", "instance_id"]
        constraints = [models.UniqueConstraint(fields=["image", "instance_id"], name="instance_once_per_image")]
        # The nuclei in a viewport of a slide of 10^5-10^6 nuclei: a range on y0, then x0, within one image.
        indexes = [models.Index(fields=["image", "y0", "x0"], name="nucleus_region")]

    def __str__(self):
        return f"nucleus {self.instance_id} of {self.image_id}"


class LabelSource(models.TextChoices):
    GROUND_TRUTH = "ground_truth", "Ground truth"
    REVIEW = "review", "Review"
    PSEUDO = "pseudo", "Pseudo label"


class Label(models.Model):
    """Append-only: a change of class adds a row; nothing is updated in place or deleted by a review."""

    # Indexed by label_history_idx (nucleus, label_set, -id) and label_source_time_idx (label_set, ...):
    # single-column indexes would only slow the inserts of an import.
    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="labels", db_index=False)
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+", db_index=False)
    class_index = models.PositiveSmallIntegerField()
    source = models.CharField(max_length=16, choices=LabelSource.choices)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    model_version_id = models.BigIntegerField(null=True, blank=True,
                                              help_text="the model version whose prediction this label came from")
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 db_index=False,  # label_previous_idx: only the rows that have one
                                 help_text="the label this one replaced (from what to what)")
    client_id = models.CharField(max_length=64, blank=True, help_text="idempotency key of the request")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["nucleus", "label_set", "-id"], name="label_history_idx"),
                   models.Index(fields=["label_set", "source", "created_at"], name="label_source_time_idx"),
                   # Found by deletes (SET_NULL); ground truth has no previous label, so no entry.
                   models.Index(fields=["previous"], name="label_previous_idx", condition=models.Q(previous__isnull=False))]
        # An idempotency key is the author's own: another user's key neither answers for theirs nor blocks it.
        constraints = [models.UniqueConstraint(fields=["author", "client_id"], condition=~models.Q(client_id=""),
                                               name="label_client_id_unique_per_author")]


class CurrentLabel(models.Model):
    """The latest Label of a nucleus in a label set, kept in step with the history for fast queries."""

    # Indexed by one_current_label (nucleus, label_set) and current_by_class_idx (label_set, ...).
    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="current_labels", db_index=False)
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+", db_index=False)
    label = models.OneToOneField(Label, on_delete=models.CASCADE, related_name="+")
    class_index = models.PositiveSmallIntegerField()
    source = models.CharField(max_length=16, choices=LabelSource.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["nucleus", "label_set"], name="one_current_label")]
        indexes = [models.Index(fields=["label_set", "class_index"], name="current_by_class_idx"),
                   models.Index(fields=["label_set", "source"], name="current_by_source_idx")]
