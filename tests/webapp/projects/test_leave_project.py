"""A member leaves a project of their own accord (Members page, POST /api/projects/{id}/leave/), whatever their
role: from then on the project answers them 404, as it does a removed member, and the activity says who left.
The last admin is refused with a reason (409, or a message on the Members page) and stays. Before, only an admin
could take a member out, and a colleague moving on had to ask for it."""

import re

import pytest
from django.test import Client

from webapp.core.models import AuditLogEntry
from webapp.projects.models import Membership, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("Leaving", actor=owner)
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    return project


def roles_in(project) -> dict[str, str]:
    return dict(Membership.objects.filter(project=project).values_list("user__username", "role"))


def test_a_reviewer_leaves_through_the_api_and_then_sees_nothing_of_the_project(project, owner, member,
                                                                               api_client_for):
    client = api_client_for(member)
    response = client.post(f"/api/projects/{project.pk}/leave/")
    assert response.status_code == 204
    assert roles_in(project) == {"owner": "admin"}
    assert client.get(f"/api/projects/{project.pk}/").status_code == 404
    assert client.post(f"/api/projects/{project.pk}/leave/").status_code == 404

    left = AuditLogEntry.objects.get(action="project.member_left")
    assert left.actor == member and left.details == {"user": "member", "role": "reviewer"}
    team = api_client_for(owner).get(f"/api/projects/{project.pk}/activity/?kind=team").json()["results"]
    assert (team[0]["actor"], team[0]["words"]) == ("member", "left the project")


def test_the_last_admin_cannot_leave_but_one_of_two_admins_can(project, owner, member, api_client_for):
    refused = api_client_for(owner).post(f"/api/projects/{project.pk}/leave/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == ("You are the last admin of project 'Leaving' and cannot leave it: make another "
                                        "member an admin first, or delete the project.")
    assert roles_in(project) == {"owner": "admin", "member": "reviewer"}
    assert not AuditLogEntry.objects.filter(action="project.member_left").exists()

    do_set_membership(project, member, Role.ADMIN, actor=owner)
    assert api_client_for(owner).post(f"/api/projects/{project.pk}/leave/").status_code == 204
    assert roles_in(project) == {"member": "admin"}


def test_outsiders_get_404_and_nobody_leaves(project, outsider, api_client_for):
    assert api_client_for(outsider).post(f"/api/projects/{project.pk}/leave/").status_code == 404
    page = Client()
    page.force_login(outsider)
    assert page.post(f"/projects/{project.pk}/leave/").status_code == 404
    assert roles_in(project) == {"owner": "admin", "member": "reviewer"}


def test_the_members_page_offers_leaving_and_tells_the_last_admin_why_not(project, owner, member):
    client = Client()
    client.force_login(member)
    page = client.get(f"/projects/{project.pk}/members/").content.decode()
    assert f'action="/projects/{project.pk}/leave/"' in page
    response = client.post(f"/projects/{project.pk}/leave/", follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert "You left project &#x27;Leaving&#x27;" in response.content.decode()
    assert roles_in(project) == {"owner": "admin"}

    admin = Client()
    admin.force_login(owner)
    page = admin.get(f"/projects/{project.pk}/members/").content.decode()
    assert f'action="/projects/{project.pk}/leave/"' not in page
    assert "You are its last admin: make another member an admin before you leave" in page
    response = admin.post(f"/projects/{project.pk}/leave/", follow=True)
    assert response.redirect_chain[-1][0] == f"/projects/{project.pk}/members/"
    flash = " ".join(re.findall(r'<p class="flash[^"]*">([^<]*)</p>', response.content.decode()))
    assert "You are the last admin of project" in flash
    assert roles_in(project) == {"owner": "admin"}
