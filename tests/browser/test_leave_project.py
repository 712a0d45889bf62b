"""A member leaves a project in Chromium, as a person would: the Members page's Leave button asks first (a
dismissed question changes nothing), then the project list says so and the project is gone from it."""

import pytest

from webapp.projects.models import Membership, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_leaves_after_confirming(page, live_server, owner, member):
    project = do_create_project("Leaving lab", actor=owner)
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "member")
    page.fill("input[name=password]", "pw-member")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/projects/{project.pk}/members/")

    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("#leave button[type=submit]")
    page.wait_for_timeout(300)
    assert questions == ["Leave Leaving lab? You will no longer see anything in it until an admin adds you again."]
    assert Membership.objects.filter(project=project, user=member).exists()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#leave button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "You left project 'Leaving lab'" in page.inner_text(".flash")
    assert "Leaving lab" not in page.inner_text("main").replace("You left project 'Leaving lab'", "")
    assert not Membership.objects.filter(project=project, user=member).exists()
    assert errors == []
