from django.contrib.auth.decorators import login_not_required
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from .api_views import api_view
from rest_framework.response import Response
from rest_framework.routers import APIRootView

from .query_params import KnownQueryParameters

from .health import health


@extend_schema(responses={200: inline_serializer("Health", {
    "status": serializers.CharField(), "database": serializers.DictField(), "redis": serializers.DictField(),
    "workers": serializers.DictField()})})
@login_not_required
@api_view(["GET"])
def health_view(request):
    """The state of the database, Redis and the number of live workers (cached for a few seconds);
    503 when a service is down. Staff also see the workers' names and the services' error texts."""
    body, ok = health(detailed=bool(request.user.is_staff))
    return Response(body, status=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE)


class ApiRootView(KnownQueryParameters, APIRootView):
    """The API's index of its lists (DRF's), refusing a query parameter, as every GET of the API does."""
