"""A request that needs the object store (STORAGE_URL) while it cannot be reached gets a 503 with Retry-After
and a detail saying what to do, not a 500 with a traceback in the log; other errors pass on."""

from __future__ import annotations

import socket

import pytest
from django.test import RequestFactory

from tests.storage.conftest import storage_settings, unusable_folder
from webapp.core.middleware import StorageUnreachableMiddleware
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]   # closed again when the probe goes: nothing listens there


def test_an_unreachable_store_is_a_503_naming_it(settings, tmp_path, owner, api_client_for):
    url = f"s3://test:test@127.0.0.1:{_closed_port()}/gone?secure=false&region=us-east-1"
    settings.STORAGE_URL = url
    settings.STORAGES = {**settings.STORAGES, "default": storage_settings(url)}
    settings.MEDIA_MIRROR = tmp_path / "mirror"
    settings.MEDIA_ROOT = unusable_folder(tmp_path / "media-root-unused")
    project = do_create_project("Store down", actor=owner)
    # An upload id this web host does not hold is looked for in the store (one given back by a failed import).
    response = api_client_for(owner).get(f"/api/projects/{project.pk}/slide-uploads/{'a' * 32}/")
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "30"
    assert response.json()["detail"].startswith("The media storage (STORAGE_URL) could not be reached")
    assert "/api/health/" in response.json()["detail"]


def test_the_store_s_own_answers_and_other_errors_pass_on():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    middleware = StorageUnreachableMiddleware(lambda request: None)
    page = middleware.process_exception(RequestFactory().get("/projects/1/"),
                                        EndpointConnectionError(endpoint_url="http://minio:9000"))
    assert page.status_code == 503 and page["Content-Type"].startswith("text/plain")
    assert middleware.process_exception(RequestFactory().get("/api/x/"),
                                        ReadTimeoutError(endpoint_url="http://minio:9000")).status_code == 503
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")
    assert middleware.process_exception(RequestFactory().get("/api/x/"), denied) is None
    assert middleware.process_exception(RequestFactory().get("/api/x/"), ValueError("could not connect")) is None
