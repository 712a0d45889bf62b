"""API bodies with only the fields a serializer knows: a misspelt field (``descripton``) is a 400 that lists the
allowed ones, not a request that quietly does less than the script meant."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.settings import api_settings


# A serializer mixin: ``to_internal_value`` refuses keys that are none of the serializer's fields. No docstring:
# drf-spectacular describes a serializer by the first docstring up its classes, so this one described every
# request body without its own ("A serializer mixin: ..." on /api/docs for a training, an upload, a decision).
class KnownFieldsOnly:

    unknown_fields_label = "field"
    # A page's form sent as it is (FormData) carries Django's CSRF token beside the fields.
    ignored_fields = frozenset({"csrfmiddlewaretoken"})

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            for choice_field in (field, getattr(field, "child", None)):  # a list's items too ("stages")
                if isinstance(choice_field, serializers.ChoiceField):
                    _name_the_choices(choice_field)
        return fields

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - self.ignored_fields)
            if unknown:
                raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [
                    f"unknown {self.unknown_fields_label}(s) {unknown}; allowed: "
                    f"{[name for name, field in self.fields.items() if not field.read_only]}"]})
        return super().to_internal_value(data)


def _name_the_choices(field: serializers.ChoiceField) -> None:
    """DRF's '"3" is not a valid choice.' left the caller guessing what is (the README says "stage 3"; the API
    takes "completion"): the message lists them. DRF formats it with ``input``, so braces in a choice are doubled."""
    choices = ", ".join(str(choice) for choice in field.choices).replace("{", "{{").replace("}", "}}")
    field.error_messages["invalid_choice"] = f'"{{input}}" is not a valid choice; one of: {choices}.'
