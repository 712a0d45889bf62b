"""An upload over MAX_UPLOAD_BYTES is refused naming what the user sent: the archive by its file name, or the
``files`` field for the files upload, which before was told about an ``archive`` it never sent."""

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.datasets.uploads import staging_root
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, media_root):
    return do_create_project("Sizes", actor=owner)


def post(client, project, **data):
    return client.post(f"/api/projects/{project.pk}/datasets/", {"name": "big", **data}, format="multipart")


def test_an_archive_over_the_limit_is_named(api_client_for, owner, project, settings):
    settings.MAX_UPLOAD_BYTES = 1_000_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/a.png", bytes(1_200_000))
    response = post(api_client_for(owner), project, archive=SimpleUploadedFile("scan_batch.zip", buffer.getvalue()))
    assert response.status_code == 400
    assert response.json()["errors"] == {"archive": [
        "scan_batch.zip: the archive comes to 1.2 MB, over the limit of 1.0 MB (MAX_UPLOAD_BYTES)"]}


def test_files_over_the_limit_name_the_files_field(api_client_for, owner, project, settings):
    settings.MAX_UPLOAD_BYTES = 1_000_000
    files = [SimpleUploadedFile("a.png", bytes(600_000)), SimpleUploadedFile("b.png", bytes(600_000))]
    response = post(api_client_for(owner), project, files=files, paths=["images/a.png", "images/b.png"])
    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["files"], body
    assert body["detail"] == "files: the 2 files come to 1.2 MB, over the limit of 1.0 MB (MAX_UPLOAD_BYTES)"
    assert not Job.objects.exists() and not any(staging_root().glob("*"))
