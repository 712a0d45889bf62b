from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import operations
from .models import Job
from .serializers import DiagnosticsRequestSerializer, JobSerializer


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Background jobs: state, progress and, on failure, the error."""

    serializer_class = JobSerializer
    queryset = Job.objects.none()  # the model, for the schema's path types; get_queryset decides what is seen

    def get_queryset(self):
        return visible_jobs(self.request.user)

    @extend_schema(request=DiagnosticsRequestSerializer, responses={202: JobSerializer})
    def create(self, request):
        params = DiagnosticsRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = operations.do_enqueue_job(params.validated_data["kind"], actor=request.user)
        return Response(JobSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = operations.do_cancel_job(self.get_object(), actor=request.user)
        return Response(JobSerializer(job, context={"request": request}).data)


def visible_jobs(user):
    """The jobs a user started and those of their projects; staff see all."""
    from django.db.models import Q

    jobs = Job.objects.all()
    if user.is_staff:
        return jobs
    return jobs.filter(Q(created_by=user) | Q(project__memberships__user=user)).distinct()
