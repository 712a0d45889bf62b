"""API bodies with only the fields a serializer knows: a misspelt field (``descripton``) is a 400 that lists the
allowed ones, not a request that quietly does less than the script meant."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.settings import api_settings


class KnownFieldsOnly:
    """A serializer mixin: ``to_internal_value`` refuses keys that are none of the serializer's fields."""

    unknown_fields_label = "field"
    # A page's form sent as it is (FormData) carries Django's CSRF token beside the fields.
    ignored_fields = frozenset({"csrfmiddlewaretoken"})

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields) - self.ignored_fields)
            if unknown:
                raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [
                    f"unknown {self.unknown_fields_label}(s) {unknown}; allowed: "
                    f"{[name for name, field in self.fields.items() if not field.read_only]}"]})
        return super().to_internal_value(data)
