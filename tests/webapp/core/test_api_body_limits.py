"""A body Django will not read for its size (too many files or fields, fields too large) is refused with a
``detail`` that says which limit and what to send instead; before, each read "The request was malformed and could
not be read.", so a script that sent a dataset's 101 files as the README's ``files`` upload had no way on."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner):
    return do_create_project("Limits", actor=owner)


@override_settings(DEBUG=False, DATA_UPLOAD_MAX_NUMBER_FILES=3)
def test_an_upload_of_too_many_files_names_the_limit_and_the_zip(api_client_for, owner, project):
    files = [SimpleUploadedFile(f"images/t{i}.png", b"x") for i in range(4)]
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/",
                                          {"name": "many", "files": files}, format="multipart")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("files: more than 3 files in one request (DATA_UPLOAD_MAX_NUMBER_FILES)")
    assert "'archive'" in body["detail"] and body["errors"]["files"]


@override_settings(DEBUG=False, DATA_UPLOAD_MAX_NUMBER_FIELDS=5)
def test_too_many_paths_name_the_limit(api_client_for, owner, project):
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/",
                                          {"name": "many", "paths": [f"images/t{i}.png" for i in range(6)]},
                                          format="multipart")
    assert response.status_code == 400
    assert "(DATA_UPLOAD_MAX_NUMBER_FIELDS)" in response.json()["detail"]


@override_settings(DEBUG=False, DATA_UPLOAD_MAX_MEMORY_SIZE=200_000)
def test_a_json_body_over_the_limit_is_413_naming_it(api_client_for, owner):
    response = api_client_for(owner).post("/api/projects/", json.dumps({"name": "p", "description": "d" * 250_000}),
                                          content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "over 0.2 MB (DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]
