"""Renaming a project and changing its description: admins only, one audit row, names a person can tell apart."""

import pytest
from django.test import Client

from webapp.core.models import AuditLogEntry
from webapp.projects.models import Project, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("Lung", actor=owner, description="first cohort")
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    return project


def test_the_admin_renames_the_project_and_the_audit_keeps_the_old_name(project, owner, api_client_for):
    response = api_client_for(owner).patch(f"/api/projects/{project.pk}/", {"name": "  Lung, TCGA  "}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Lung, TCGA" and response.json()["description"] == "first cohort"
    assert response.json()["datasets"] == [] and response.json()["label_sets"] == []   # the project's detail
    project.refresh_from_db()
    assert (project.name, project.description) == ("Lung, TCGA", "first cohort")
    entry = AuditLogEntry.objects.get(action="project.edited")
    assert entry.actor == owner and entry.target == f"projects.project:{project.pk}"
    assert entry.details == {"name_before": "Lung", "name": "Lung, TCGA"}


def test_an_unchanged_body_writes_nothing(project, owner, api_client_for):
    response = api_client_for(owner).patch(f"/api/projects/{project.pk}/", {"name": "Lung"}, format="json")
    assert response.status_code == 200
    assert not AuditLogEntry.objects.filter(action="project.edited").exists()


def test_members_below_admin_and_outsiders_cannot_rename(project, member, outsider, api_client_for):
    response = api_client_for(member).patch(f"/api/projects/{project.pk}/", {"name": "mine"}, format="json")
    assert response.status_code == 403 and "admin role" in response.json()["detail"]
    response = api_client_for(outsider).patch(f"/api/projects/{project.pk}/", {"name": "mine"}, format="json")
    assert response.status_code == 404
    project.refresh_from_db()
    assert project.name == "Lung"
    assert not AuditLogEntry.objects.filter(action="project.edited").exists()


@pytest.mark.parametrize("body, field, words", [
    ({"name": "   "}, "name", "needs a name"),
    ({"name": "x" * 201}, "name", "201 characters long, over the limit of 200"),
    ({"name": "a\x07b"}, "name", "control character"),
    ({"description": "d" * 10_001}, "description", "at most 10000 characters"),
    ({"nmae": "typo"}, None, "unknown field(s) ['nmae']"),
])
def test_a_bad_edit_is_refused_naming_the_field(project, owner, api_client_for, body, field, words):
    response = api_client_for(owner).patch(f"/api/projects/{project.pk}/", body, format="json")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert words in detail and (field is None or detail.startswith(f"{field}: "))
    project.refresh_from_db()
    assert (project.name, project.description) == ("Lung", "first cohort")


def test_a_name_of_another_of_ones_projects_is_refused_in_any_case(project, owner, outsider, api_client_for):
    other = do_create_project("Breast", actor=owner)
    response = api_client_for(owner).patch(f"/api/projects/{other.pk}/", {"name": "lung"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (f"name: You are already in a project named 'Lung' (project {project.pk}): "
                                         "choose another name.")   # the name as it is, not as typed
    created = api_client_for(owner).post("/api/projects/", {"name": "LUNG"}, format="json")
    assert created.status_code == 400 and "already in a project named" in created.json()["detail"]
    # Someone who is in no project called Lung may have one of their own.
    assert api_client_for(outsider).post("/api/projects/", {"name": "Lung"}, format="json").status_code == 201
    assert Project.objects.filter(name__iexact="lung").count() == 2
    do_create_project("Merge Ω test", actor=owner)
    greek = api_client_for(owner).post("/api/projects/", {"name": "merge ω TEST"}, format="json")
    assert greek.status_code == 400 and "already in a project named 'Merge Ω test'" in greek.json()["detail"]


def test_the_project_page_edits_for_admins_only(project, owner, member):
    admin = Client()
    admin.force_login(owner)
    page = admin.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="edit-project"' in page and ">first cohort</textarea>" in page
    response = admin.post(f"/projects/{project.pk}/edit/", {"name": "Lung 2", "description": ""}, follow=True)
    assert "Project &#x27;Lung 2&#x27; saved." in response.content.decode()
    project.refresh_from_db()
    assert (project.name, project.description) == ("Lung 2", "")
    # A name with both kinds of quote is shown as written, without the backslash repr would add.
    both = admin.post(f"/projects/{project.pk}/edit/", {"name": 'O\'Brien "lab"', "description": ""}, follow=True)
    assert "Project \u201cO&#x27;Brien &quot;lab&quot;\u201d saved." in both.content.decode()
    admin.post(f"/projects/{project.pk}/edit/", {"name": "Lung 2", "description": ""})
    refused = admin.post(f"/projects/{project.pk}/edit/", {"name": "", "description": "x"}, follow=True)
    assert "Not saved: A project needs a name." in refused.content.decode()
    project.refresh_from_db()
    assert (project.name, project.description) == ("Lung 2", "")

    curator = Client()
    curator.force_login(member)
    assert 'id="edit-project"' not in curator.get(f"/projects/{project.pk}/").content.decode()
    assert curator.post(f"/projects/{project.pk}/edit/", {"name": "mine"}).status_code == 403
    project.refresh_from_db()
    assert project.name == "Lung 2"


def test_the_new_project_form_refuses_a_name_one_has(project, owner):
    client = Client()
    client.force_login(owner)
    response = client.post("/projects/new/", {"name": "lung"}, follow=True)
    assert "No project was created: You are already in a project named" in response.content.decode()
    assert Project.objects.count() == 1


@pytest.mark.parametrize("name, words", [
    ("\u200b", "A project needs a name."),   # nothing is left once the invisible ends go
    ("Lung\u202eb", "the name contains the text-direction control U+202E"),
])
def test_invisible_and_reordering_names_are_refused(project, owner, api_client_for, name, words):
    response = api_client_for(owner).patch(f"/api/projects/{project.pk}/", {"name": name}, format="json")
    assert response.status_code == 400 and response.json()["detail"] == f"name: {words}"


def test_invisible_ends_are_stripped_so_look_alikes_are_caught(project, owner, api_client_for):
    client = api_client_for(owner)
    response = client.post("/api/projects/", {"name": "Lung\u200b"}, format="json")
    assert response.status_code == 400 and "already in a project named 'Lung'" in response.json()["detail"]
    assert client.post("/api/projects/", {"name": "\u200bBreast\u200b "}, format="json").json()["name"] == "Breast"
    # A joiner inside a name is part of it (an emoji sequence, a Persian word).
    assert client.post("/api/projects/", {"name": "\U0001F469\u200d\U0001F52C"}, format="json").status_code == 201


def test_a_description_keeps_its_lines_and_a_form_save_is_no_edit(project, owner):
    """A textarea sends CRLF: saving the page again without a change must not rewrite the description."""
    client = Client()
    client.force_login(owner)
    url = f"/projects/{project.pk}/edit/"
    response = client.post(url, {"name": "Lung", "description": "first cohort\r\nsecond line"}, follow=True)
    project.refresh_from_db()
    assert project.description == "first cohort\nsecond line"
    assert "first cohort<br>second line" in response.content.decode()
    again = client.post(url, {"name": "Lung", "description": "first cohort\r\nsecond line"}, follow=True)
    assert "Nothing changed." in again.content.decode()
    assert AuditLogEntry.objects.filter(action="project.edited").count() == 1
    bell = client.post(url, {"name": "Lung", "description": "ring\x07"}, follow=True)
    assert "Not saved: A project description contains the control character &#x27;\\x07&#x27;." in bell.content.decode()
