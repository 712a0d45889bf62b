"""The datasets of a project in the API: listed, uploaded (an import job), and shown in a project's detail."""

from pathlib import PurePosixPath

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from mlcore.types import MAX_NAME_LENGTH, name_problem, strip_invisible
from webapp.core.known_fields import KnownFieldsOnly

from .models import Dataset, Image, LabelSet


@extend_schema_serializer(component_name="ProjectLabelSet")  # "LabelSet" is the review API's request body
class LabelSetSerializer(serializers.ModelSerializer):
    classes = serializers.SerializerMethodField()

    class Meta:
        model = LabelSet
        fields = ["id", "name", "classes"]

    def get_classes(self, label_set) -> list[dict]:
        return [{"index": c.index, "name": c.name, "color": c.color} for c in label_set.classes.all()]


class DatasetSerializer(serializers.ModelSerializer):
    label_set = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                             help_text="null for a dataset of masks only (no labels)")
    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "name", "format", "label_set", "provenance", "uploaded_by", "uploaded_at",
                  "image_count", "nucleus_count"]


class ImageSerializer(serializers.ModelSerializer):
    """An image of a dataset as a script needs it: its id for the per-image exports, and where to fetch it."""

    urls = serializers.SerializerMethodField(help_text="absolute: geojson (its nuclei, ?label_set=), types_npy "
                                                       "(?label_set=), viewer (its page, for a person)")

    class Meta:
        model = Image
        fields = ["id", "name", "width", "height", "nucleus_count", "group", "urls"]

    def get_urls(self, image) -> dict[str, str]:
        from django.urls import reverse

        request = self.context["request"]
        return {name: request.build_absolute_uri(reverse(route, args=args)) for name, route, args in (
            ("geojson", "api-image-geojson", [image.pk]),
            ("types_npy", "api-image-types-npy", [image.pk]),
            ("viewer", "image-viewer", [image.project_id, image.pk]))}


class DatasetEditSerializer(KnownFieldsOnly, serializers.Serializer):
    """A dataset's new name and/or provenance note (PATCH): fields left out stay as they are."""

    name = serializers.CharField(required=False, allow_blank=True, help_text="unique in the project")
    provenance = serializers.CharField(required=False, allow_blank=True)


# "auto": the import job tells the format from the layout of the files (mlcore.readers.detect_format).
FORMAT_CHOICES = [("auto", "Detect from the files"),
                  *[(v, label) for v, label in Dataset.Format.choices if v in Dataset.TILE_FORMATS]]


class DatasetUploadSerializer(KnownFieldsOnly, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    format = serializers.ChoiceField(choices=FORMAT_CHOICES, default="auto",
                                     help_text="auto (default): told from the layout of the files")
    label_set = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                      help_text="join this label set (class names must match) or create it")
    labelled = serializers.BooleanField(default=True, help_text="false: masks only, every label set missing")
    provenance = serializers.CharField(required=False, allow_blank=True)
    archive = serializers.FileField(required=False, help_text="a zip holding the dataset as its format lays it out")
    files = serializers.ListField(child=serializers.FileField(), required=False,
                                  help_text="or the files directly; multipart keeps only their names, so give their "
                                            "folders in paths")
    paths = serializers.ListField(child=serializers.CharField(max_length=1000), required=False,
                                  help_text="the path of each file in files, in the same order (e.g. masks/a.npy)")

    def validate_name(self, value: str) -> str:
        return _checked_name(strip_invisible(value), 200)

    def validate_label_set(self, value: str) -> str:
        return _checked_name(value, MAX_NAME_LENGTH) if value else value

    def validate(self, attrs):
        if not attrs.get("archive") and not attrs.get("files"):
            raise serializers.ValidationError({"archive": "upload a zip archive (archive) or the files (files)"})
        if attrs.get("archive") and attrs.get("files"):
            raise serializers.ValidationError({"files": "send a zip archive (archive) or the files (files), not both"})
        if attrs.get("files"):
            attrs["paths"] = _staged_paths(attrs["files"], attrs.get("paths"))
        elif attrs.get("paths"):
            raise serializers.ValidationError({"paths": "paths name the files of files, and none were sent"})
        return attrs


def _checked_name(value: str, max_length: int) -> str:
    if (problem := name_problem(value, max_length)) is not None:
        raise serializers.ValidationError(f"the name {problem}")
    return value


def _staged_paths(files: list, paths: list[str] | None) -> list[str]:
    """Where each uploaded file goes in the dataset folder: its path from ``paths``, else its name (a
    multipart upload keeps only the name: "masks/a.npy" arrives as "a.npy"). Refused, as a 400: an unsafe
    path, two files at one path, or a file where another needs a folder."""
    if paths is not None and len(paths) != len(files):
        raise serializers.ValidationError({"paths": f"{len(paths)} paths for {len(files)} files: give one per file"})
    chosen = []
    for upload, path in zip(files, paths or [f.name for f in files]):
        parts = PurePosixPath(path.replace("\\", "/")).parts
        if not parts or path.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise serializers.ValidationError({"paths" if paths else "files": f"{path}: unsafe path (absolute or '..')"})
        chosen.append("/".join(parts))
    seen: set[str] = set()
    for path in chosen:
        if path in seen:
            hint = "" if paths else " (an upload keeps only file names: give each file's folders in paths, or upload a zip)"
            raise serializers.ValidationError({"files": f"two files would be stored as {path}{hint}"})
        seen.add(path)
    for path in chosen:
        folders = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        clash = next((folder for folder in folders if folder in seen), None)
        if clash is not None:
            raise serializers.ValidationError({"files": f"{clash} is both a file and the folder of {path}"})
    return chosen
