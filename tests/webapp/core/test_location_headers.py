"""A 201 says in ``Location`` where the new resource is, and a 202 where its job is: HTTP clients (and scripts
written against them) follow that header, which no answer sent before."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.webapp.dataset_helpers import zip_entries
from webapp.jobs import operations as job_operations
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(api_client_for, owner, media_root, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # no worker: the jobs stay queued
    return api_client_for(owner)


def location(response) -> str:
    """The answer's Location, which must be a str itself: PEP 3333 asks for str header values, and wsgiref (the
    live server of the browser tests) refused DRF's Hyperlink, a str subclass, so that no answer reached the page."""
    value = response["Location"]
    assert type(value) is str, type(value)
    return value


def test_a_new_project_is_at_its_location(client):
    response = client.post("/api/projects/", {"name": "Located"}, format="json")
    assert response.status_code == 201
    assert location(response) == f"http://testserver/api/projects/{response.json()['id']}/"
    assert client.get(location(response)).json()["name"] == "Located"


def test_an_upload_and_a_deletion_give_their_jobs_location(client, owner):
    project = do_create_project("Jobs", actor=owner)
    archive = SimpleUploadedFile("tiles.zip", zip_entries({"images/a.png": b"x"}).getvalue())
    upload = client.post(f"/api/projects/{project.pk}/datasets/", {"name": "d", "archive": archive},
                         format="multipart")
    assert upload.status_code == 202, upload.content
    assert location(upload) == upload.json()["url"] == f"http://testserver/api/jobs/{upload.json()['id']}/"
    assert client.get(location(upload)).json()["kind"] == "import"

    client.post(f"/api/jobs/{upload.json()['id']}/cancel/")
    deletion = client.delete(f"/api/projects/{project.pk}/")
    assert deletion.status_code == 202, deletion.content
    assert client.get(location(deletion)).json()["kind"] == "delete"


def test_a_slide_upload_is_at_its_location(client, owner):
    project = do_create_project("Slides", actor=owner)
    response = client.post(f"/api/projects/{project.pk}/slide-uploads/", {"filename": "a.svs", "size": 100},
                           format="json")
    assert response.status_code == 201, response.content
    assert location(response) == response.json()["url"]
    assert client.get(location(response)).json()["offset"] == 0
