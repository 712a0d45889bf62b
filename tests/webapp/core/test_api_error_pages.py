"""Under /api/ every error is JSON with a ``detail``, even when no DRF view answers (issue 13, failure 8).

With DEBUG off an unknown /api/ path answered Django's HTML 404 page. Pages keep their HTML errors.
"""

import pytest
from django.test import Client, override_settings
from django.urls import path

from webapp import urls as project_urls


def crash(request):
    raise RuntimeError("/srv/secret/path exploded")


# The project's routes plus one view that crashes, with the project's error handlers.
urlpatterns = [path("api/test-crash/", crash), path("test-crash/", crash), *project_urls.urlpatterns]
handler404 = project_urls.handler404
handler500 = project_urls.handler500

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def user_client(owner):
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    return client


@override_settings(DEBUG=False)
@pytest.mark.parametrize("url", ["/api/nothing-here/", "/api/projects/1/nope/", "/api/jobs/x/y/z/"])
def test_unknown_api_path_is_json_404(user_client, url):
    response = user_client.get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "No API endpoint" in response.json()["detail"]


@override_settings(DEBUG=False)
def test_unknown_api_path_is_json_for_anonymous_callers_too():
    response = Client().get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["detail"]


@override_settings(DEBUG=False)
def test_wrong_method_under_api_is_json_405(user_client):
    response = user_client.delete("/api/jobs/")
    assert response.status_code == 405
    assert "DELETE" in response.json()["detail"]


@override_settings(DEBUG=False)
def test_crash_under_api_is_json_500_without_the_exception_text(user_client):
    response = user_client.get("/api/test-crash/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert "failed" in detail and "/srv/secret" not in detail


@override_settings(DEBUG=False)
def test_pages_keep_html_errors(user_client):
    response = user_client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    # The site's own page, with its menu and a way back, not Django's bare one; the resolver's patterns stay out.
    page = response.content.decode()
    assert 'id="not-found"' in page and "There is no page at this address." in page and 'href="/"' in page
    assert "<nav" in page and "urlpatterns" not in page.lower()
    missing = user_client.get("/projects/999999/")
    assert missing.status_code == 404 and 'id="not-found"' in missing.content.decode()
    response = user_client.get("/test-crash/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def test_the_project_urlconf_declares_the_json_handlers():
    from django.urls import get_resolver

    from webapp.core import errors

    resolver = get_resolver("webapp.urls")
    assert resolver.resolve_error_handler(404) is errors.page_not_found
    assert resolver.resolve_error_handler(500) is errors.server_error


@override_settings(DEBUG=False)
def test_a_missing_model_version_says_which_versions_there_are(user_client, owner):
    from django.utils import timezone

    from webapp.projects.operations import do_create_project
    from webapp.training.models import ModelVersion

    project = do_create_project("versions", actor=owner)
    response = user_client.post(f"/api/projects/{project.pk}/versions/3/activate/")
    assert response.status_code == 404
    assert response.json()["detail"] == "project 'versions' has no model version 3: no model has been trained yet"
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    response = user_client.get(f"/api/projects/{project.pk}/versions/3/checkpoint/")
    assert response.json()["detail"] == "project 'versions' has no model version 3; its versions are v1"
    page = user_client.get(f"/projects/{project.pk}/versions/3/")
    assert page.status_code == 404 and "its versions are v1" in page.content.decode()
