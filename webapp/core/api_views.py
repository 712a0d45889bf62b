"""``@api_view`` for the project's function views: HEAD answers wherever GET does, as the policy table says
(HEAD follows GET) and as the class-based views do; DRF's decorator answered it 405.

A view that serves GET and a write method must branch on the write method (or on ``SAFE_METHODS``), never
on ``method == "GET"``: a HEAD request would take the write branch, as a viewer's HEAD with an upload's body
once imported a dataset (``tests/webapp/core/test_head_requests.py`` walks every route).
"""

from rest_framework.decorators import api_view as drf_api_view


def api_view(methods: list[str]):
    methods = [method.upper() for method in methods]
    if "GET" in methods and "HEAD" not in methods:
        methods.append("HEAD")
    return drf_api_view(methods)
