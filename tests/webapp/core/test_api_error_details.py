"""The 401 of a header in another scheme, a 405 and a 415 say what would do: the scheme the API takes, the
methods the endpoint takes, the content types it reads. Before, "Authentication credentials were not provided."
answered a script that did send its token (as ``Bearer``), and the others named only what was wrong."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("scheme", ["Bearer", "Basic"])
def test_a_token_in_another_scheme_is_told_the_one_taken(owner, scheme):
    key = Token.objects.create(user=owner).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    response = client.get("/api/jobs/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    detail = response.json()["detail"]
    assert f"scheme '{scheme}' is not one this API takes: send 'Authorization: Token <key>'" in detail
    assert key not in detail


def test_no_header_at_all_keeps_drfs_words():
    response = APIClient().get("/api/jobs/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication credentials were not provided."


def test_a_wrong_method_names_the_methods_taken(api_client_for, owner):
    response = api_client_for(owner).put("/api/jobs/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["detail"] == 'Method "PUT" not allowed; this endpoint takes GET, POST, HEAD, OPTIONS.'
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"


def test_an_unread_content_type_names_the_ones_read(api_client_for, owner):
    project = do_create_project("Typed", actor=owner)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/", '{"name": "x"}',
                                          content_type="application/json")
    assert response.status_code == 415
    assert response.json()["detail"] == ('Unsupported media type "application/json" in request; send '
                                         'multipart/form-data or application/x-www-form-urlencoded.')
