from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware

from . import policy
from .ids import MAX_ID
from .upload_handlers import UploadLimitHandler


class PolicyMiddleware(LoginRequiredMiddleware):
    """Pages need a logged-in session unless the policy table (:mod:`webapp.core.policy`) opens them.

    The API under /api/ is left to DRF: it authenticates tokens inside the view, after middleware has
    run, so this middleware would redirect a script with a valid token to the login page. API views
    apply the same table through ``PolicyPermission`` (and answer 401/403 JSON, not a redirect).
    The admin site checks staff itself and sends everyone else to its own sign-in page.
    """

    # Human-facing pages that happen to live under /api/: log in like any other page.
    api_pages = ("/api/docs/", "/api/redoc/")

    def process_view(self, request, view_func, view_args, view_kwargs):
        path = request.path_info
        if path.startswith("/api/") and not path.startswith(self.api_pages):
            return None
        match = request.resolver_match
        if match is not None and "admin" in match.namespaces[:1]:
            return None
        # A page missing from the table needs a login, like a page the table reserves for members.
        access = policy.access_for(match, request.method) or policy.AUTHENTICATED
        if access is policy.ANONYMOUS or request.user.is_authenticated:
            return None
        return self.handle_no_permission(request, view_func)


# The former name, for settings written before the policy table.
PageLoginRequiredMiddleware = PolicyMiddleware


class CommonMiddleware(DjangoCommonMiddleware):
    """Django's, except for a write under /api/ sent without its trailing slash: a JSON 404 naming the URL with
    it. The 301 Django answers made clients send it again as a GET (curl -L, browsers), which listed instead of
    creating, and the script saw success. A read keeps the redirect."""

    def process_response(self, request, response):
        if (response.status_code == 404 and request.method not in ("GET", "HEAD", "OPTIONS")
                and request.path_info.startswith("/api/") and self.should_redirect_with_slash(request)):
            return _error(request, 404, f"{request.path} ends without '/': send the {request.method} to "
                                        f"{request.path}/")
        return super().process_response(request, response)


def _error(request, status: int, detail: str):
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": detail}, status=status)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")


class PrivateCacheMiddleware:
    """What a browser or a proxy may keep, for answers that do not say it themselves (tiles and crops do).

    API answers are never stored: a GET may hand out work (``review/next/`` leases a nucleus), and Chrome
    replayed its stored answer when Back returned to the review page, showing a nucleus "reserved for you"
    that had been given back and that another reviewer could take. Pages are someone's data: kept by the
    browser only, and asked again before they are shown (``private, no-cache``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            api = request.path_info.startswith("/api/")
            response["Cache-Control"] = "no-store" if api else "private, no-cache"
        return response


class RejectMalformedRequestMiddleware:
    """Requests no view can answer sensibly, refused before any view sees them.

    - A NUL character in the query string: 400. No legitimate client sends one, and PostgreSQL cannot
      store or compare text containing it, so a view filtering on it would fail with a 500. (Form and
      JSON fields go through DRF serializers, whose CharField already refuses NUL.)
    - A number in the URL beyond 64 bits (`/api/projects/99999999999999999999/`): 404, as for any other
      id that names nothing. SQLite cannot even bind such a number to a query (OverflowError, a 500).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()):
            return _error(request, 400, "The query string contains a NUL character (%00); remove it.")
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        for value in [*view_args, *view_kwargs.values()]:
            number = _as_number(value)
            if number is not None and number > MAX_ID:
                return _error(request, 404, f"No object has the id {number}: ids are at most {MAX_ID}.")
        return None


# The POST routes whose uploaded files have a size limit (the setting named), and the way on for a larger one.
UPLOAD_LIMITS = {
    "api-project-datasets": ("MAX_UPLOAD_BYTES", "send the dataset in several smaller uploads"),
    "api-project-slides": ("MAX_UPLOAD_BYTES", "upload a slide that large in chunks (slide-uploads/), or register "
                                               "it by its path under SLIDES_ROOT"),
    # Classifying one image: a reviewer's upload, as large as a dataset's at most (an image that large is a slide).
    "api-infer": ("MAX_UPLOAD_BYTES", "register an image that large as a slide and classify it there"),
}
# What a multipart body holds besides its files, per field or file: its boundary and part headers.
PART_ROOM = 1024


class UploadSizeMiddleware:
    """The size limit on an upload's files (``UPLOAD_LIMITS``), kept before the body is read or while it is.

    - A 413 before the body is read, for an upload whose Content-Length already says that its files are over the
      limit. Before, such a body was read to its end (gigabytes into a temporary file) and then refused, with a
      400. The body may hold more than the files: the form's other fields (at most DATA_UPLOAD_MAX_MEMORY_SIZE)
      and a boundary and headers for each part, so only a body over the limit plus that room is refused here.
    - One within that room gets :class:`webapp.core.upload_handlers.UploadLimitHandler` first among its upload
      handlers: the upload stops once its files are over the limit, and is refused (413, the field named) with
      the rest of the body unread and what was written of it removed. Before, it was read to its end, and its
      files refused by their size only then.
    - A body sent without a Content-Length (chunked): 411. Django reads no such body (its WSGI request reads as
      many bytes as the Content-Length says), so the form would have looked empty.

    Refused before authentication, as a server's body limit is: the answer tells nothing of the project (a session
    request's CSRF check reads the form: the handler stops that reading as well)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if request.method != "POST" or match is None or match.url_name not in UPLOAD_LIMITS:
            return None
        setting, way_on = UPLOAD_LIMITS[match.url_name]
        if not request.META.get("CONTENT_LENGTH") and request.META.get("HTTP_TRANSFER_ENCODING"):
            return _error(request, 411, "The upload was sent without a Content-Length (Transfer-Encoding: "
                                        f"{request.META['HTTP_TRANSFER_ENCODING'][:40]}), which this server does not "
                                        "read: send it with its Content-Length, as browsers, curl -F and Python's "
                                        "requests do.")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None   # Django reads such a body as empty
        limit = getattr(settings, setting)
        parts = (settings.DATA_UPLOAD_MAX_NUMBER_FIELDS or 1000) + (settings.DATA_UPLOAD_MAX_NUMBER_FILES or 100)
        room = (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0) + parts * PART_ROOM
        if length <= limit + room:
            request.upload_handlers.insert(0, UploadLimitHandler(request, limit=limit, setting=setting,
                                                                 way_on=way_on))
            return None
        return _error(request, 413, f"The request's body is {length / 1e6:,.1f} MB (its Content-Length), over the "
                                    f"limit of {limit / 1e6:,.1f} MB ({setting}) on an upload's files and "
                                    f"{room / 1e6:,.1f} MB for its other fields: it was refused before it was read; "
                                    f"{way_on}.")


def _as_number(value) -> int | None:
    """An int converter's value, or a router's digits-only lookup string, as a number."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        return int(value)
    return None


# gunicorn drains at most 64 KiB of a request body the application left unread, then closes the connection,
# after a response that promised to keep it open: the client's next request on it fails ("Remote end closed
# connection without response"). Bodies up to this size are read and dropped here instead; a larger one
# (a refused multi-gigabyte upload) still costs its connection.
DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_CHUNK = 1024 * 1024


class DrainUnreadBodyMiddleware:
    """Reads the rest of a request body no view read (an upload refused before it was parsed: a 403, a 404,
    a 409), or that an upload handler stopped reading (an upload over MAX_UPLOAD_BYTES: the rest is at most the
    room for the form's other fields, webapp.core.upload_handlers), so that the client, which may still be sending
    it, reads the answer, and its kept-alive connection stays usable for its next request. What is read is
    dropped: nothing of it is parsed or written anywhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(request, "_read_started", False) and not getattr(request, "upload_stopped", False):
            return response
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return response
        stream = getattr(request, "_stream", None)
        left = length - getattr(stream, "_pos", 0)
        if 0 < left <= DRAIN_LIMIT:
            try:
                while stream is not None and stream.read(DRAIN_CHUNK):
                    pass
            except OSError:
                pass   # the client went away: nothing to keep open
        return response


# How long a refused write is told to wait: about one step of the long writes that hold SQLite's lock.
BUSY_RETRY_AFTER = 30


class DatabaseBusyMiddleware:
    """503 with a way out, instead of a 500, for a write that waited out SQLite's lock timeout (30 s).

    SQLite lets one connection write at a time, and a job's transaction holds that lock until it commits:
    deleting a dataset of 350,000 nuclei, all or nothing, takes about a minute. A save meanwhile (a review,
    a rename, in any project) waits 30 s and then fails with "database is locked". It is the server's
    state, not the request's fault, and trying again later works: scripts and the pages' retrying queues
    read 503 and Retry-After so. PostgreSQL never answers this (its writers do not share one lock)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not (isinstance(exception, OperationalError) and "database is locked" in str(exception)):
            return None
        response = _error(request, 503, "The database is busy with a long write (a large dataset's import or "
                                        "deletion) and could not take this change; nothing was saved. Try again "
                                        "in a minute, or use PostgreSQL (DATABASE_URL), which has no such wait.")
        response["Retry-After"] = str(BUSY_RETRY_AFTER)
        return response


class DiskFullMiddleware:
    """507 with a way out, instead of a 500, for a request that filled the server's disk as it was written (an
    upload staged for its import: OSError ENOSPC). Nothing of it was kept (the upload's staging folder is removed
    as it fails). Jobs fail with a message of their own (webapp.core.disk_space)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from .disk_space import disk_full

        if disk_full(exception) is None:
            return None
        return _error(request, 507, "The server's disk is full: there was no space left to write this request (in "
                                    "the data folder, DATA_DIR, or the temporary folder uploads pass through, "
                                    "FILE_UPLOAD_TEMP_DIR); nothing was saved. Ask the server's administrator to free "
                                    "some space there, then send it again.")


def storage_unreachable(exception: BaseException) -> bool:
    """Whether ``exception`` says the object store (STORAGE_URL) could not be reached: no connection, or none
    that answered in time. Not an answer of the store's (a missing object, a refused key): those are the
    request's or the set-up's."""
    try:
        from botocore.exceptions import ConnectionClosedError, ConnectionError, ReadTimeoutError
    except ImportError:   # boto3 is installed with the app; without it no store is used either
        return False
    return isinstance(exception, (ConnectionError, ConnectionClosedError, ReadTimeoutError))


class StorageUnreachableMiddleware:
    """503 with a way out, instead of a 500, for a request that needed the object store (STORAGE_URL: a slide's
    region, an export, a chunked upload given back) while the store could not be reached. It is the server's
    state, not the request's fault: scripts and the pages' retrying queues read 503 and Retry-After so, and the
    person reading it learns where to look (the health check names the storage)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not storage_unreachable(exception):
            return None
        response = _error(request, 503, "The media storage (STORAGE_URL) could not be reached, so this could not "
                                        "be done; nothing was changed. Try again in a minute; if it lasts, ask the "
                                        "server's administrator to check the storage service (/api/health/ shows "
                                        "its state).")
        response["Retry-After"] = str(BUSY_RETRY_AFTER)
        return response

