"""The project API: projects, their members and their deletion (a project's datasets: webapp.datasets.api).

A project's detail shows its label sets and datasets and its deletion answers with a job: this module sits
above the apps it shows (its own layer in tests/test_layering_imports.py), as the project's pages do.
"""

from django.db.models import Prefetch
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response

from webapp.core.parsers import JSONParser
from webapp.core.policy import project_role
from webapp.core.query_params import PAGE_PARAMETERS, KnownQueryParameters
from webapp.core.viewsets import ActionSerializers
from webapp.datasets.models import LabelSet
from webapp.datasets.serializers import DatasetSerializer, LabelSetSerializer
from webapp.jobs.serializers import JobAcceptedSerializer, job_accepted

from . import activity as project_activity
from . import operations
from .access import get_project_for, visible_projects
from .deletion import do_request_project_deletion
from .models import Membership
from .serializers import (ActivitySerializer, AddMemberSerializer, MemberRoleSerializer, MembershipSerializer,
                          ProjectEditSerializer, ProjectSerializer)


# A project with its label sets and datasets (GET /api/projects/<id>/); no docstring: it would become the
# schema component's description.
class ProjectDetailSerializer(ProjectSerializer):
    label_sets = LabelSetSerializer(many=True, read_only=True)
    datasets = DatasetSerializer(many=True, read_only=True)

    class Meta(ProjectSerializer.Meta):
        fields = ProjectSerializer.Meta.fields + ["label_sets", "datasets"]


ACTIVITY_KIND = OpenApiParameter(
    "kind", str, enum=["all", *project_activity.KINDS],
    description="none: every change; a kind: its changes only; all: routine rows (claims, kept checkpoints) too")


class ProjectViewSet(KnownQueryParameters, ActionSerializers, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Projects the user is a member of; creating one makes its creator the admin, who may delete it."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_value_regex = r"[0-9]+"  # anything else is no project: 404, not a failed integer lookup

    def get_queryset(self):
        return visible_projects(self.request.user).prefetch_related(
            "memberships", Prefetch("label_sets", LabelSet.objects.prefetch_related("classes")),
            "datasets__label_set", "datasets__uploaded_by")

    # What each action reads or shows: OPTIONS and the browsable API's forms describe the body a route takes.
    serializer_class = ProjectSerializer
    action_serializers = {"retrieve": ProjectDetailSerializer, "partial_update": ProjectEditSerializer,
                          "members": AddMemberSerializer, "member": MemberRoleSerializer,
                          "activity": ActivitySerializer}

    # What each GET reads; any other parameter is a 400 (a project, its members: none).
    action_query_parameters = {"list": PAGE_PARAMETERS, "activity": [ACTIVITY_KIND, *PAGE_PARAMETERS]}

    def get_object(self):
        return get_project_for(self.request.user, self.kwargs["pk"], project_role(self.request))

    def get_success_headers(self, data):
        # The 201's Location: DRF's own reads a ``url`` field, which a project's answer has none of.
        return {"Location": self.request.build_absolute_uri(reverse("api-project-detail", args=[data["id"]]))}

    def perform_create(self, serializer):
        serializer.instance = operations.do_create_project(
            serializer.validated_data["name"], actor=self.request.user,
            description=serializer.validated_data.get("description", ""))

    @extend_schema(request=ProjectEditSerializer, responses=ProjectDetailSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Rename the project or change its description (admins); fields left out stay as they are. 400
        naming the field for an empty name or the name of another project you are in."""
        project = get_project_for(request.user, kwargs["pk"], project_role(request))
        payload = ProjectEditSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        operations.do_edit_project(project, actor=request.user, **payload.validated_data)
        edited = self.get_queryset().get(pk=project.pk)   # with the detail's label sets and datasets
        return Response(ProjectDetailSerializer(edited, context=self.get_serializer_context()).data)

    @extend_schema(methods=["GET"], responses=MembershipSerializer(many=True))
    @extend_schema(methods=["POST"], request=AddMemberSerializer,
                   responses={201: MembershipSerializer(many=True), 200: MembershipSerializer(many=True)})
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def members(self, request, pk=None):
        """GET lists members; POST (admins) adds one, by username or e-mail address (201), or changes the role of
        a member (200); both answer the members. 409 when that would leave the project without an admin."""
        project = get_project_for(request.user, pk, project_role(request))
        if request.method in SAFE_METHODS:
            return Response(self._member_list(project))
        payload = AddMemberSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        membership = operations.do_set_membership(project, payload.validated_data["username"],
                                                  payload.validated_data["role"], actor=request.user)
        if not membership.added:
            return Response(self._member_list(project))
        # Where the new membership is changed (PATCH) or ended (DELETE).
        location = request.build_absolute_uri(reverse("api-project-member", args=[project.pk, membership.user_id]))
        return Response(self._member_list(project), status=status.HTTP_201_CREATED, headers={"Location": location})

    @extend_schema(responses=ActivitySerializer(many=True), parameters=[ACTIVITY_KIND])
    @action(detail=True, methods=["get"])
    def activity(self, request, pk=None):
        """Who did what in the project, newest first, in pages (members): renames, roles, imports,
        trainings, model versions, labels. Details hold only what every member may read."""
        project = get_project_for(request.user, pk, project_role(request))
        rows = project_activity.activity_rows(project, request.query_params.get("kind"))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(ActivitySerializer(page, many=True).data)

    @extend_schema(methods=["PATCH"], request=MemberRoleSerializer, responses=MembershipSerializer(many=True))
    @extend_schema(methods=["DELETE"], request=None, responses={200: MembershipSerializer(many=True)})
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<user_id>[0-9]+)", url_name="member",
            pagination_class=None)
    def member(self, request, pk=None, user_id=None):
        """PATCH changes a member's role, DELETE removes them (admins); both answer the members left.
        404 for someone who is not a member, 409 for the project's last admin."""
        project = get_project_for(request.user, pk, project_role(request))
        # Looked up among the project's members only: an answer naming any account by its id would list every
        # username of the site to whoever creates a project of their own.
        membership = Membership.objects.filter(project=project, user_id=int(user_id)).select_related("user").first()
        if membership is None:
            raise NotFound(f"This project has no member with the id {user_id}.", code="not_a_member")
        member = membership.user
        if request.method == "PATCH":
            payload = MemberRoleSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            operations.do_change_member_role(project, member, payload.validated_data["role"], actor=request.user)
        else:
            operations.do_remove_member(project, member, actor=request.user)
        return Response(self._member_list(project))

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def leave(self, request, pk=None):
        """Leave the project yourself (any member): 204, and from then on 404 for everything in it, as for a
        removed member. 409 for its last admin, who makes another member an admin first."""
        project = get_project_for(request.user, pk, project_role(request))
        operations.do_leave_project(project, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _member_list(project) -> list:
        members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
        return MembershipSerializer(members, many=True).data

    @extend_schema(request=None, responses={202: JobAcceptedSerializer})
    def destroy(self, request, *args, **kwargs):
        """Delete the project with everything in it (admins): 202 with the deletion job. 409 while any job
        of the project is queued or running."""
        project = get_project_for(request.user, kwargs["pk"], project_role(request))
        return job_accepted(do_request_project_deletion(project, actor=request.user), request)


