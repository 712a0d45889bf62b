"""Query parameters read one way everywhere: yes/no (``counts=maybe`` read as no; now a 400 naming it), and
the filters a list knows (a misspelt one was ignored, and the list came back unfiltered)."""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings

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


def refuse_unknown_params(params, known: Iterable[str]) -> None:
    """A 400 naming the query parameters that are none of ``known`` (besides DRF's ``format``): a script's
    ``/api/jobs/?status=running`` got every job, as if none were running but all of them."""
    known = sorted(set(known))
    unknown = sorted(set(params) - set(known) - {"format"})
    if unknown:
        raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [
            f"unknown query parameter(s) {unknown}; allowed: {known}"]})
