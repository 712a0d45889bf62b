"""Authentication is required everywhere except health, login and static files."""

import pytest


PAGES = ["/", "/account/", "/admin/", "/jobs/1/", "/api/docs/", "/api/redoc/"]
API = ["/api/jobs/", "/api/jobs/1/", "/api/schema/"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", PAGES)
def test_pages_redirect_anonymous_users_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", API)
def test_api_refuses_anonymous_requests_with_json(client, url):
    response = client.get(url, HTTP_ACCEPT="application/json")
    assert response.status_code in (401, 403)
    assert "credentials" in response.json()["detail"].lower()


@pytest.mark.django_db
def test_open_urls(client):
    assert client.get("/api/health/").status_code in (200, 503)
    assert client.get("/login/").status_code == 200


@pytest.mark.django_db
def test_static_files_are_served_without_login(live_server):
    import urllib.request

    with urllib.request.urlopen(f"{live_server.url}/static/css/app.css") as response:
        assert response.status == 200
        assert b".topbar" in response.read()


@pytest.mark.django_db
def test_logged_in_user_sees_pages(client, owner):
    client.force_login(owner)
    assert client.get("/").status_code == 200
    assert client.get("/account/").status_code == 200
    # The admin site is for staff: a plain user is sent to its login, not shown it.
    assert client.get("/admin/").status_code == 302
