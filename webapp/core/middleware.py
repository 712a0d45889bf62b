from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpResponseBadRequest, JsonResponse


class PageLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Pages need a logged-in session; the API under /api/ authenticates by itself.

    DRF authenticates tokens inside the view, after middleware has run, so the stock middleware
    would redirect a script with a valid token to the login page. API views keep DRF's default
    ``IsAuthenticated`` permission instead (and answer 401/403 JSON, not a redirect).
    """

    # Human-facing pages that happen to live under /api/: log in like any other page.
    api_pages = ("/api/docs/", "/api/redoc/")

    def process_view(self, request, view_func, view_args, view_kwargs):
        path = request.path_info
        if path.startswith("/api/") and not path.startswith(self.api_pages):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


class RejectNulCharactersMiddleware:
    """A NUL character in the query string is refused with 400 before any view sees it.

    No legitimate client sends one, and PostgreSQL cannot store or compare text containing it: a view
    filtering on such a parameter would fail with a 500 instead of telling the client what is wrong.
    (Form and JSON fields go through DRF serializers, whose CharField already refuses NUL.)
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()):
            detail = "The query string contains a NUL character (%00); remove it."
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": detail}, status=400)
            return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
