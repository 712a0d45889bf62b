"""The members page: every member sees who is in the project; only admins get (and may use) the forms to
add, change and remove members; the last admin stays."""

import re

import pytest
from django.test import Client

from webapp.projects.models import Membership, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("Team page", actor=owner)
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    return project


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def roles_in(project) -> dict[str, str]:
    return dict(Membership.objects.filter(project=project).values_list("user__username", "role"))


def flash(response) -> str:
    return " ".join(re.findall(r'<p class="flash[^"]*">([^<]*)</p>', response.content.decode()))


def test_the_project_page_links_to_the_members_page(project, member):
    page = client_for(member).get(f"/projects/{project.pk}/").content.decode()
    assert f'href="/projects/{project.pk}/members/"' in page


def test_a_reviewer_sees_the_list_without_forms_and_cannot_post(project, member, make_user):
    make_user("alice")
    client = client_for(member)
    response = client.get(f"/projects/{project.pk}/members/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-username="owner" data-role="admin"' in page
    assert 'data-username="member" data-role="reviewer"' in page
    # Only the form to leave the project themselves (test_leave_project.py).
    forms = re.findall(r'<form[^>]*action="([^"]*)"', page.split("<main", 1)[1])
    assert forms == [f"/projects/{project.pk}/leave/"]
    for url, data in ((f"/projects/{project.pk}/members/", {"user": "alice", "role": "viewer"}),
                      (f"/projects/{project.pk}/members/role/", {"user_id": member.pk, "role": "admin"}),
                      (f"/projects/{project.pk}/members/remove/", {"user_id": member.pk})):
        assert client.post(url, data).status_code == 403
    assert roles_in(project) == {"owner": "admin", "member": "reviewer"}


def test_outsiders_get_404(project, outsider):
    client = client_for(outsider)
    assert client.get(f"/projects/{project.pk}/members/").status_code == 404
    assert client.post(f"/projects/{project.pk}/members/", {"user": "outsider", "role": "admin"}).status_code == 404
    assert "outsider" not in roles_in(project)


def test_an_admin_adds_by_email_changes_a_role_and_removes(project, owner, member, make_user):
    alice = make_user("alice", email="alice@lab.example")
    do_set_membership(do_create_project("earlier work", actor=owner), alice, "viewer", actor=owner)  # a colleague
    client = client_for(owner)
    response = client.post(f"/projects/{project.pk}/members/", {"user": "ALICE@lab.example", "role": "viewer"},
                           follow=True)
    assert "alice was added as a viewer." in flash(response)
    assert roles_in(project)["alice"] == "viewer"

    response = client.post(f"/projects/{project.pk}/members/role/", {"user_id": alice.pk, "role": "curator"},
                           follow=True)
    assert "alice is now a curator." in flash(response)
    assert roles_in(project)["alice"] == "curator"

    response = client.post(f"/projects/{project.pk}/members/remove/", {"user_id": alice.pk}, follow=True)
    assert "alice was removed from the project." in flash(response)
    assert "alice" not in roles_in(project)
    assert response.redirect_chain[-1][0] == f"/projects/{project.pk}/members/"


def test_mistakes_come_back_as_messages_and_change_nothing(project, owner, member, outsider):
    client = client_for(owner)
    cases = [
        # Not a member: no account is named by its id (its username is not shown).
        (f"/projects/{project.pk}/members/role/", {"user_id": outsider.pk, "role": "viewer"},
         "Choose a member from the list."),
        (f"/projects/{project.pk}/members/remove/", {"user_id": outsider.pk}, "Choose a member from the list."),
        (f"/projects/{project.pk}/members/role/", {"user_id": "x", "role": "viewer"}, "Choose a member"),
        (f"/projects/{project.pk}/members/remove/", {"user_id": "99999999999999999999"}, "Choose a member"),
        (f"/projects/{project.pk}/members/role/", {"user_id": owner.pk, "role": "viewer"}, "last admin"),
        (f"/projects/{project.pk}/members/remove/", {"user_id": owner.pk}, "last admin"),
    ]
    for url, data, expected in cases:
        response = client.post(url, data, follow=True)
        assert response.status_code == 200
        assert expected in flash(response), (url, data, flash(response))
    assert roles_in(project) == {"owner": "admin", "member": "reviewer"}


@pytest.mark.parametrize("data, field, expected", [
    ({"user": "nobody", "role": "viewer"}, "user", "No account has"),
    ({"user": "member", "role": "viewer"}, "user", "member is already a reviewer"),
    ({"user": "outsider", "role": "boss"}, "role", "Choose a role"),
])
def test_a_mistake_in_the_add_form_is_shown_at_its_field_with_what_was_typed(project, owner, member, outsider,
                                                                              data, field, expected):
    """A screen reader hears the error at the field (aria-invalid, aria-describedby), and nobody retypes."""
    response = client_for(owner).post(f"/projects/{project.pk}/members/", data)
    assert response.status_code == 200
    html = response.content.decode()
    html = html[html.index('id="add-member"'):]  # the add form (the table has role selects too)
    error = re.search(r'<p class="field-error" id="add-member-error" role="alert">([^<]*)</p>', html)
    assert error and expected in error.group(1)
    tag = re.search(rf'<(?:input|select) name="{field}"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in tag and 'aria-describedby="add-member-error"' in tag
    other = re.search(rf'<(?:input|select) name="{"role" if field == "user" else "user"}"[^>]*>', html).group(0)
    assert "aria-invalid" not in other
    assert f'value="{data["user"]}"' in re.search(r'<input name="user"[^>]*>', html).group(0)
    assert not flash(response)
    assert roles_in(project) == {"owner": "admin", "member": "reviewer"}


def test_the_last_admin_has_no_remove_button_and_a_fixed_role(project, owner, member):
    page = client_for(owner).get(f"/projects/{project.pk}/members/").content.decode()
    owner_row = page.split('data-username="owner"', 1)[1].split("</tr>", 1)[0]
    member_row = page.split('data-username="member"', 1)[1].split("</tr>", 1)[0]
    assert "the last admin keeps this role" in owner_row and "Remove" not in owner_row
    assert "Remove" in member_row and "disabled" not in member_row


def test_an_admin_who_leaves_goes_back_to_the_project_list(project, owner, member):
    do_set_membership(project, member, Role.ADMIN, actor=owner)
    response = client_for(owner).post(f"/projects/{project.pk}/members/remove/", {"user_id": owner.pk})
    assert response.status_code == 302 and response["Location"] == "/"
    assert roles_in(project) == {"member": "admin"}


def test_a_deactivated_account_is_marked_and_does_not_count_as_an_admin(project, owner, member, make_user,
                                                                       api_client_for):
    """A colleague who left (staff unticked Active) still showed as any member, and beside a deactivated admin the
    page offered to remove or demote the one admin who can sign in, which was then refused."""
    away = make_user("away")
    do_set_membership(project, away, Role.ADMIN, actor=owner)
    away.is_active = False
    away.save()
    page = client_for(owner).get(f"/projects/{project.pk}/members/").content.decode()
    owner_row = page.split('data-username="owner"', 1)[1].split("</tr>", 1)[0]
    away_row = page.split('data-username="away"', 1)[1].split("</tr>", 1)[0]
    assert "account deactivated: cannot sign in, and does not count as an admin" in away_row
    assert "Remove" in away_row
    assert "deactivated" not in owner_row
    assert "the last admin keeps this role" in owner_row and "Remove" not in owner_row
    listed = api_client_for(member).get(f"/api/projects/{project.pk}/members/").json()
    assert {m["username"]: m["active"] for m in listed} == {"away": False, "member": True, "owner": True}


def test_removing_a_member_says_which_of_their_jobs_still_run(project, owner, member):
    """A removed curator's training went on and published its model without the admin being told."""
    from webapp.jobs.models import Job

    do_set_membership(project, member, Role.CURATOR, actor=owner)
    running = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=member, state=Job.State.RUNNING)
    Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=member, state=Job.State.SUCCEEDED)
    response = client_for(owner).post(f"/projects/{project.pk}/members/remove/", {"user_id": member.pk}, follow=True)
    assert flash(response) == (f"member was removed from the project. Their job {running.pk} still runs for the "
                               "project (a curator may cancel a job on its page).")
