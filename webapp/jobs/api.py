from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from webapp.core.query_params import PAGE_PARAMETERS, KnownQueryParameters
from webapp.core.viewsets import ActionSerializers

from . import operations
from .access import job_for, visible_jobs
from .models import Job
from .serializers import DiagnosticsRequestSerializer, JobSerializer


# The list's filters: a script waiting for its trainings asks for ?kind=train&state=running, not every page.
FILTERS = {"state": Job.State.values, "kind": Job.Kind.values}


LIST_PARAMETERS = [
    # Comma-separated (state=queued,running), as the README writes it; repeating the parameter works too.
    OpenApiParameter("state", str, enum=Job.State.values, many=True, explode=False,
                     description="only jobs in these states, comma-separated (or the parameter repeated)"),
    OpenApiParameter("kind", str, enum=Job.Kind.values, many=True, explode=False,
                     description="only jobs of these kinds, comma-separated (or the parameter repeated)"),
    OpenApiParameter("project", int, description="only the jobs of this project"),
]


@extend_schema_view(list=extend_schema(parameters=LIST_PARAMETERS))
class JobViewSet(KnownQueryParameters, ActionSerializers, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                 viewsets.GenericViewSet):
    """Background jobs: state, progress and, on failure, the error. Access follows the job's project
    (:mod:`webapp.jobs.access`); starting diagnostics is for staff (:mod:`webapp.core.policy`)."""

    action_query_parameters = {"list": [*LIST_PARAMETERS, *PAGE_PARAMETERS]}   # a job itself reads none

    serializer_class = JobSerializer
    action_serializers = {"create": DiagnosticsRequestSerializer, "cancel": serializers.Serializer}  # cancel: no body
    queryset = Job.objects.none()  # the model, for the schema's path types; get_queryset decides what is seen

    def get_queryset(self):
        jobs = visible_jobs(self.request.user)
        if self.action != "list":
            return jobs
        query = self.request.query_params
        for field, allowed in FILTERS.items():
            wanted = [value for values in query.getlist(field) for value in values.split(",") if value]
            unknown = sorted(set(wanted) - set(allowed))
            if unknown:
                raise ValidationError({field: f"no such {field} {unknown}; one of {allowed}"})
            if wanted:
                jobs = jobs.filter(**{f"{field}__in": wanted})
        if "project" in query:
            if not query["project"].isdigit():
                raise ValidationError({"project": f"a project id is a number, got {query['project']!r}"})
            jobs = jobs.filter(project_id=int(query["project"]))
        return jobs

    def get_object(self):
        return job_for(self.request.user, self.kwargs["pk"])

    @extend_schema(request=DiagnosticsRequestSerializer, responses={202: JobSerializer})
    def create(self, request, *args, **kwargs):
        params = DiagnosticsRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = operations.do_enqueue_job(params.validated_data["kind"], actor=request.user)
        data = JobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None, **kwargs):
        job = operations.do_cancel_job(job_for(request.user, pk, cancel=True), actor=request.user)
        return Response(JobSerializer(job, context={"request": request}).data)


__all__ = ["JobViewSet", "visible_jobs"]
