"""Errors of the domain: what an operation refuses, in words a person can act on, free of HTTP.

Operations (``do_...`` functions, uploads, deletions, imports) raise these; they know nothing of
requests or status codes. The API maps them to answers in one place,
:func:`webapp.core.api_errors.exception_handler` (``Invalid`` 400, ``NotFound`` 404, ``Conflict`` 409,
``TooLarge`` 413, ``Unavailable`` 503); pages catch them and show ``detail`` as a message. Like Saleor's error codes, each
error carries a short machine ``code`` besides its sentence, and the user's ``field`` it is about, if any.

This module imports neither Django REST framework nor Django (tests/webapp/core/test_layering_errors.py).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every domain error.

    ``detail``: a sentence a person can act on. ``code``: a short machine code ("training_running").
    ``field``: the user's field (or file) the error is about, if any. ``extra``: data an answer carries
    besides the sentence (a 409 names the ``job_id`` in the way).
    """

    default_code = "error"

    def __init__(self, detail: str, *, code: str | None = None, field: str | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.field = field
        self.extra = extra

    def __str__(self) -> str:
        # "field: detail", as the API's flattened validation errors read.
        return f"{self.field}: {self.detail}" if self.field else self.detail


class Invalid(DomainError):
    """What the user gave cannot be used (the API answers 400, naming ``field``)."""

    default_code = "invalid"


class NotFound(DomainError):
    """What the user named does not exist, or is not theirs to see (404)."""

    default_code = "not_found"


class Conflict(DomainError):
    """The request clashes with the current state: a training already running, a deletion pending (409)."""

    default_code = "conflict"


class TooLarge(DomainError):
    """What the user sent is over a size limit of the server's (413, naming ``field`` and the limit)."""

    default_code = "too_large"


class Unavailable(DomainError):
    """A service the operation needs (the task queue) is down; nothing was done (503)."""

    default_code = "unavailable"
