"""Yes/no query parameters, read one way everywhere (``counts=maybe`` read as no; now a 400 naming it)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError

YES = {"1", "true", "yes", "on"}
NO = {"", "0", "false", "no", "off"}


def yes_no_param(params, name: str) -> bool:
    """The query parameter ``name`` as a yes or a no (absent: no); anything else is a 400 naming it."""
    value = str(params.get(name) or "").strip().lower()
    if value in NO:
        return False
    if value in YES:
        return True
    raise ValidationError({name: f"must be true or false, got {params.get(name)[:20]!r}"})
