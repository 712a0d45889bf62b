"""The API's pages of results: ``page`` and ``page_size`` in the query, both checked.

DRF's page-number pagination ignores a ``page_size`` unless told its parameter, and answers a page that is
no number (``?page=abc``) with 404 "Invalid page.", which reads as if the list were missing. Here a
malformed number is the caller's 400 naming the parameter; a page past the end is still 404, saying so.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

MAX_PAGE_SIZE = 500


class PagePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    invalid_page_message = "Page {page_number} is past the last page of these results."  # numbers are checked first

    def get_page_size(self, request) -> int:
        return whole_number_param(request.query_params, self.page_size_query_param, self.page_size, 1,
                                  self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        # As taken here: DRF's say an unbounded integer page, so a generated client could not ask for the last.
        return [
            {"name": self.page_query_param, "required": False, "in": "query",
             "description": "the page: a whole number from 1, or last",
             "schema": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["last"]}]}},
            {"name": self.page_size_query_param, "required": False, "in": "query",
             "description": f"results per page, 1 to {self.max_page_size}",
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size}},
        ]

    def get_page_number(self, request, paginator) -> int:
        raw = request.query_params.get(self.page_query_param) or "1"
        if raw in self.last_page_strings:
            return paginator.num_pages
        number = _whole_number(raw)
        if number is None or number < 1:
            raise ValidationError({self.page_query_param: [
                f"must be a whole number from 1, or 'last' ({raw[:20]!r} given)"]})
        return number


def _whole_number(raw: str) -> int | None:
    # isdecimal() alone takes other scripts' digits; 18 digits keep the number a 64-bit one.
    return int(raw) if raw.isascii() and raw.isdecimal() and len(raw) <= 18 else None


def whole_number_param(params, name: str, default: int, low: int, high: int) -> int:
    """The query parameter ``name`` as a whole number from ``low`` to ``high`` (``default`` when it is
    absent or empty), or a 400 naming it: also for views with pages of their own (the review gallery)."""
    raw = params.get(name) or ""
    if not raw:
        return default
    value = _whole_number(raw)
    if value is None or not low <= value <= high:
        raise ValidationError({name: [f"must be a whole number from {low} to {high} ({raw[:20]!r} given)"]})
    return value
