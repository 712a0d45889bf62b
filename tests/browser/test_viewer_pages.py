"""What a viewer (the lowest role) meets in real Chromium: no links to pages their role cannot open, and a
page of the site, not a bare "403 Forbidden", when they open one anyway."""

import pytest

from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_a_viewer_sees_no_review_link_and_a_styled_403_with_a_way_back(page, live_server, owner, member):
    project = do_create_project("Tumour board", actor=owner)
    do_set_membership(project, member, "viewer", actor=owner)
    log_in(page, live_server, member.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.locator(f"a[href='/projects/{project.pk}/review/']").count() == 0
    assert page.locator("a", has_text="Review nuclei").count() == 0
    assert page.locator("a", has_text="Reviewer agreement").count() == 1  # viewers may read that one

    for path in ("review/", "review/gallery/"):
        response = page.goto(f"{live_server.url}/projects/{project.pk}/{path}")
        assert response.status == 403
        assert page.locator("header.topbar a.brand").count() == 1  # the site's own page, styled
        assert page.inner_text("#forbidden h1") == "You may not open this page"
        reason = page.inner_text("#forbidden .flash")
        assert "reviewer role" in reason and "Tumour board" in reason and "you are a viewer" in reason, reason
    page.click("#forbidden a.button")
    page.wait_for_url(f"{live_server.url}/projects/{project.pk}/")
    assert page.inner_text("h1") == "Tumour board"


def test_a_reviewer_still_sees_the_review_link(page, live_server, owner, member):
    project = do_create_project("Tumour board", actor=owner)
    do_set_membership(project, member, "reviewer", actor=owner)
    log_in(page, live_server, member.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.locator("a", has_text="Review nuclei").count() == 1
