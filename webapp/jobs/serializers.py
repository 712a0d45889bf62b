from rest_framework import serializers

from .models import Job


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api-job-detail")
    # Without the parameters that name storage on the server (Job.INTERNAL_PARAMETERS).
    params = serializers.DictField(source="shown_params", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "url", "kind", "state", "progress", "error", "result", "log_tail", "params",
                  "cancel_requested", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class DiagnosticsRequestSerializer(serializers.Serializer):
    """Starting a job directly through /api/jobs/ is allowed for diagnostics only;
    the other kinds start from their own resources (a dataset upload, a training request...)."""

    kind = serializers.ChoiceField(choices=[Job.Kind.DIAGNOSTICS])


class JobAcceptedSerializer(serializers.Serializer):
    """The 202 answer of the operations that start a job from their own resource (an upload, a training
    request, an inference): where to follow the job, and the job itself."""

    id = serializers.IntegerField()
    url = serializers.URLField()
    job = JobSerializer()
