"""``@api_view`` for the project's function views: HEAD answers wherever GET does, as the policy table says
(HEAD follows GET) and as the class-based views do; DRF's decorator answered it 405.

A view that serves GET and a write method must branch on the write method (or on ``SAFE_METHODS``), never
on ``method == "GET"``: a HEAD request would take the write branch, as a viewer's HEAD with an upload's body
once imported a dataset (``tests/webapp/core/test_head_requests.py`` walks every route).

``query_parameters``: what its GET reads (``OpenApiParameter``, as its ``extend_schema`` documents them, or
names); any other is a 400 naming it (:mod:`webapp.core.query_params`), checked after authentication and the
policy table, before the view runs.
"""

import functools
from collections.abc import Iterable
from typing import Any

from rest_framework.decorators import api_view as drf_api_view

from .query_params import READ_METHODS, parameter_names, refuse_unknown_params


def api_view(methods: list[str], *, query_parameters: Iterable[Any] = ()):
    methods = [method.upper() for method in methods]
    if "GET" in methods and "HEAD" not in methods:
        methods.append("HEAD")
    known = parameter_names(query_parameters)

    def decorator(view):
        @functools.wraps(view)   # with the attributes @renderer_classes and @parser_classes set on it
        def reading_known_parameters(request, *args, **kwargs):
            if request.method in READ_METHODS:
                refuse_unknown_params(request.query_params, known)
            return view(request, *args, **kwargs)

        return drf_api_view(methods)(reading_known_parameters)

    return decorator
