from django.urls import reverse
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from webapp.core.known_fields import KnownFieldsOnly

from .models import Job


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-job-detail")
    # Without the parameters that name storage on the server (Job.INTERNAL_PARAMETERS).
    params = serializers.DictField(source="shown_params", read_only=True)
    # Files by name, not by storage key (Job.shown_result), and where to fetch each.
    result = serializers.DictField(source="shown_result", read_only=True)
    files = serializers.SerializerMethodField(help_text="the files the job wrote: name and download URL")
    waiting = serializers.SerializerMethodField(
        help_text="for a queued job that no live worker takes (none consumes its queue), what to start; else null")
    queued_by = serializers.SerializerMethodField(
        help_text="the job that queued this one by itself (a training, its version's predictions), where no person "
                  "started it: its id, why (`reason`) and where to read it; else null")

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "id": {"type": "integer"}, "reason": {"type": "string"}, "url": {"type": "string", "format": "uri"}}})
    def get_queued_by(self, job) -> dict | None:
        if job.queued_by_job is None:
            return None
        request = self.context.get("request")
        url = reverse("api-job-detail", args=[job.queued_by_job])
        return {"id": job.queued_by_job, "reason": (job.params or {}).get("reason", ""),
                "url": request.build_absolute_uri(url) if request else url}

    def get_waiting(self, job) -> str | None:
        from webapp.core.health import waiting_note

        return waiting_note(job)

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "url": {"type": "string", "format": "uri"}}}})
    def get_files(self, job) -> list:
        request = self.context.get("request")
        files = []
        for name in job.shown_result.get("files", []):
            url = reverse("api-job-file", args=[job.pk, name])
            files.append({"name": name, "url": request.build_absolute_uri(url) if request else url})
        return files

    class Meta:
        model = Job
        fields = ["id", "url", "kind", "state", "progress", "error", "waiting", "result", "files", "log_tail", "params",
                  "queued_by", "cancel_requested", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


@extend_schema_serializer(component_name="Diagnostics")
class DiagnosticsRequestSerializer(KnownFieldsOnly, serializers.Serializer):
    """Starting a job directly through /api/jobs/ is allowed for diagnostics only;
    the other kinds start from their own resources (a dataset upload, a training request...)."""

    kind = serializers.ChoiceField(choices=[Job.Kind.DIAGNOSTICS])


class JobAcceptedSerializer(serializers.Serializer):
    """The 202 answer of the operations that start a job from their own resource (an upload, a training
    request, an inference): where to follow the job, and the job itself."""

    id = serializers.IntegerField()
    url = serializers.URLField()
    job = JobSerializer()


def job_accepted(job: Job, request) -> Response:
    """The 202 of an operation that started ``job`` (JobAcceptedSerializer), with the job's URL in ``Location``
    as well, where HTTP clients look for it."""
    data = JobSerializer(job, context={"request": request}).data
    # str(): the serializer's url is DRF's Hyperlink, a str subclass that WSGI servers refuse as a header value
    # (PEP 3333 asks for str itself: wsgiref raises, and the page's fetch got no answer).
    return Response({"id": job.pk, "url": data["url"], "job": data}, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": str(data["url"])})
