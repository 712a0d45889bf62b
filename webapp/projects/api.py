from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from webapp.core.policy import project_role
from webapp.datasets import uploads
from webapp.datasets.models import LabelSet
from webapp.jobs.serializers import JobAcceptedSerializer, JobSerializer

from . import operations
from .access import get_project_for, visible_projects
from .models import Membership
from .serializers import (DatasetSerializer, DatasetUploadSerializer, MembershipSerializer,
                          ProjectDetailSerializer, ProjectSerializer)


class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     viewsets.GenericViewSet):
    """Projects the user is a member of; creating one makes its creator the admin."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_value_regex = r"[0-9]+"  # anything else is no project: 404, not a failed integer lookup

    def get_queryset(self):
        return visible_projects(self.request.user).prefetch_related(
            "memberships", Prefetch("label_sets", LabelSet.objects.prefetch_related("classes")),
            "datasets__label_set", "datasets__uploaded_by")

    def get_serializer_class(self):
        return ProjectDetailSerializer if self.action == "retrieve" else ProjectSerializer

    def get_object(self):
        return get_project_for(self.request.user, self.kwargs["pk"], project_role(self.request))

    def perform_create(self, serializer):
        serializer.instance = operations.do_create_project(
            serializer.validated_data["name"], actor=self.request.user,
            description=serializer.validated_data.get("description", ""))

    @extend_schema(methods=["GET"], responses=DatasetSerializer(many=True))
    @extend_schema(methods=["POST"], request=DatasetUploadSerializer, responses={202: JobAcceptedSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def datasets(self, request, pk=None):
        """GET lists the datasets; POST uploads one (curators): 202 with the import job."""
        if request.method == "GET":
            project = get_project_for(request.user, pk, project_role(request))
            return Response(DatasetSerializer(project.datasets.select_related("label_set", "uploaded_by"),
                                              many=True).data)
        project = get_project_for(request.user, pk, project_role(request))
        upload = DatasetUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        job = uploads.do_start_import(project, actor=request.user, **upload.validated_data)
        return Response({"job": JobSerializer(job, context={"request": request}).data, "id": job.pk,
                         "url": JobSerializer(job, context={"request": request}).data["url"]},
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer(many=True))
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def members(self, request, pk=None):
        """GET lists members; POST (admins) adds one or changes their role."""
        if request.method == "GET":
            project = get_project_for(request.user, pk, project_role(request))
        else:
            project = get_project_for(request.user, pk, project_role(request))
            payload = MembershipSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            operations.do_set_membership(project, payload.validated_data["user"], payload.validated_data["role"],
                                         actor=request.user)
        members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
        return Response(MembershipSerializer(members, many=True).data)
