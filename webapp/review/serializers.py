"""Request bodies of the review API (validation and the OpenAPI schema)."""

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from webapp.core.ids import id_field
from webapp.core.known_fields import KnownFieldsOnly


def one_class(attrs: dict) -> dict:
    """A decision names its class once: by name or by index; both only when they agree."""
    if attrs.get("class_name") in (None, "") and attrs.get("class_index") is None:
        raise serializers.ValidationError({"class_name": "which class? give class_name (or class_index)"})
    return attrs


# "version: This field is required." left a script's author asking which version: it is the nucleus's ``version`` as
# the queue (review/next) or the gallery handed it out.
VERSION_REQUIRED = ("send the nucleus's 'version' as review/next or the gallery gave it (the id of its current "
                    "label, null when it has none), so that a label changed since is not overwritten")


class DecisionSerializer(KnownFieldsOnly, serializers.Serializer):
    label_set = serializers.CharField(max_length=100, help_text="label set name")
    class_name = serializers.CharField(max_length=100, required=False, help_text="the chosen class")
    class_index = serializers.IntegerField(min_value=0, required=False, help_text="or its index")
    version = id_field(allow_null=True, help_text="id of the current label the reviewer saw (null when it had none)",
                       error_messages={"required": VERSION_REQUIRED})
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                      help_text="idempotency key: a replay with the same key creates nothing")
    model_version = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, allow_null=True, default=None,
        help_text="the number of the model version whose prediction the reviewer saw (the queue's "
                  "prediction.model_version.number): the decision is scored against that prediction; without it, "
                  "the active version's")
    second_opinion = serializers.BooleanField(required=False, default=False,
                                              help_text="add your decision to a nucleus another reviewer already "
                                                        "decided (what the queue with include_labelled is for); "
                                                        "without it such a save answers 409")

    def validate(self, attrs):
        return one_class(attrs)


class BulkItemSerializer(KnownFieldsOnly, serializers.Serializer):
    nucleus = id_field()
    class_name = serializers.CharField(max_length=100, required=False)
    class_index = serializers.IntegerField(min_value=0, required=False)
    version = id_field(allow_null=True, error_messages={"required": VERSION_REQUIRED})
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    model_version = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, allow_null=True, default=None,
        help_text="the number of the model version whose prediction the reviewer saw (the queue's "
                  "prediction.model_version.number): the decision is scored against that prediction; without it, "
                  "the active version's")


class BulkDecisionSerializer(KnownFieldsOnly, serializers.Serializer):
    label_set = serializers.CharField(max_length=100)
    decisions = BulkItemSerializer(many=True, allow_empty=False)

    def validate_decisions(self, value):
        if len(value) > 500:
            raise serializers.ValidationError("at most 500 decisions per request")
        return value


@extend_schema_serializer(component_name="LabelSetChoice")  # not the projects API's LabelSet
class LabelSetSerializer(KnownFieldsOnly, serializers.Serializer):
    label_set = serializers.CharField(max_length=100)


@extend_schema_serializer(component_name="Release")  # else it inherits its parent's component name
class ReleaseSerializer(LabelSetSerializer):
    expires_at = serializers.DateTimeField(
        required=False, help_text="the lease's expires_at as the claim answered it: only that lease is given back, "
                                  "not one renewed since (a reload of the page shows the same nucleus)")


@extend_schema_serializer(component_name="Undo")  # else it inherits its parent's component name
class UndoSerializer(LabelSetSerializer):
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class SettleSerializer(DecisionSerializer):
    nucleus = id_field()
