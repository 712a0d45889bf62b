from django.contrib.auth.middleware import LoginRequiredMiddleware


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
