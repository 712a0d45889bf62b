"""Project API permissions: outsiders get 404, roles gate what members may do."""

import pytest

from tests.webapp.dataset_helpers import upload, zip_entries
from tests.webapp.datasets.test_dataset_import_errors import seed_entries
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("perm", actor=owner)
    do_set_membership(project, member, Role.VIEWER, actor=owner)
    return project


def test_create_project_makes_the_creator_admin(owner, api_client_for):
    response = api_client_for(owner).post("/api/projects/", {"name": "new"}, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "admin"


def test_a_misspelt_field_is_refused_not_ignored(owner, api_client_for, project):
    from webapp.projects.models import Project

    client = api_client_for(owner)
    response = client.post("/api/projects/", {"name": "typo", "descripton": "colon slides"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "unknown field(s) ['descripton']; allowed: ['name', 'description']"
    assert not Project.objects.filter(name="typo").exists()
    member = client.post(f"/api/projects/{project.pk}/members/", {"username": "member", "rol": "reviewer"},
                         format="json")
    assert member.status_code == 400 and "unknown field(s) ['rol']" in member.json()["detail"]


def test_outsider_gets_404_everywhere(project, outsider, api_client_for):
    client = api_client_for(outsider)
    for url in (f"/api/projects/{project.pk}/", f"/api/projects/{project.pk}/datasets/",
                f"/api/projects/{project.pk}/members/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "not a member" in response.json()["detail"]
    response = upload(client, project.pk, zip_entries(seed_entries()), name="x", format="seed")
    assert response.status_code == 404
    assert client.get("/api/projects/").json()["results"] == []


def test_viewer_can_read_but_not_upload(project, member, api_client_for):
    client = api_client_for(member)
    assert client.get(f"/api/projects/{project.pk}/").json()["role"] == "viewer"
    response = upload(client, project.pk, zip_entries(seed_entries()), name="x", format="seed")
    assert response.status_code == 403
    assert "curator role" in response.json()["detail"]
    assert not Job.objects.exists()


def test_only_admins_manage_members(project, owner, member, outsider, api_client_for):
    response = api_client_for(member).post(f"/api/projects/{project.pk}/members/",
                                           {"username": "outsider", "role": "viewer"}, format="json")
    assert response.status_code == 403
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/members/",
                                          {"username": "outsider", "role": "reviewer"}, format="json")
    assert response.status_code == 201
    assert {"user_id": outsider.pk, "username": "outsider", "role": "reviewer", "active": True} in response.json()
    assert api_client_for(outsider).get(f"/api/projects/{project.pk}/").status_code == 200
