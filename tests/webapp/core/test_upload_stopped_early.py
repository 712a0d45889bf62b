"""An upload whose files are over MAX_UPLOAD_BYTES, in a body within the room for the form's other fields (so the
Content-Length check lets it in), is stopped as its files arrive: 413 naming the field, nothing more of the body
parsed or written, and nothing left of what was written (webapp.core.upload_handlers). The rest of the body (at most
that room) is read and dropped after the answer is made, so that a client still sending reads it. Before, the whole
body was read into a temporary file and only then refused by its size. The page's form posts to the same API with its session, whose
CSRF check reads the form first: stopped there alike. A chunked body (no Content-Length) is refused unread (411)."""

import pytest
from django.test import Client
from django.test.client import FakePayload

from webapp.datasets.uploads import staging_root
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db

LIMIT = 1_000_000
BIG = 3_000_000   # over FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): Django writes it to a temporary file
CHUNK = 64 * 1024   # Django's multipart parser reads the body this much at a time


@pytest.fixture
def project(owner, media_root):
    return do_create_project("Sizes", actor=owner)


@pytest.fixture
def body_read(monkeypatch):
    """The bytes of the request bodies read (the test client's wsgi.input)."""
    read = {"bytes": 0}
    original = FakePayload.read

    def counting(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        read["bytes"] += len(data)
        return data

    monkeypatch.setattr(FakePayload, "read", counting)
    return read


@pytest.fixture
def stored(monkeypatch):
    """The bytes of files that reached Django's own upload handlers (memory or temporary file)."""
    from django.core.files import uploadhandler

    stored = {"bytes": 0}
    for handler in (uploadhandler.MemoryFileUploadHandler, uploadhandler.TemporaryFileUploadHandler):
        def counting(self, raw_data, start, original=handler.receive_data_chunk):
            if getattr(self, "activated", True):   # the memory handler keeps the files of a small body only
                stored["bytes"] += len(raw_data)
            return original(self, raw_data, start)

        monkeypatch.setattr(handler, "receive_data_chunk", counting)
    return stored


@pytest.fixture
def temporary_folder(settings, tmp_path):
    settings.MAX_UPLOAD_BYTES = LIMIT
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-temp")
    (tmp_path / "upload-temp").mkdir()
    return tmp_path / "upload-temp"


def file(name: str, size: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, bytes(size))


def session_client(owner):
    """The page's way: a session, and the CSRF token in a header (DRF's CSRF check reads the form first)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.get("/account/")   # sets the CSRF cookie
    return client, {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


CASES = {
    "archive": ("datasets/", {"name": "big", "archive": lambda: file("scan_batch.zip", BIG)}, "archive",
                "scan_batch.zip", "send the dataset in several smaller uploads"),
    "files": ("datasets/", {"name": "big", "files": lambda: [file("a.png", 600_000), file("b.png", BIG)],
                            "paths": ["images/a.png", "images/b.png"]}, "files", "b.png",
              "send the dataset in several smaller uploads"),
    "slide": ("slides/", {"name": "big", "detections": lambda: file("cells.geojson", 600_000),
                          "slide": lambda: file("big.tif", BIG)}, "slide", "big.tif", "upload a slide that large in chunks"),
}


@pytest.mark.parametrize("sender", ["token", "session"])
@pytest.mark.parametrize("case", list(CASES))
def test_an_upload_over_the_limit_is_stopped_as_it_arrives(api_client_for, owner, project, temporary_folder,
                                                           body_read, stored, sender, case):
    path, fields, field, file_name, way_on = CASES[case]
    data = {key: value() if callable(value) else value for key, value in fields.items()}
    if sender == "token":
        response = api_client_for(owner).post(f"/api/projects/{project.pk}/{path}", data, format="multipart")
    else:
        client, headers = session_client(owner)
        response = client.post(f"/api/projects/{project.pk}/{path}", data, HTTP_ACCEPT="application/json", **headers)
    assert response.status_code == 413, response.content
    body = response.json()
    message = (f"{file_name}: the files of this upload are over the limit of 1.0 MB (MAX_UPLOAD_BYTES), and "
               f"it was refused as it arrived; {way_on}")
    assert list(body["errors"]) == [field] and body["errors"][field][0].startswith(message), body
    assert body["detail"] == f"{field}: {body['errors'][field][0]}"
    # Stored up to the limit, not the body's 3 MB and more; the rest was read (to its end) and dropped.
    assert LIMIT - CHUNK < stored["bytes"] <= LIMIT, stored
    assert body_read["bytes"] == int(response.wsgi_request.META["CONTENT_LENGTH"])
    assert not list(temporary_folder.iterdir())   # the file cut short, and the one before it, are gone
    assert not Job.objects.exists() and not any(staging_root().glob("*"))


def test_an_upload_within_the_limit_is_read_whole(api_client_for, owner, project, temporary_folder, stored):
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/",
                                          {"name": "small", "archive": file("tiles.zip", LIMIT)}, format="multipart")
    assert response.status_code == 400, response.content   # read to its end: then found not to be a zip
    assert response.json()["errors"] == {"archive": ["tiles.zip: not a zip archive; upload the dataset's folder as a "
                                                     ".zip, or its files"]}
    assert stored["bytes"] == LIMIT


@pytest.mark.parametrize("path", ["datasets/", "slides/"])
def test_a_chunked_upload_is_refused_unread(api_client_for, owner, project, temporary_folder, body_read, path):
    response = api_client_for(owner).generic("POST", f"/api/projects/{project.pk}/{path}", bytes(BIG),
                                             content_type="multipart/form-data; boundary=b", CONTENT_LENGTH="",
                                             HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411, response.content
    assert "without a Content-Length" in response.json()["detail"]
    assert body_read["bytes"] == 0 and not Job.objects.exists()


def test_the_schema_says_which_routes_answer_411(client, owner):
    client.force_login(owner)
    paths = client.get("/api/schema/?format=json").json()["paths"]
    uploads = {path for path, item in paths.items() if "411" in item.get("post", {}).get("responses", {})}
    assert uploads == {"/api/projects/{id}/datasets/", "/api/projects/{project_id}/slides/",
                       "/api/projects/{project_id}/infer/"}
