"""The site has an icon: pages name it, and /favicon.ico (asked for by pages that name none) finds it."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_pages_name_an_icon_and_favicon_ico_is_found(page, live_server):
    failed = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(f"{live_server.url}/login/")
    page.wait_for_load_state("load")
    href = page.get_attribute("link[rel=icon]", "href")
    assert href and href.endswith(".svg")
    icon = page.request.get(f"{live_server.url}{href}")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    response = page.goto(f"{live_server.url}/favicon.ico")
    assert response.status == 200 and response.url.endswith(".svg")
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert failed == []
