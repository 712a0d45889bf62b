"""The API docs pages (Swagger UI and Redoc from drf-spectacular-sidecar), each under the site's CSP
widened only as far as its bundled script needs, and only on that page.

Both are pages for people: log in first (DRF views opt out of the login middleware). Their templates
(templates/drf_spectacular/) carry no inline script or style of their own.
"""

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from .query_params import KnownQueryParameters


class SchemaView(KnownQueryParameters, SpectacularAPIView):
    """The OpenAPI schema (drf-spectacular's view), refusing a query parameter it does not read, as the API does."""

    query_parameters = ("lang", "version")   # what drf-spectacular reads (the docs pages pass them on)


# Swagger UI's stylesheet draws its icons as data: SVG images.
swagger = csp_update({"img-src": ["data:"]})(
    login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")))

# Redoc styles itself with styled-components (style elements made at run time) and parses the schema in
# a web worker started from a blob: URL; neither can be had from a static file.
redoc = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"], "img-src": ["data:"]})(
    login_required(SpectacularRedocView.as_view(url_name="api-schema")))
