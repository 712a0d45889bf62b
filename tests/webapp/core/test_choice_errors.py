"""A value that is none of a field's choices is refused with the choices listed: DRF's '"3" is not a valid
choice.' left a script guessing that stage 3 is "completion" or that NuCLS's folder layout is format "seed"."""

import pytest

from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    from webapp.projects.models import Role
    from webapp.projects.operations import do_set_membership

    project = do_create_project("Choices", actor=owner)
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    return project


def test_training_stages_list_the_stages(api_client_for, owner, project):
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{project.pk}/train/", {"stages": ["3"]}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"stages": {"0": [
        '"3" is not a valid choice; one of: sparse, correlation, completion.']}}
    estimate = client.get(f"/api/projects/{project.pk}/train/estimate/", {"stages": "1"})
    assert estimate.status_code == 400
    assert "one of: sparse, correlation, completion." in estimate.json()["detail"]


def test_upload_format_lists_the_formats(api_client_for, owner, project):
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/",
                                          {"name": "n", "format": "nucls"}, format="multipart")
    assert response.status_code == 400
    message = response.json()["errors"]["format"][0]
    assert message.startswith('"nucls" is not a valid choice; one of: auto, ') and "seed" in message


def test_member_role_lists_the_roles(api_client_for, owner, member, project):
    response = api_client_for(owner).patch(f"/api/projects/{project.pk}/members/{member.pk}/", {"role": "boss"},
                                           format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == 'role: "boss" is not a valid choice; one of: admin, curator, reviewer, viewer.'
