"""JSON errors with a ``detail`` that a person can act on, for every API failure."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from . import domain_errors


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A required service is unavailable; try again shortly."
    default_code = "service_unavailable"


class PayloadTooLarge(exceptions.APIException):
    """413: what was sent is over a size limit; with the user's ``field``, its message is that field's too (as a
    400's ``errors``), so that a form shows it beside the field."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large."
    default_code = "too_large"

    def __init__(self, detail=None, code=None, field: str | None = None):
        super().__init__(detail, code)
        self.field = field


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"

    def __init__(self, detail=None, code=None, **extra):
        super().__init__(detail, code)
        self.extra = extra


def _flatten(errors, prefix="") -> list[str]:
    """Turn DRF's nested validation errors into "field: message" lines."""
    if isinstance(errors, dict):
        lines = []
        for key, value in errors.items():
            # A nested serializer's own errors belong to the field that holds it ("options: ...").
            name = prefix.rstrip(".") if key == api_settings.NON_FIELD_ERRORS_KEY else f"{prefix}{key}"
            lines += _flatten(value, f"{name}." if name else "")
        return lines
    if isinstance(errors, list):
        lines = []
        for item in errors:
            lines += _flatten(item, prefix)
        return lines
    field = prefix.rstrip(".")
    return [f"{field}: {errors}" if field else str(errors)]


def _errors_by_field(errors):
    """``errors`` as the schema promises it: an object of field -> list of messages, whichever way the error
    was raised (a serializer gives lists, a domain error with a field one string, one without a field a bare
    list). Messages that belong to no field sit under ``non_field_errors``; a nested serializer's stay nested."""
    if isinstance(errors, dict):
        return {key: _messages(value) for key, value in errors.items()}
    return {api_settings.NON_FIELD_ERRORS_KEY: _messages(errors)}


def _messages(value):
    if isinstance(value, dict):
        return _errors_by_field(value)
    if isinstance(value, list):
        if any(isinstance(item, dict) for item in value):  # a list serializer's errors, one entry per item
            return [_errors_by_field(item) if isinstance(item, dict) else _messages(item) for item in value]
        return list(value)
    return [value]


def api_exception(exc: domain_errors.DomainError) -> exceptions.APIException:
    """The one mapping of domain errors to HTTP: each becomes the DRF exception of its status, so that its
    body reads as every other error of the API does (a 400 with ``errors`` by field, a 409 with its extras)."""
    if isinstance(exc, domain_errors.NotFound):
        return exceptions.NotFound(exc.detail, code=exc.code)
    if isinstance(exc, domain_errors.Conflict):
        return Conflict(exc.detail, exc.code, **exc.extra)
    if isinstance(exc, domain_errors.Unavailable):
        return ServiceUnavailable(exc.detail, exc.code)
    if isinstance(exc, domain_errors.TooLarge):
        return PayloadTooLarge(exc.detail, exc.code, field=exc.field)
    # Invalid, and any other refusal of what the user gave.
    return exceptions.ValidationError({exc.field: exc.detail} if exc.field else exc.detail, code=exc.code)


def _add_the_way_on(exc, context) -> None:
    """DRF's 401, 405 and 415 say what was wrong but not what would do: each gets the way on, from the request
    and the view that refused it (the exception itself keeps its status and WWW-Authenticate)."""
    request, view = context.get("request"), context.get("view")
    if request is None or view is None:
        return
    addition = None
    if isinstance(exc, exceptions.NotAuthenticated):
        # A script that sends "Bearer <token>" (or Basic) heard "credentials were not provided".
        scheme = request.META.get("HTTP_AUTHORIZATION", "").split(" ", 1)[0][:20]
        if scheme and scheme.lower() != "token":
            addition = (f"the Authorization header's scheme {scheme!r} is not one this API takes: send "
                        "'Authorization: Token <key>', with the token your account page, /account/, shows or creates")
    elif isinstance(exc, exceptions.MethodNotAllowed):
        addition = f"this endpoint takes {', '.join(view.allowed_methods)}"
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        media_types = [parser.media_type for parser in view.get_parsers()]
        addition = f"send {' or '.join(media_types)}" if media_types else None
    if addition:
        exc.detail = exceptions.ErrorDetail(f"{str(exc.detail).rstrip('.')}; {addition}.", code=exc.detail.code)


def exception_handler(exc, context):
    if isinstance(exc, domain_errors.DomainError):
        exc = api_exception(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    _add_the_way_on(exc, context)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": "; ".join(_flatten(exc.detail)), "errors": _errors_by_field(exc.detail)}
    elif isinstance(response.data, dict) and "detail" not in response.data:
        response.data = {"detail": "; ".join(_flatten(response.data))}
    if isinstance(exc, Conflict) and exc.extra:
        response.data.update(exc.extra)
    if isinstance(exc, PayloadTooLarge) and exc.field:
        response.data = {"detail": f"{exc.field}: {exc.detail}", "errors": {exc.field: [str(exc.detail)]}}
    if response.status_code == status.HTTP_401_UNAUTHORIZED and not isinstance(response.data, dict):
        response.data = {"detail": str(response.data)}
    return response

