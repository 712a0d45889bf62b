"""OPTIONS on an API route describes the body that route takes (scripts and the browsable API's forms read it),
not the body of another route of the same viewset."""

import pytest

from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def described_post(client, url: str) -> set[str]:
    response = client.options(url, HTTP_ACCEPT="application/json")
    assert response.status_code == 200, (url, response.content)
    return set(response.json()["actions"]["POST"])


def test_options_describe_each_routes_own_body(client, owner):
    project = do_create_project("Described", actor=owner)
    client.force_login(owner)
    assert {"name", "description"} <= described_post(client, "/api/projects/")
    assert described_post(client, f"/api/projects/{project.pk}/members/") == {"username", "role"}
    assert {"name", "format", "label_set", "archive", "files", "paths"} <= described_post(
        client, f"/api/projects/{project.pk}/datasets/")
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner)
    assert described_post(client, f"/api/jobs/{job.pk}/cancel/") == set()   # cancelling takes no body


def test_the_browsable_api_opens_a_projects_datasets_and_members(client, owner):
    project = do_create_project("Browsed", actor=owner)
    client.force_login(owner)
    for url in (f"/api/projects/{project.pk}/datasets/", f"/api/projects/{project.pk}/members/"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/html"), url
        assert owner.username in client.get(f"/api/projects/{project.pk}/members/", HTTP_ACCEPT="text/html").content.decode()
