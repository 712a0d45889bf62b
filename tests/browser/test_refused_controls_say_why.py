"""Controls that refuse until something changes stay in the Tab order, marked aria-disabled, and the sentence beside
them that says why is their description: the last admin's role select (it was disabled: Tab skipped it and nobody
heard why) and a deletion's button until the name is typed (disabled, its reason unsaid). Neither sends anything
while refused."""

import pytest

from tests.browser.conftest import accessible
from webapp.projects.models import Membership, Project, Role
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def posts_of(page) -> list[str]:
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    return posts


def test_the_last_admins_role_select_is_reached_says_why_and_keeps_its_role(logged_in_page, live_server, owner):
    project = do_create_project("Lab", actor=owner)
    page = logged_in_page
    posts = posts_of(page)
    page.goto(f"{live_server.url}/projects/{project.pk}/members/")
    select = "tr[data-username=owner] select[name=role]"
    page.focus(select)
    assert page.evaluate("document.activeElement.name") == "role"
    assert page.get_attribute(select, "aria-disabled") == "true"
    assert page.is_visible("#role-kept-%d" % owner.pk)
    assert accessible(page, select)["description"] == "the last admin keeps this role"
    page.keyboard.press("ArrowDown")     # a keyboard user tries another role: the select keeps its own
    assert page.eval_on_selector(select, "s => s.value") == "admin"
    page.wait_for_timeout(300)
    assert posts == [] and Membership.objects.get(project=project, user=owner).role == Role.ADMIN


def test_the_delete_button_is_reached_says_why_and_sends_nothing_until_the_name_is_typed(logged_in_page, live_server,
                                                                                          owner):
    project = do_create_project("Lab", actor=owner)
    page = logged_in_page
    page.route("**/train/estimate/**", lambda route: route.abort())
    posts = posts_of(page)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    form = f"form[data-confirm-name='{project.name}']"
    button, field = f"{form} button[type=submit]", f"{form} input[name=confirm_name]"
    page.fill(field, "La")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Delete the project"
    assert page.get_attribute(button, "aria-disabled") == "true"
    assert accessible(page, button)["description"] == "It deletes once the name is typed exactly as it is."
    assert page.is_visible("#delete-project-hint")
    page.keyboard.press("Enter")          # the button
    page.focus(field)
    page.keyboard.press("Enter")          # the field: the form's implicit submission
    page.wait_for_timeout(300)
    assert posts == [] and Project.objects.filter(pk=project.pk).exists()

    page.fill(field, "Lab")
    assert page.get_attribute(button, "aria-disabled") is None
