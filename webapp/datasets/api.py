"""A project's datasets in the API: listed, uploaded (an import job) and deleted (a deletion job).

Routed beside the project API, under ``/api/projects/<id>/datasets/``, with the project API's URL names
(``api-project-datasets``, ``api-project-dataset``): see :mod:`webapp.datasets.api_urls`.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response

from webapp.core.pagination import PagePagination
from webapp.core.parsers import JSONParser
from webapp.core.policy import project_role
from webapp.core.query_params import PAGE_PARAMETERS, KnownQueryParameters
from webapp.core.viewsets import ActionSerializers
from webapp.jobs.serializers import JobAcceptedSerializer, job_accepted
from webapp.projects.access import get_project_for

from . import uploads
from .models import Dataset
from .operations import do_edit_dataset, do_request_dataset_deletion
from .queries import get_dataset_for
from .serializers import DatasetEditSerializer, DatasetSerializer, DatasetUploadSerializer, ImageSerializer


class ProjectDatasetViewSet(KnownQueryParameters, ActionSerializers, viewsets.GenericViewSet):
    """The datasets of the project named in the URL (its detail routes only: the project API lists,
    shows and creates projects)."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_value_regex = r"[0-9]+"  # anything else is no project: 404, not a failed integer lookup
    # The body each route takes, for OPTIONS and the browsable API's forms (the views name theirs themselves).
    serializer_class = DatasetSerializer
    queryset = Dataset.objects.none()  # the model, for the schema and the browsable API; the routes choose what is seen
    action_serializers = {"datasets": DatasetUploadSerializer, "dataset": DatasetEditSerializer}
    # What each GET reads; any other parameter is a 400 (the datasets, a dataset: none).
    action_query_parameters = {"dataset_images": PAGE_PARAMETERS}

    @extend_schema(methods=["GET"], responses=DatasetSerializer(many=True))
    @extend_schema(methods=["POST"], request=DatasetUploadSerializer, responses={202: JobAcceptedSerializer})
    # An upload is multipart (its archive or files); JSON cannot carry them.
    @action(detail=True, methods=["get", "post"], pagination_class=None, parser_classes=[MultiPartParser, FormParser])
    def datasets(self, request, pk=None):
        """GET lists the datasets; POST uploads one (curators): 202 with the import job."""
        if request.method in SAFE_METHODS:   # GET and HEAD: a HEAD took the upload branch
            project = get_project_for(request.user, pk, project_role(request))
            return Response(DatasetSerializer(project.datasets.select_related("label_set", "uploaded_by"),
                                              many=True).data)
        project = get_project_for(request.user, pk, project_role(request))
        upload = DatasetUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        job = uploads.do_start_import(project, actor=request.user, **upload.validated_data)
        return job_accepted(job, request)

    @extend_schema(methods=["GET"], request=None, responses=DatasetSerializer)
    @extend_schema(methods=["PATCH"], request=DatasetEditSerializer, responses=DatasetSerializer)
    @extend_schema(methods=["DELETE"], request=None, responses={202: JobAcceptedSerializer})
    @action(detail=True, methods=["get", "patch", "delete"], url_path=r"datasets/(?P<dataset_id>[0-9]+)",
            url_name="dataset")
    def dataset(self, request, pk=None, dataset_id=None):
        """GET shows the dataset. PATCH renames it or changes its provenance note (curators; fields left out
        stay): 400 naming the field for a name the project has or is importing. DELETE deletes it with its
        images, nuclei, labels and files (curators): 202 with the deletion job, 409 while an import, training,
        prediction or export of the project is queued or running."""
        dataset = self._dataset(request, pk, dataset_id)
        if request.method in SAFE_METHODS:
            return Response(DatasetSerializer(dataset).data)
        if request.method == "PATCH":
            payload = DatasetEditSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            do_edit_dataset(dataset, actor=request.user, **payload.validated_data)
            return Response(DatasetSerializer(dataset).data)
        job = do_request_dataset_deletion(dataset, actor=request.user)
        return job_accepted(job, request)

    @extend_schema(methods=["GET"], request=None, responses=ImageSerializer(many=True))
    @action(detail=True, methods=["get"], url_path=r"datasets/(?P<dataset_id>[0-9]+)/images",
            url_name="dataset-images", pagination_class=PagePagination)
    def dataset_images(self, request, pk=None, dataset_id=None):
        """The dataset's images by name, in pages: their ids for the per-image exports
        (``/api/images/{id}/export.geojson``) and where to fetch each."""
        dataset = self._dataset(request, pk, dataset_id)
        page = self.paginate_queryset(dataset.images.order_by("name", "pk"))
        return self.get_paginated_response(ImageSerializer(page, many=True, context={"request": request}).data)

    def _dataset(self, request, pk, dataset_id) -> Dataset:
        return get_dataset_for(request.user, pk, int(dataset_id), project_role(request))[1]
