from django.contrib.auth import get_user_model
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from webapp.core.policy import project_role
from webapp.datasets import uploads
from webapp.datasets.models import Dataset, LabelSet
from webapp.datasets.operations import do_request_dataset_deletion
from webapp.jobs.serializers import JobAcceptedSerializer, JobSerializer

from . import operations
from .access import get_project_for, visible_projects
from .models import Membership
from .serializers import (AddMemberSerializer, DatasetSerializer, DatasetUploadSerializer, MemberRoleSerializer,
                          MembershipSerializer, ProjectDetailSerializer, ProjectSerializer)


class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                     viewsets.GenericViewSet):
    """Projects the user is a member of; creating one makes its creator the admin, who may delete it."""

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

    @extend_schema(request=AddMemberSerializer, responses=MembershipSerializer(many=True))
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def members(self, request, pk=None):
        """GET lists members; POST (admins) adds one, by username or e-mail address, or changes their role.
        409 when that would leave the project without an admin."""
        project = get_project_for(request.user, pk, project_role(request))
        if request.method == "POST":
            payload = AddMemberSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            operations.do_set_membership(project, payload.validated_data["username"], payload.validated_data["role"],
                                         actor=request.user)
        return Response(self._member_list(project))

    @extend_schema(methods=["PATCH"], request=MemberRoleSerializer, responses=MembershipSerializer(many=True))
    @extend_schema(methods=["DELETE"], request=None, responses=MembershipSerializer(many=True))
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<user_id>[0-9]+)", url_name="member",
            pagination_class=None)
    def member(self, request, pk=None, user_id=None):
        """PATCH changes a member's role, DELETE removes them (admins); both answer the members left.
        404 for someone who is not a member, 409 for the project's last admin."""
        project = get_project_for(request.user, pk, project_role(request))
        member = get_user_model().objects.filter(pk=int(user_id)).first()
        if member is None:
            raise NotFound(f"No account has the id {user_id}.")
        if request.method == "PATCH":
            payload = MemberRoleSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            operations.do_change_member_role(project, member, payload.validated_data["role"], actor=request.user)
        else:
            operations.do_remove_member(project, member, actor=request.user)
        return Response(self._member_list(project))

    @staticmethod
    def _member_list(project) -> list:
        members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
        return MembershipSerializer(members, many=True).data

    @extend_schema(request=None, responses={202: JobAcceptedSerializer})
    def destroy(self, request, *args, **kwargs):
        """Delete the project with everything in it (admins): 202 with the deletion job. 409 while any job
        of the project is queued or running."""
        project = get_project_for(request.user, kwargs["pk"], project_role(request))
        return _accepted(operations.do_request_project_deletion(project, actor=request.user), request)

    @extend_schema(request=None, responses={202: JobAcceptedSerializer})
    @action(detail=True, methods=["delete"], url_path=r"datasets/(?P<dataset_id>[0-9]+)", url_name="dataset")
    def dataset(self, request, pk=None, dataset_id=None):
        """Delete a dataset with its images, nuclei, labels and files (curators): 202 with the deletion job.
        409 while an import, training, prediction or export of the project is queued or running."""
        project = get_project_for(request.user, pk, project_role(request))
        dataset = Dataset.objects.filter(pk=int(dataset_id), project=project).first()
        if dataset is None:
            raise NotFound("No such dataset in this project.")
        return _accepted(do_request_dataset_deletion(dataset, actor=request.user), request)


def _accepted(job, request) -> Response:
    data = JobSerializer(job, context={"request": request}).data
    return Response({"id": job.pk, "url": data["url"], "job": data}, status=status.HTTP_202_ACCEPTED)
