from django.contrib.auth.middleware import LoginRequiredMiddleware

from . import policy


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
