"""Query parameters read one way everywhere: yes/no (``counts=maybe`` read as no; now a 400 naming it), and
the filters a list knows (a misspelt one was ignored, and the list came back unfiltered).

Every GET of the API refuses a parameter it does not read: function views name theirs to
:func:`webapp.core.api_views.api_view` (``query_parameters=``), class views and viewsets through
:class:`KnownQueryParameters`. ``tests/webapp/core/test_authorization_matrix.py`` walks every GET route with an
unknown parameter, and with the ones its schema documents."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
        allowed = f"allowed: {known}" if known else "this endpoint reads none"
        raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [f"unknown query parameter(s) {unknown}; {allowed}"]})


# The pages of a paginated list (webapp.core.pagination.PagePagination).
PAGE_PARAMETERS = ("page", "page_size")
READ_METHODS = ("GET", "HEAD")   # HEAD answers as GET would (webapp.core.api_views)


def parameter_names(parameters: Iterable[Any]) -> list[str]:
    """The names of ``parameters``: drf-spectacular's ``OpenApiParameter`` (what the schema documents) or names."""
    return [parameter if isinstance(parameter, str) else parameter.name for parameter in parameters]


class KnownQueryParameters:
    """A class view's GET refuses a query parameter it does not read (400 naming it, listing those it does).

    ``query_parameters``: what the view reads (``OpenApiParameter`` or names); a viewset names each action's in
    ``action_query_parameters`` (an action left out reads none). Checked after authentication and the policy
    table, before the view looks anything up, so the answer is the same whether what the URL names exists."""

    query_parameters: Iterable[Any] = ()
    action_query_parameters: dict[str, Iterable[Any]] = {}

    def known_query_parameters(self) -> list[str]:
        action = getattr(self, "action", None)
        if action is not None and self.action_query_parameters:
            return parameter_names(self.action_query_parameters.get(action, ()))
        return parameter_names(self.query_parameters)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method in READ_METHODS:
            refuse_unknown_params(request.query_params, self.known_query_parameters())
