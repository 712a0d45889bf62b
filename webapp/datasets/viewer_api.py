"""API behind the pages: an image's nuclei for the viewer, and the exports (thin views).

DRF views, so scripts authenticate with a token and the browser with its session; errors are JSON
with a ``detail``. Non-members of the project get 404 everywhere.
"""

from __future__ import annotations

import json
import tempfile

from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.views import APIView

from mlcore.examples import write_example_zip
from mlcore.readers import FORMATS
from mlcore.types import quoted

from webapp.core.filenames import safe_file_name
from webapp.core.policy import project_role
from webapp.core.query_params import KnownQueryParameters, yes_no_param
from webapp.projects.access import get_project_for

from . import export, queries
from .models import Image


class AnyFileRenderer(BaseRenderer):
    """Lets a client ask for text/csv, application/geo+json... and still get a JSON error if it fails."""

    media_type = "*/*"
    format = "file"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, (bytes, str)):
            return data
        if renderer_context and renderer_context.get("response") is not None:
            renderer_context["response"]["Content-Type"] = "application/json"  # not "*/*": it is an error body
        return json.dumps(data).encode()


class FileAPIView(KnownQueryParameters, APIView):
    renderer_classes = [JSONRenderer, AnyFileRenderer]
    # The query parameters the export reads (its schema's too): any other is refused, as a misspelt
    # ``sources=prediction`` exported the current labels under a name that looked right.
    query_parameters: list[OpenApiParameter] = []
    sent_by_a_page_form: tuple[str, ...] = ()  # read by another export of the same form, ignored here

    def known_query_parameters(self) -> list[str]:
        return [*super().known_query_parameters(), *self.sent_by_a_page_form]


LABEL_SET = OpenApiParameter("label_set", str, description="label set name (default: the dataset's)")
SOURCE = OpenApiParameter("source", str, enum=["current", "ground_truth", "review", "prediction"],
                          description="which labels: current (latest of any source, default), "
                                      "ground_truth, review (latest review), prediction")


def _source(request) -> str:
    source = request.query_params.get("source") or "current"
    if source not in queries.SOURCES:
        raise ValidationError({"source": f"must be one of {', '.join(queries.SOURCES)}, got {source!r}"})
    return source


_safe_name = safe_file_name


def _attachment(response, filename: str):
    response["Content-Disposition"] = content_disposition_header(True, _safe_name(filename))
    return response


class ImageNucleiView(KnownQueryParameters, APIView):
    """Every nucleus of an image with its outline and its labels in every label set of the project.

    With a box (``x0``, ``y0``, ``x1``, ``y1``, level-0 pixels), and always for a whole-slide image: the
    nuclei meeting the box, at most ``limit`` (5,000) with ``truncated``, each with its class from
    ``source`` in every label set (or ``label_set``) and its labels for the hover (the slide viewer)."""

    query_parameters = [*(OpenApiParameter(name, int, description="level-0 box (x1, y1 exclusive)")
                          for name in ("x0", "y0", "x1", "y1")),
                        OpenApiParameter("limit", int, description="at most this many nuclei (1-5000)"), LABEL_SET,
                        SOURCE]

    @extend_schema(operation_id="image_nuclei", tags=["images"], responses={200: OpenApiTypes.OBJECT},
                   parameters=query_parameters)
    def get(self, request, image_id: int):
        project, image = queries.get_image_for(request.user, image_id)
        if image.is_slide or any(request.query_params.get(name) for name in ("x0", "y0", "x1", "y1")):
            from .slide_view_api import region_response

            return region_response(request, project, image)
        content = queries.image_nuclei_json(project, image, reverse("image-file", args=[image.pk, "image"]))
        return HttpResponse(content, content_type="application/json")


# The project page's links ask for it: Excel reads a CSV without it in the computer's old code page (é as Ã©).
CSV_BOM = OpenApiParameter("bom", bool, description="start with a UTF-8 byte order mark, for Excel (default: no; "
                                                    "Python's csv module would read it into the first column's name)")


class MergedCsvView(FileAPIView):
    """The merged project table: one row per nucleus, ground truth / review / prediction per label set."""

    query_parameters = [CSV_BOM]

    @extend_schema(operation_id="project_export_merged_csv", tags=["exports"], parameters=query_parameters,
                   responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, project_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        rows = export.merged_csv_rows(project, bom=yes_no_param(request.query_params, "bom"))
        response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
        return _attachment(response, f"{project.name}-merged.csv")


class ImageGeoJsonView(FileAPIView):
    """The nuclei of an image as QuPath GeoJSON (classification name and colour)."""

    query_parameters = [LABEL_SET, SOURCE, OpenApiParameter("object_type", str, enum=["annotation", "detection"])]

    @extend_schema(operation_id="image_export_geojson", tags=["exports"], parameters=query_parameters,
                   responses={(200, "application/geo+json"): OpenApiTypes.OBJECT})
    def get(self, request, image_id: int):
        project, image = queries.get_image_for(request.user, image_id)
        label_set = queries.get_label_set(project, request.query_params.get("label_set"), image.dataset.label_set)
        object_type = request.query_params.get("object_type") or "annotation"
        if object_type not in ("annotation", "detection"):
            raise ValidationError({"object_type": "must be annotation or detection"})
        if image.is_slide:  # streamed from the stored outlines: a slide has no mask, and too many nuclei
            return _detections_response(project, label_set or project.label_sets.order_by("id").first(), request,
                                        None, image.name, image, default_object_type=object_type)
        content = export.image_geojson(project, image, label_set, _source(request), object_type)
        response = HttpResponse(json.dumps(content), content_type="application/geo+json")
        suffix = f"-{label_set.name}" if label_set else ""
        return _attachment(response, f"{image.name}{suffix}.geojson")


class ImageTypesNpyView(FileAPIView):
    """The original method's types table for one label set: N x 2 int32 (instance id, class index)."""

    query_parameters = [LABEL_SET, SOURCE]

    @extend_schema(operation_id="image_export_types_npy", tags=["exports"], parameters=query_parameters,
                   responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, image_id: int):
        project, image = queries.get_image_for(request.user, image_id)
        found = queries.get_label_set(project, request.query_params.get("label_set"), image.dataset.label_set)
        if found is None:
            raise ValidationError({"label_set": "this image's dataset is unlabelled: name a label set"})
        response = HttpResponse(export.image_types_npy(image, found, _source(request)),
                                content_type="application/octet-stream")
        return _attachment(response, f"{image.name}-{found.name}.npy")


class DatasetCocoZipView(FileAPIView):
    """A dataset as a COCO zip: annotations.json and the images."""

    query_parameters = [LABEL_SET, SOURCE,
                        OpenApiParameter("segmentation", str, enum=["polygon", "rle", "compressed_rle"])]

    @extend_schema(operation_id="dataset_export_coco_zip", tags=["exports"], parameters=query_parameters,
                   responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, dataset_id: int):
        project, dataset = queries.get_dataset_by_id_for(request.user, dataset_id)
        if dataset.format == "slide":
            raise ValidationError({"dataset": f"{quoted(dataset.name)} is a whole-slide image: COCO holds tiles; export "
                                              "its nuclei as QuPath GeoJSON or the merged CSV instead"})
        label_set = queries.get_label_set(project, request.query_params.get("label_set"), dataset.label_set)
        segmentation = request.query_params.get("segmentation") or "polygon"
        if segmentation not in ("polygon", "rle", "compressed_rle"):
            raise ValidationError({"segmentation": "must be polygon, rle or compressed_rle"})
        # Streamed as it is made, an image at a time (webapp.datasets.export.dataset_coco_zip).
        response = StreamingHttpResponse(export.dataset_coco_zip(dataset, label_set, _source(request), segmentation),
                                         content_type="application/zip")
        # Named for what it holds, as the other exports are: one dataset's exports differ by label set and source.
        parts = [dataset.name, label_set.name if label_set else "", _source(request), "coco"]
        return _attachment(response, "-".join(_safe_name(part) for part in parts if part) + ".zip")


DETECTION_PARAMETERS = [
    OpenApiParameter("label_set", str, description="label set name (default: the dataset's; for a project, "
                                                   "its first label set)"),
    SOURCE,
    OpenApiParameter("object_type", str, enum=["detection", "annotation"],
                     description="QuPath object type (default detection)"),
]


def _object_type(request, default: str) -> str:
    object_type = request.query_params.get("object_type") or default
    if object_type not in ("annotation", "detection"):
        raise ValidationError({"object_type": f"must be annotation or detection, got {object_type!r}"})
    return object_type


def _detections_response(project, label_set, request, dataset=None, filename: str = "", image=None,
                         default_object_type: str = "detection"):
    # Without a label set (unlabelled datasets only) the nuclei go out without classes, for QuPath to show.
    source = _source(request)
    object_type = _object_type(request, default_object_type)
    text = export.detections_geojson_text(project, label_set, source, dataset, object_type, image=image)
    response = StreamingHttpResponse(text, content_type="application/geo+json")
    parts = [filename, label_set.name, source] if label_set is not None else [filename, "nuclei"]
    return _attachment(response, "-".join(parts) + ".geojson")


class DatasetGeoJsonView(FileAPIView):
    """Every nucleus of a dataset as QuPath detections (streamed FeatureCollection): classification from
    the chosen label set and source, the active model's probability and branch disagreement as measurements."""

    query_parameters = [*DETECTION_PARAMETERS,
                        OpenApiParameter("image", str, description="only this image (by name): QuPath imports a "
                                                                   "file into one image")]
    # The dataset page's export form has one set of fields for both buttons, COCO's outline choice among them.
    sent_by_a_page_form = ("segmentation",)

    @extend_schema(operation_id="dataset_export_geojson", tags=["exports"], parameters=query_parameters,
                   responses={(200, "application/geo+json"): OpenApiTypes.OBJECT})
    def get(self, request, dataset_id: int):
        project, dataset = queries.get_dataset_by_id_for(request.user, dataset_id)
        label_set = queries.get_label_set(project, request.query_params.get("label_set"), dataset.label_set)
        if label_set is None:
            label_set = project.label_sets.order_by("id").first()
        image, filename = None, dataset.name
        if image_name := request.query_params.get("image"):
            # QuPath imports objects into the image that is open: one file per image.
            image = Image.objects.filter(dataset=dataset, name=image_name).first()
            if image is None:
                raise Http404(f"No image named {quoted(image_name)} in dataset {quoted(dataset.name)}.")
            filename = f"{dataset.name}-{image.name}"
        return _detections_response(project, label_set, request, dataset, filename, image)


class ProjectGeoJsonView(FileAPIView):
    """Every nucleus of a project as QuPath detections (streamed FeatureCollection); each feature names its
    dataset and image in its properties."""

    query_parameters = DETECTION_PARAMETERS

    @extend_schema(operation_id="project_export_geojson", tags=["exports"], parameters=query_parameters,
                   responses={(200, "application/geo+json"): OpenApiTypes.OBJECT})
    def get(self, request, project_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        label_set = queries.get_label_set(project, request.query_params.get("label_set"),
                                          project.label_sets.order_by("id").first())
        return _detections_response(project, label_set, request, None, project.name)


class FormatExampleView(FileAPIView):
    """A tiny example upload in one dataset format (synthetic tiles, generated on request): a zip that
    imports as it is, to show the layout the format expects."""

    @extend_schema(operation_id="dataset_format_example", tags=["datasets"],
                   responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, dataset_format: str):
        if dataset_format not in FORMATS:
            raise Http404(f"No dataset format {dataset_format!r} (formats: {', '.join(FORMATS)}).")
        spool = tempfile.TemporaryFile()
        write_example_zip(dataset_format, spool)
        spool.seek(0)
        return FileResponse(spool, as_attachment=True, filename=f"example-{dataset_format}.zip",
                            content_type="application/zip")
