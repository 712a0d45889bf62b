"""Error pages: JSON with a ``detail`` under /api/ (scripts parse it), the site's pages elsewhere (Django's for 400
and 500, which must not depend on templates that could be what failed).

DRF views already answer JSON through :func:`webapp.core.api_errors.exception_handler`; these handlers
cover what never reaches a DRF view: a path that matches no route, and a crash outside DRF's handling.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.views import defaults


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def _message(exception, fallback: str) -> str:
    # Our own Http404/PermissionDenied carry a sentence for people; the resolver's carries a dict of
    # the patterns it tried, which is not for callers.
    message = exception.args[0] if exception is not None and exception.args else None
    return message if isinstance(message, str) and message else fallback


def page_not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": _message(exception, f"No API endpoint at {request.path}; the list of "
                                                           "endpoints is at /api/docs/.")}, status=404)
    # A page of the site (templates/404.html) with its menu and a way back: to the projects, as the project the
    # URL names is as likely to be one the user cannot see.
    return render(request, "404.html", status=404, context={
        "reason": _message(exception, "There is no page at this address."),
        "back_url": reverse("home"), "back_label": "your projects"})


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": _message(exception, "You may not do this.")}, status=403)
    # A page of the site (templates/403.html), saying why and leading back: to the project the URL
    # names (a member too low in role is the usual case), else to the projects.
    back_url, back_label = reverse("home"), "your projects"
    project_id = (getattr(request.resolver_match, "kwargs", None) or {}).get("project_id")
    if project_id is not None:
        try:
            back_url, back_label = reverse("project-detail", args=[project_id]), "the project"
        except NoReverseMatch:
            pass
    return render(request, "403.html", status=403, context={
        "reason": _message(exception, "Your account may not open this page."),
        "back_url": back_url, "back_label": back_label})


def _body_refusal(exception) -> tuple[int, str, dict] | None:
    """What to tell a script whose body Django would not read for its size: (status, detail, errors by field).
    Before, each read "The request was malformed", which gave no way on to one who sent a dataset's 101 files."""
    if isinstance(exception, TooManyFilesSent):
        message = (f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files in one request "
                   "(DATA_UPLOAD_MAX_NUMBER_FILES); send a dataset's folder as one zip in 'archive' instead")
        return 400, f"files: {message}", {"files": [message]}
    if isinstance(exception, TooManyFieldsSent):
        message = (f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields and list items in one request "
                   "(DATA_UPLOAD_MAX_NUMBER_FIELDS); send a dataset's folder as one zip in 'archive' instead of "
                   "its files and 'paths'")
        return 400, message, {"non_field_errors": [message]}
    if isinstance(exception, RequestDataTooBig):
        return 413, (f"The request's fields are over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1e6:.1f} MB "
                     "(DATA_UPLOAD_MAX_MEMORY_SIZE; uploaded files do not count): send large content as a file "
                     "upload, not in a JSON body or a form field."), {}
    return None


def bad_request(request, exception=None):
    if _is_api(request):
        refusal = _body_refusal(exception)
        if refusal is not None:
            status, detail, errors = refusal
            return JsonResponse({"detail": detail, **({"errors": errors} if errors else {})}, status=status)
        return JsonResponse({"detail": "The request was malformed and could not be read."}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"detail": "The server failed to answer this request; the error is logged. "
                                       "Try again, and tell the administrator if it keeps happening."},
                            status=500)
    return defaults.server_error(request)
