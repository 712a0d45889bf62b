"""API of whole-slide images: registering one (202 + import job), classifying its nuclei (202 + job) and
its exports (QuPath GeoJSON and the merged CSV of its nuclei, streamed). Thin views over
:mod:`webapp.datasets.slide_import`, :mod:`webapp.training.operations` and :mod:`webapp.datasets.export`."""

from __future__ import annotations

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from django.urls import reverse
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from mlcore.types import quoted

from webapp.core.known_fields import KnownFieldsOnly
from webapp.core.parsers import JSONParser
from webapp.core.policy import project_role
from webapp.core.query_params import KnownQueryParameters, yes_no_param
from webapp.jobs.serializers import JobAcceptedSerializer, job_accepted
from webapp.projects.access import get_project_for

from . import export, queries, slide_uploads
from .importing import ImportRejected
from .models import Image
from .slide_import import do_register_slide
from .viewer_api import CSV_BOM, DETECTION_PARAMETERS, FileAPIView, _attachment, _detections_response


class SlideRegisterSerializer(KnownFieldsOnly, serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="the new dataset's name")
    path = serializers.CharField(required=False, allow_blank=True, max_length=1024,
                                 help_text="the slide's path relative to SLIDES_ROOT (or upload `slide`)")
    slide = serializers.FileField(required=False, help_text="the slide file (or give `path`)")
    detections_path = serializers.CharField(required=False, allow_blank=True, max_length=1024,
                                            help_text="its QuPath GeoJSON detections, relative to SLIDES_ROOT")
    detections = serializers.FileField(required=False, help_text="its QuPath GeoJSON detections (or give "
                                                                 "`detections_path`)")
    slide_upload_id = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                            help_text="id of a complete chunked upload of the slide "
                                                      "(POST .../slide-uploads/), instead of `path` or `slide`")
    detections_upload_id = serializers.CharField(required=False, allow_blank=True, max_length=64,
                                                 help_text="id of a complete chunked upload of the detections")
    label_set = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                      help_text="label set of the detections' classes (joined when it exists)")
    provenance = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class SlideUploadStartSerializer(KnownFieldsOnly, serializers.Serializer):
    filename = serializers.CharField(max_length=1024, help_text="the file's name (a slide, or its detections: "
                                                                "GeoJSON or instance-mask TIFF)")
    size = serializers.IntegerField(min_value=1, help_text="the file's size in bytes")


class SlideUploadStateSerializer(serializers.Serializer):
    id = serializers.CharField(required=False)
    url = serializers.CharField(required=False)
    filename = serializers.CharField()
    offset = serializers.IntegerField(help_text="bytes received so far: the next chunk starts here")
    size = serializers.IntegerField()
    complete = serializers.BooleanField()




def slide_of(project, image_id: int) -> Image:
    image = Image.objects.select_related("dataset", "dataset__label_set").filter(pk=image_id, project=project).first()
    if image is None:
        raise Http404("No such image in this project.")
    if not image.is_slide:
        raise ValidationError({"image": f"{quoted(image.name)} is a tile, not a whole-slide image: use the image's "
                                        "own exports, or the project's prediction job"})
    return image


class SlideRegisterView(APIView):
    """Register a whole-slide image with its QuPath detections as a new dataset (curators): 202 with the
    import job. The slide is a ``path`` under SLIDES_ROOT or an uploaded ``slide``; the detections a
    ``detections_path`` there or an uploaded ``detections`` file."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(operation_id="project_register_slide", tags=["slides"], request=SlideRegisterSerializer,
                   responses={202: JobAcceptedSerializer})
    def post(self, request, project_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        payload = SlideRegisterSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        # A refusal (ImportRejected, Invalid on the user's field) is a 400 (webapp.core.api_errors).
        job = do_register_slide(project, actor=request.user, name=data["name"],
                                label_set=data.get("label_set", ""), path=data.get("path", ""),
                                detections_path=data.get("detections_path", ""),
                                slide_upload=data.get("slide"), detections_upload=data.get("detections"),
                                slide_upload_id=data.get("slide_upload_id", ""),
                                detections_upload_id=data.get("detections_upload_id", ""),
                                provenance=data.get("provenance", ""))
        return job_accepted(job, request)


def _upload_state(upload, request) -> dict:
    url = reverse("api-slide-upload", kwargs={"project_id": upload.project_id, "upload_id": upload.id})
    return {**upload.state(), "url": request.build_absolute_uri(url)}


class SlideUploadStartView(APIView):
    """Start a resumable upload of a slide or its detections (curators): 201 with its ``url``, to which the
    file goes in chunks (``PUT``, at most 64 MiB each). Uploads untouched for a day are removed."""

    parser_classes = [JSONParser, FormParser]

    @extend_schema(operation_id="project_slide_upload_start", tags=["slides"], request=SlideUploadStartSerializer,
                   responses={201: SlideUploadStateSerializer})
    def post(self, request, project_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        payload = SlideUploadStartSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        upload = slide_uploads.do_start_slide_upload(project, actor=request.user,
                                                     filename=payload.validated_data["filename"],
                                                     size=payload.validated_data["size"])
        state = _upload_state(upload, request)
        return Response(state, status=status.HTTP_201_CREATED, headers={"Location": state["url"]})


class RawBody(BaseParser):
    """Declares that PUT takes raw bytes; the view reads the request itself, a block at a time, so that a
    chunk never sits whole in memory (``request.data`` is never touched)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise ParseError("read the raw body from the request instead")


class SlideUploadView(KnownQueryParameters, APIView):
    """One resumable upload (only its own user's): ``GET`` how far it got, ``PUT`` the next chunk as raw
    bytes with ``Content-Range: bytes START-END/TOTAL`` (appended only when START is the bytes received so
    far, else 409 with the ``offset`` to resume from), ``DELETE`` to drop it. Its GET reads no query parameter."""

    parser_classes = [RawBody]

    @extend_schema(operation_id="project_slide_upload_state", tags=["slides"],
                   responses={200: SlideUploadStateSerializer})
    def get(self, request, project_id: int, upload_id: str):
        project = get_project_for(request.user, project_id, project_role(request))
        return Response(_upload_state(slide_uploads.get_upload(project, request.user, upload_id), request))

    @extend_schema(operation_id="project_slide_upload_chunk", tags=["slides"],
                   request={"application/octet-stream": {"type": "string", "format": "binary"}},
                   responses={200: SlideUploadStateSerializer})
    def put(self, request, project_id: int, upload_id: str):
        project = get_project_for(request.user, project_id, project_role(request))
        upload = slide_uploads.get_upload(project, request.user, upload_id)
        try:
            start, length = slide_uploads.parse_content_range(request.headers.get("Content-Range"), upload)
            declared = request.META.get("CONTENT_LENGTH")
            if declared not in (None, "") and declared != str(length):
                raise ImportRejected(f"the chunk of {upload.filename!r} is {declared} bytes long, "
                                     f"not the {length} its Content-Range announces", field="Content-Range")
            state = slide_uploads.append_chunk(upload, start, length, request._request)
        except slide_uploads.UploadConflict as exc:
            return Response({"detail": exc.detail, "offset": exc.offset, "size": upload.size, "complete": False},
                            status=status.HTTP_409_CONFLICT)
        return Response(_upload_state(upload, request) | {k: state[k] for k in ("offset", "complete")})

    @extend_schema(operation_id="project_slide_upload_delete", tags=["slides"], responses={204: None})
    def delete(self, request, project_id: int, upload_id: str):
        project = get_project_for(request.user, project_id, project_role(request))
        upload = slide_uploads.get_upload(project, request.user, upload_id)
        slide_uploads.do_delete_slide_upload(upload, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SlideGeoJsonView(FileAPIView):
    """The nuclei of one slide as QuPath detections (streamed FeatureCollection), classified in a label set
    from a source (ground truth, latest review, prediction, current); QuPath imports it into the slide."""

    query_parameters = DETECTION_PARAMETERS

    @extend_schema(operation_id="slide_export_geojson", tags=["slides", "exports"], parameters=query_parameters,
                   responses={(200, "application/geo+json"): {"type": "object"}})
    def get(self, request, project_id: int, image_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        image = slide_of(project, image_id)
        label_set = queries.get_label_set(project, request.query_params.get("label_set"), image.dataset.label_set)
        if label_set is None:
            label_set = project.label_sets.order_by("id").first()
        return _detections_response(project, label_set, request, None, image.name, image)


class SlideCsvView(FileAPIView):
    """The merged table (CSV) of one slide's nuclei: ground truth, review and prediction per label set."""

    query_parameters = [CSV_BOM]

    @extend_schema(operation_id="slide_export_merged_csv", tags=["slides", "exports"], parameters=query_parameters,
                   responses={(200, "text/csv"): {"type": "string"}})
    def get(self, request, project_id: int, image_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        image = slide_of(project, image_id)
        response = StreamingHttpResponse(export.merged_csv_rows(project, image=image,
                                                                 bom=yes_no_param(request.query_params, "bom")),
                                         content_type="text/csv; charset=utf-8")
        return _attachment(response, f"{image.name}-merged.csv")

