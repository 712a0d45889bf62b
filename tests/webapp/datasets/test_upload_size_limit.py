"""An upload over MAX_UPLOAD_BYTES is refused naming what the user sent: the archive by its file name, or the
``files`` field for the files upload, which before was told about an ``archive`` it never sent. It is a 413, as a
body over Django's limits is (it was a 400), and one whose Content-Length already says so is refused before its
body is read (it was read to its end first, gigabytes into a temporary file). One within that room is stopped as its
files arrive (tests/webapp/core/test_upload_stopped_early.py); the import measures them again, for a caller that
sends no request."""

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
    assert response.status_code == 413
    assert response.json()["errors"] == {"archive": [
        "scan_batch.zip: the files of this upload are over the limit of 1.0 MB (MAX_UPLOAD_BYTES), and it was "
        "refused as it arrived; send the dataset in several smaller uploads"]}


def test_files_over_the_limit_name_the_files_field(api_client_for, owner, project, settings):
    settings.MAX_UPLOAD_BYTES = 1_000_000
    files = [SimpleUploadedFile("a.png", bytes(600_000)), SimpleUploadedFile("b.png", bytes(600_000))]
    response = post(api_client_for(owner), project, files=files, paths=["images/a.png", "images/b.png"])
    assert response.status_code == 413
    body = response.json()
    assert list(body["errors"]) == ["files"], body
    assert body["detail"] == ("files: b.png: the files of this upload are over the limit of 1.0 MB "
                              "(MAX_UPLOAD_BYTES), and it was refused as it arrived; send the dataset in several "
                              "smaller uploads")
    assert not Job.objects.exists() and not any(staging_root().glob("*"))


# A multipart body that announces more than it holds: a view that read it would fail on the missing bytes.
SMALL_BODY = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--b--\r\n'


@pytest.mark.parametrize("path", ["datasets/", "slides/"])
def test_a_body_whose_length_is_over_the_limit_is_refused_before_it_is_read(api_client_for, client, owner, project,
                                                                            settings, path):
    announced = settings.MAX_UPLOAD_BYTES + 100_000_000   # over the limit and the room for the other fields
    for sender in (api_client_for(owner), client):   # a script's token, the page's session (its CSRF check reads
        client.force_login(owner)                    # the body: it must not get that far)
        response = sender.post(f"/api/projects/{project.pk}/{path}", data=SMALL_BODY,
                               content_type="multipart/form-data; boundary=b", CONTENT_LENGTH=str(announced),
                               HTTP_ACCEPT="application/json")
        assert response.status_code == 413, response.content
        detail = response.json()["detail"]
        assert detail.startswith(f"The request's body is {announced / 1e6:,.1f} MB (its Content-Length), over the "
                                 f"limit of {settings.MAX_UPLOAD_BYTES / 1e6:,.1f} MB (MAX_UPLOAD_BYTES)"), detail
    assert not Job.objects.exists() and not any(staging_root().glob("*"))


def test_the_import_measures_the_files_of_a_caller_without_a_request(owner, project, settings):
    from webapp.core.domain_errors import TooLarge
    from webapp.datasets.uploads import do_start_import

    settings.MAX_UPLOAD_BYTES = 1_000_000
    files = [SimpleUploadedFile("a.png", bytes(600_000)), SimpleUploadedFile("b.png", bytes(600_000))]
    with pytest.raises(TooLarge) as refused:
        do_start_import(project, actor=owner, name="big", format="auto", files=files)
    assert (refused.value.field, refused.value.detail) == (
        "files", "the 2 files come to 1.2 MB, over the limit of 1.0 MB (MAX_UPLOAD_BYTES)")
    assert not Job.objects.exists() and not any(staging_root().glob("*"))
