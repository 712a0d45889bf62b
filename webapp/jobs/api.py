from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import operations
from .access import job_for, visible_jobs
from .models import Job
from .serializers import DiagnosticsRequestSerializer, JobSerializer


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Background jobs: state, progress and, on failure, the error. Access follows the job's project
    (:mod:`webapp.jobs.access`); starting diagnostics is for staff (:mod:`webapp.core.policy`)."""

    serializer_class = JobSerializer
    queryset = Job.objects.none()  # the model, for the schema's path types; get_queryset decides what is seen

    def get_queryset(self):
        return visible_jobs(self.request.user)

    def get_object(self):
        return job_for(self.request.user, self.kwargs["pk"])

    @extend_schema(request=DiagnosticsRequestSerializer, responses={202: JobSerializer})
    def create(self, request, *args, **kwargs):
        params = DiagnosticsRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = operations.do_enqueue_job(params.validated_data["kind"], actor=request.user)
        return Response(JobSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None, **kwargs):
        job = operations.do_cancel_job(job_for(request.user, pk, cancel=True), actor=request.user)
        return Response(JobSerializer(job, context={"request": request}).data)


__all__ = ["JobViewSet", "visible_jobs"]
