"""API of whole-slide images: registering one (202 + import job), classifying its nuclei (202 + job) and
its exports (QuPath GeoJSON and the merged CSV of its nuclei, streamed). Thin views over
:mod:`webapp.datasets.slide_import`, :mod:`webapp.training.operations` and :mod:`webapp.datasets.export`."""

from __future__ import annotations

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.core.policy import project_role
from webapp.jobs.serializers import JobAcceptedSerializer, JobSerializer
from webapp.projects.access import get_project_for

from . import export, queries
from .importing import ImportRejected
from .models import Image
from .slide_import import do_register_slide
from .viewer_api import DETECTION_PARAMETERS, FileAPIView, _attachment, _detections_response


class SlideRegisterSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="the new dataset's name")
    path = serializers.CharField(required=False, allow_blank=True, max_length=1024,
                                 help_text="the slide's path relative to SLIDES_ROOT (or upload `slide`)")
    slide = serializers.FileField(required=False, help_text="the slide file (or give `path`)")
    detections_path = serializers.CharField(required=False, allow_blank=True, max_length=1024,
                                            help_text="its QuPath GeoJSON detections, relative to SLIDES_ROOT")
    detections = serializers.FileField(required=False, help_text="its QuPath GeoJSON detections (or give "
                                                                 "`detections_path`)")
    label_set = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                      help_text="label set of the detections' classes (joined when it exists)")
    provenance = serializers.CharField(required=False, allow_blank=True, max_length=2000)


def _accepted(job, request) -> Response:
    data = JobSerializer(job, context={"request": request}).data
    return Response({"id": job.pk, "url": data["url"], "job": data}, status=status.HTTP_202_ACCEPTED)


def _slide_of(project, image_id: int) -> Image:
    image = Image.objects.select_related("dataset", "dataset__label_set").filter(pk=image_id, project=project).first()
    if image is None:
        raise Http404("No such image in this project.")
    if not image.is_slide:
        raise ValidationError({"image": f"{image.name!r} is a tile, not a whole-slide image: use the image's "
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
        try:
            job = do_register_slide(project, actor=request.user, name=data["name"],
                                    label_set=data.get("label_set", ""), path=data.get("path", ""),
                                    detections_path=data.get("detections_path", ""),
                                    slide_upload=data.get("slide"), detections_upload=data.get("detections"),
                                    provenance=data.get("provenance", ""))
        except ImportRejected as exc:
            field, _, problem = str(exc).partition(": ")
            raise ValidationError({field: problem} if problem else str(exc)) from None
        return _accepted(job, request)


class SlideInferView(APIView):
    """Classify every nucleus of a slide with the active model (curators): 202 with the job, which stores
    one prediction per nucleus and label set, as the project's prediction job does."""

    @extend_schema(operation_id="slide_infer", tags=["slides"], request=None, responses={202: JobAcceptedSerializer})
    def post(self, request, project_id: int, image_id: int):
        from webapp.training import operations as training

        project = get_project_for(request.user, project_id, project_role(request))
        image = _slide_of(project, image_id)
        version = training.active_version(project)
        if version is None:
            raise ValidationError({"model": "the project has no trained model yet: train one first"})
        return _accepted(training.do_start_slide_prediction(version, image, actor=request.user), request)


class SlideGeoJsonView(FileAPIView):
    """The nuclei of one slide as QuPath detections (streamed FeatureCollection), classified in a label set
    from a source (ground truth, latest review, prediction, current); QuPath imports it into the slide."""

    @extend_schema(operation_id="slide_export_geojson", tags=["slides", "exports"], parameters=DETECTION_PARAMETERS,
                   responses={(200, "application/geo+json"): {"type": "object"}})
    def get(self, request, project_id: int, image_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        image = _slide_of(project, image_id)
        label_set = queries.get_label_set(project, request.query_params.get("label_set"), image.dataset.label_set)
        if label_set is None:
            label_set = project.label_sets.order_by("id").first()
        return _detections_response(project, label_set, request, None, image.name, image)


class SlideCsvView(FileAPIView):
    """The merged table (CSV) of one slide's nuclei: ground truth, review and prediction per label set."""

    @extend_schema(operation_id="slide_export_merged_csv", tags=["slides", "exports"],
                   responses={(200, "text/csv"): {"type": "string"}})
    def get(self, request, project_id: int, image_id: int):
        project = get_project_for(request.user, project_id, project_role(request))
        image = _slide_of(project, image_id)
        response = StreamingHttpResponse(export.merged_csv_rows(project, image=image),
                                         content_type="text/csv; charset=utf-8")
        return _attachment(response, f"{image.name}-merged.csv")

