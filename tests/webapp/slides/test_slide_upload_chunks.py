"""Resumable, chunked uploads of a slide and its detections (webapp.datasets.slide_uploads): chunks in order
give the file byte for byte, a chunk out of place is refused with the offset to resume from, the size limit,
who may use an upload, registering a slide with two complete uploads (the job run in-process, as
tests/webapp/slides/test_slide_register.py does), and the sweep of abandoned uploads."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from tests.webapp.slide_helpers import build_fixture_slide
from webapp.datasets import slide_uploads
from webapp.datasets.importing import ImportRejected
from webapp.datasets.models import Dataset, Image
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.core.models import AuditLogEntry
from webapp.jobs.sweep import sweep_orphans
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.DATA_DIR = tmp_path / "data"
    return settings.MEDIA_ROOT


@pytest.fixture
def uploads(media, settings):
    """Where chunked uploads assemble: on the web host's own disk, not in the media storage."""
    return settings.DATA_DIR / "uploads" / "slides"


@pytest.fixture
def project(owner, media, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    return do_create_project("chunked slides", actor=owner)


def start(client, project, filename, size):
    return client.post(f"/api/projects/{project.pk}/slide-uploads/", {"filename": filename, "size": size},
                       format="json")


def put(client, url, payload: bytes, start: int, total: int):
    return client.generic("PUT", url, payload, content_type="application/octet-stream",
                          HTTP_CONTENT_RANGE=f"bytes {start}-{start + len(payload) - 1}/{total}")


def bad_detections(fixture, folder: Path) -> Path:
    """The fixture's detections with a Point as feature #20: the import fails late, rows written."""
    collection = json.loads(fixture.geojson.read_text())
    collection["features"][20]["geometry"] = {"type": "Point", "coordinates": [1, 2]}
    bad = folder / "bad.geojson"
    bad.write_text(json.dumps(collection))
    return bad


def upload_whole(client, project, path: Path, chunk: int) -> str:
    payload = path.read_bytes()
    created = start(client, project, path.name, len(payload)).json()
    for offset in range(0, len(payload), chunk):
        response = put(client, created["url"], payload[offset:offset + chunk], offset, len(payload))
        assert response.status_code == 200, response.content
    assert response.json()["complete"] is True
    return created["id"]


def test_chunks_in_order_give_the_file_byte_for_byte(api_client_for, owner, project, media, uploads):
    client = api_client_for(owner)
    payload = os.urandom(11 * 1024**2 + 123)  # over DATA_UPLOAD_MAX_MEMORY_SIZE: the body is streamed
    response = start(client, project, "case 7.svs", len(payload))
    assert response.status_code == 201, response.content
    created = response.json()
    assert len(created["id"]) == 32 and (created["offset"], created["size"]) == (0, len(payload))
    assert created["url"].endswith(f"/api/projects/{project.pk}/slide-uploads/{created['id']}/")
    sizes = [11 * 1024**2, 100, 23]
    offset = 0
    for size in sizes:
        response = put(client, created["url"], payload[offset:offset + size], offset, len(payload))
        assert response.status_code == 200, response.content
        offset += size
        assert response.json()["offset"] == offset
    assert response.json()["complete"] is True
    state = client.get(created["url"]).json()
    assert state == {**state, "offset": len(payload), "size": len(payload), "complete": True,
                     "filename": "case 7.svs"}
    stored = uploads / created["id"]
    assert (stored / "data").read_bytes() == payload and not any(media.iterdir())
    assert json.loads((stored / "upload.json").read_text())["user_id"] == owner.pk


def test_a_chunk_out_of_place_is_refused_with_the_offset_to_resume_from(api_client_for, owner, project):
    client = api_client_for(owner)
    payload = bytes(range(256)) * 40
    created = start(client, project, "a.geojson", len(payload)).json()
    assert put(client, created["url"], payload[:1000], 0, len(payload)).status_code == 200
    for wrong in (0, 2000):  # a chunk sent twice, and one after a gap
        response = put(client, created["url"], payload[wrong:wrong + 500], wrong, len(payload))
        assert response.status_code == 409
        assert response.json()["offset"] == 1000 and "send the chunk that starts at 1000" in response.json()["detail"]
        assert "a.geojson" in response.json()["detail"]
    assert client.get(created["url"]).json()["offset"] == 1000


def test_a_failed_chunk_leaves_nothing_and_the_upload_resumes(api_client_for, owner, project, uploads):
    client = api_client_for(owner)
    payload = os.urandom(5000)
    created = start(client, project, "b.tiff", len(payload)).json()
    assert put(client, created["url"], payload[:2000], 0, len(payload)).status_code == 200
    # A body shorter than its Content-Range says is refused before anything is written.
    response = client.generic("PUT", created["url"], payload[2000:2500], content_type="application/octet-stream",
                              HTTP_CONTENT_RANGE=f"bytes 2000-3999/{len(payload)}")
    assert response.status_code == 400 and "b.tiff" in str(response.json())
    # A connection lost in the middle of a chunk, and one that ends early: what arrived of it is cut off again.
    upload = slide_uploads.get_upload(project, owner, created["id"])

    class Broken(io.BytesIO):
        def read(self, size=-1):
            block = super().read(min(size, 700))
            if not block:
                raise ConnectionResetError("the client went away")
            return block

    with pytest.raises(ConnectionResetError):
        slide_uploads.append_chunk(upload, 2000, 2000, Broken(payload[2000:2900]))
    with pytest.raises(ImportRejected, match="b.tiff"):
        slide_uploads.append_chunk(upload, 2000, 2000, io.BytesIO(payload[2000:2900]))
    state = client.get(created["url"]).json()
    assert (state["offset"], state["complete"]) == (2000, False)
    assert put(client, created["url"], payload[2000:], state["offset"], len(payload)).json()["complete"] is True
    assert (uploads / created["id"] / "data").read_bytes() == payload


@pytest.mark.parametrize("filename, size, field, words", [
    ("huge.svs", 2048, "size", "SLIDE_UPLOAD_MAX_BYTES"),
    ("notes.txt", 10, "filename", "'notes.txt' is neither a slide"),
])
def test_too_large_or_not_a_slide_file_is_refused(api_client_for, owner, project, uploads, settings, filename, size,
                                                  field, words):
    settings.SLIDE_UPLOAD_MAX_BYTES = 1024
    response = start(api_client_for(owner), project, filename, size)
    detail = response.json()["detail"]
    assert response.status_code == 400 and detail.startswith(f"{field}:") and words in detail, detail
    assert not uploads.exists() or not any(uploads.iterdir())
    if field == "size":   # the way out depends on whether the server has a slide folder
        assert ("register it by its path under SLIDES_ROOT" in detail) == bool(settings.SLIDES_ROOT), detail
        settings.SLIDES_ROOT = None
        detail = start(api_client_for(owner), project, filename, size).json()["detail"]
        assert "this server has no slide folder (SLIDES_ROOT) to register it from" in detail, detail


def test_a_chunk_over_64_mib_or_a_wrong_total_is_refused(api_client_for, owner, project):
    client = api_client_for(owner)
    created = start(client, project, "c.svs", 100 * 1024**2).json()
    response = client.generic("PUT", created["url"], b"x", content_type="application/octet-stream",
                              HTTP_CONTENT_RANGE=f"bytes 0-{65 * 1024**2 - 1}/{100 * 1024**2}")
    assert response.status_code == 400 and "at most 64 MiB" in str(response.json())
    response = put(client, created["url"], b"xyz", 0, 99)
    assert response.status_code == 400 and "c.svs" in str(response.json())


def test_only_the_user_who_started_an_upload_may_use_it(api_client_for, owner, make_user, outsider, project):
    curator = make_user("other-curator")
    do_set_membership(project, curator, Role.CURATOR, actor=owner)
    viewer = make_user("a-viewer")
    do_set_membership(project, viewer, Role.VIEWER, actor=owner)
    created = start(api_client_for(owner), project, "d.svs", 10).json()
    for user, code in ((curator, 404), (outsider, 404), (viewer, 403)):
        client = api_client_for(user)
        assert client.get(created["url"]).status_code == code
        assert put(client, created["url"], b"0123456789", 0, 10).status_code == code
        assert client.delete(created["url"]).status_code == code
    assert start(api_client_for(outsider), project, "e.svs", 10).status_code == 404
    assert start(api_client_for(viewer), project, "e.svs", 10).status_code == 403
    assert api_client_for(owner).get(created["url"]).json()["offset"] == 0
    assert api_client_for(owner).delete(created["url"]).status_code == 204
    assert api_client_for(owner).get(created["url"]).status_code == 404


def test_a_slide_registered_with_two_uploads_is_imported(api_client_for, owner, project, tmp_path, media, uploads):
    from workers.tasks import run_job

    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    slide_id = upload_whole(client, project, fixture.slide, chunk=64 * 1024)
    detections_id = upload_whole(client, project, fixture.geojson, chunk=64 * 1024)
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "uploaded case", "slide_upload_id": slide_id, "detections_upload_id": detections_id,
        "label_set": "qupath"}, format="json")
    assert response.status_code == 202, response.content
    # Moved, not copied: the uploads are gone, their files are the job's.
    assert not (uploads / slide_id).exists() and not (uploads / detections_id).exists()
    run_job(response.json()["id"])
    job = Job.objects.get(pk=response.json()["id"])
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__project=project)
    assert image.dataset.name == "uploaded case" and image.name.startswith("case-1")
    assert image.slide_root == "media" and image.nucleus_count == len(fixture.boxes)
    assert (media / image.slide_file).read_bytes() == fixture.slide.read_bytes()
    assert not any((media / "staging").rglob("*.tif"))
    # A successful import consumed them: nothing comes back under their ids.
    for upload_id in (slide_id, detections_id):
        assert client.get(f"/api/projects/{project.pk}/slide-uploads/{upload_id}/").status_code == 404
    assert not any(uploads.iterdir()) and not (media / "slide-uploads").exists()
    assert not AuditLogEntry.objects.filter(action="slide_upload.kept").exists()


def test_an_incomplete_or_unknown_upload_is_refused_and_kept(api_client_for, owner, project, tmp_path):
    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    payload = fixture.slide.read_bytes()
    slide = start(client, project, "case-1.tif", len(payload)).json()
    put(client, slide["url"], payload[:1000], 0, len(payload))
    detections_id = upload_whole(client, project, fixture.geojson, chunk=1 << 20)
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "early", "slide_upload_id": slide["id"], "detections_upload_id": detections_id}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == (f"slide_upload_id: the upload of 'case-1.tif' is not complete (1,000 of "
                                                  f"{len(payload):,} bytes received): send the rest before "
                                                  "registering the slide")
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "swapped", "slide_upload_id": detections_id, "detections_upload_id": detections_id}, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(
        "slide_upload_id: 'case-1.geojson' is not a slide file")
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "unknown", "slide_upload_id": "0" * 32, "detections_upload_id": detections_id}, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(
        "slide_upload_id: there is no upload '00000")
    assert client.get(slide["url"]).json()["offset"] == 1000  # nothing was used up
    assert not Dataset.objects.filter(project=project).exists() and not Job.objects.filter(project=project).exists()


def test_a_refused_registration_gives_the_uploads_back(api_client_for, owner, project, tmp_path, monkeypatch):
    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    slide_id = upload_whole(client, project, fixture.slide, chunk=1 << 20)
    detections_id = upload_whole(client, project, fixture.geojson, chunk=1 << 20)

    def refuse(*args, **kwargs):
        raise RuntimeError("the queue is down")

    monkeypatch.setattr(job_operations, "do_enqueue_job", refuse)
    with pytest.raises(RuntimeError):
        client.post(f"/api/projects/{project.pk}/slides/", {
            "name": "x", "slide_upload_id": slide_id, "detections_upload_id": detections_id}, format="json")
    for upload_id in (slide_id, detections_id):
        assert client.get(f"/api/projects/{project.pk}/slide-uploads/{upload_id}/").json()["complete"] is True


def test_the_sweep_removes_abandoned_uploads_only(api_client_for, owner, project, uploads):
    client = api_client_for(owner)
    old = start(client, project, "old.svs", 10).json()
    recent = start(client, project, "recent.svs", 10).json()
    put(client, recent["url"], b"01234", 0, 10)
    stamp = time.time() - slide_uploads.MAX_AGE.total_seconds() - 60
    root = uploads
    for path in [root, root / old["id"], *(root / old["id"]).iterdir()]:
        os.utime(path, (stamp, stamp))
    # The recent one's folder is old too: its data file, written a moment ago, says it is in progress.
    os.utime(root / recent["id"], (stamp, stamp))
    removed = sweep_orphans()
    assert f"uploads/slides/{old['id']}" in removed
    assert not (root / old["id"]).exists() and (root / recent["id"] / "data").read_bytes() == b"01234"
    assert client.get(old["url"]).status_code == 404 and client.get(recent["url"]).json()["offset"] == 5


def register(client, project, name: str, slide_id: str, detections_id: str) -> int:
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": name, "slide_upload_id": slide_id, "detections_upload_id": detections_id}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def assert_given_back(client, project, media: Path, files: dict[str, Path]) -> None:
    """Each upload id holds its file again, whole and usable by the same user, nothing is left staged, and each
    was audited as kept."""
    for upload_id, path in files.items():
        state = client.get(f"/api/projects/{project.pk}/slide-uploads/{upload_id}/").json()
        assert state == {**state, "id": upload_id, "filename": path.name, "complete": True,
                         "size": path.stat().st_size}
        assert (media / "slide-uploads" / upload_id / "data").read_bytes() == path.read_bytes()
    assert not any((media / "staging").iterdir())
    assert sorted(AuditLogEntry.objects.filter(action="slide_upload.kept").values_list("details__upload", flat=True)) \
        == sorted(files)


def test_a_failed_import_gives_its_uploads_back_under_the_same_ids(api_client_for, owner, project, tmp_path, uploads,
                                                                   media):
    from workers.tasks import run_job

    fixture = build_fixture_slide(tmp_path / "local")
    bad = bad_detections(fixture, tmp_path / "local")
    client = api_client_for(owner)
    slide_id = upload_whole(client, project, fixture.slide, chunk=1 << 20)
    detections_id = upload_whole(client, project, bad, chunk=1 << 20)
    stamp = time.time() - slide_uploads.MAX_AGE.total_seconds() + 60  # uploaded almost a day ago
    os.utime(uploads / slide_id / "data", (stamp, stamp))
    job_id = register(client, project, "first try", slide_id, detections_id)
    assert not (uploads / slide_id).exists()  # the job's while it runs
    run_job(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.state == "failed"
    assert job.error == (
        "bad.geojson: feature #20: geometry type 'Point' is not supported (nuclei need Polygon or MultiPolygon). "
        f"The uploaded slide case-1.tif and detections bad.geojson are kept as uploads {slide_id} and {detections_id} "
        "for a day: register again with them (slide_upload_id, detections_upload_id; the project page's upload form "
        "reuses them when the same files are chosen again)."), job.error
    # Usable again, whole, by the same user: the same state as before the registration, the bytes renamed back.
    assert_given_back(client, project, media, {slide_id: fixture.slide, detections_id: bad})
    assert not (media / f"projects/{project.pk}/datasets/job-{job_id}").exists()
    # Touched when given back: the day counts from now, not from the upload.
    assert f"slide-uploads/{slide_id}" not in sweep_orphans()

    # The detections corrected, the slide registered again with its same upload: not sent again.
    fixed_id = upload_whole(client, project, fixture.geojson, chunk=1 << 20)
    second = register(client, project, "second try", slide_id, fixed_id)
    run_job(second)
    job = Job.objects.get(pk=second)
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__name="second try")
    assert image.nucleus_count == len(fixture.boxes)
    assert (media / image.slide_file).read_bytes() == fixture.slide.read_bytes()
    assert client.get(f"/api/projects/{project.pk}/slide-uploads/{slide_id}/").status_code == 404
    # The bad detections were not used again: kept, until the sweep finds them a day old.
    assert sorted(p.name for p in (media / "slide-uploads").iterdir()) == [detections_id]
    later = time.time() + slide_uploads.MAX_AGE.total_seconds() + 60
    assert f"slide-uploads/{detections_id}" in sweep_orphans(now=later)


def test_a_cancelled_import_gives_its_uploads_back_too(api_client_for, owner, project, tmp_path):
    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    slide_id = upload_whole(client, project, fixture.slide, chunk=1 << 20)
    detections_id = upload_whole(client, project, fixture.geojson, chunk=1 << 20)
    job_id = register(client, project, "cancelled", slide_id, detections_id)
    response = client.post(f"/api/jobs/{job_id}/cancel/")
    assert response.status_code in (200, 202), response.content
    job = Job.objects.get(pk=job_id)
    assert job.state == "cancelled" and not job.error
    assert f"kept as uploads {slide_id} and {detections_id} for a day" in job.log_tail, job.log_tail
    for upload_id in (slide_id, detections_id):
        assert client.get(f"/api/projects/{project.pk}/slide-uploads/{upload_id}/").json()["complete"] is True


def register_multipart(client, project, name: str, slide: Path, detections: Path) -> Job:
    """The slide and its detections sent whole in the registration's own request (no chunked upload)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": name, "slide": SimpleUploadedFile(slide.name, slide.read_bytes()),
        "detections": SimpleUploadedFile(detections.name, detections.read_bytes())}, format="multipart")
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def test_a_failed_import_of_files_sent_in_its_request_gives_them_back_as_uploads(api_client_for, owner, member,
                                                                                project, tmp_path, media):
    """A bad GeoJSON sent with the slide in one multipart request: the slide is not sent again."""
    from workers.tasks import run_job

    fixture = build_fixture_slide(tmp_path / "local")
    bad = bad_detections(fixture, tmp_path / "local")
    client = api_client_for(owner)
    job = register_multipart(client, project, "first try", fixture.slide, bad)
    slide_id, detections_id = (entry["id"] for entry in job.params["chunked_uploads"])
    assert not (media / "slide-uploads").exists()  # the job's while it runs
    run_job(job.pk)
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.error == (
        "bad.geojson: feature #20: geometry type 'Point' is not supported (nuclei need Polygon or MultiPolygon). "
        f"The uploaded slide case-1.tif and detections bad.geojson are kept as uploads {slide_id} and {detections_id} "
        "for a day: register again with them (slide_upload_id, detections_upload_id)."), job.error
    assert_given_back(client, project, media, {slide_id: fixture.slide, detections_id: bad})
    # Someone else in the project cannot take them.
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    assert api_client_for(member).get(f"/api/projects/{project.pk}/slide-uploads/{slide_id}/").status_code == 404

    # Registered again with the kept slide and corrected detections sent whole: the slide was not sent again.
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "second try", "slide_upload_id": slide_id,
        "detections": SimpleUploadedFile("cells.geojson", fixture.geojson.read_bytes())}, format="multipart")
    assert response.status_code == 202, response.content
    second = Job.objects.get(pk=response.json()["id"])  # its run is the chunked tests' (above)
    staged = media / second.params["staging"]
    assert (staged / second.params["slide_upload"]).read_bytes() == fixture.slide.read_bytes()
    assert second.params["slide_name"] == "case-1.tif"
    assert client.get(f"/api/projects/{project.pk}/slide-uploads/{slide_id}/").status_code == 404
    assert sorted(p.name for p in (media / "slide-uploads").iterdir()) == [detections_id]


def test_a_cancelled_import_of_files_sent_in_its_request_gives_them_back_too(api_client_for, owner, project,
                                                                            tmp_path, media):
    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    job = register_multipart(client, project, "cancelled", fixture.slide, fixture.geojson)
    slide_id, detections_id = (entry["id"] for entry in job.params["chunked_uploads"])
    response = client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code in (200, 202), response.content
    job.refresh_from_db()
    assert job.state == "cancelled" and not job.error
    assert f"kept as uploads {slide_id} and {detections_id} for a day" in job.log_tail, job.log_tail
    for upload_id, path in ((slide_id, fixture.slide), (detections_id, fixture.geojson)):
        assert client.get(f"/api/projects/{project.pk}/slide-uploads/{upload_id}/").json()["complete"] is True
        assert (media / "slide-uploads" / upload_id / "data").read_bytes() == path.read_bytes()


def test_a_retried_import_still_finds_its_uploads_and_only_the_last_failure_gives_them_back(
        api_client_for, owner, project, tmp_path, uploads, media):
    import shutil

    from workers.tasks import MAX_ATTEMPTS, run_job

    fixture = build_fixture_slide(tmp_path / "local")
    client = api_client_for(owner)
    slide_id = upload_whole(client, project, fixture.slide, chunk=1 << 20)
    detections_id = upload_whole(client, project, bad_detections(fixture, tmp_path / "local"), chunk=1 << 20)
    job_id = register(client, project, "retried", slide_id, detections_id)

    def killed_mid_import():
        """What a worker killed while importing leaves: the job running, the slide moved into its folder."""
        job = job_operations.do_start_job(job_id, worker="lost")
        folder = media / f"projects/{project.pk}/datasets/job-{job_id}"
        folder.mkdir(parents=True, exist_ok=True)
        staged = media / job.params["staging"] / "slide.tif"
        if staged.exists():
            shutil.move(str(staged), folder / "slide.tif")
        return job

    # The first attempt is lost: its uploads stay the job's, for the retry.
    assert killed_mid_import().attempts == 1
    assert client.get(f"/api/projects/{project.pk}/slide-uploads/{slide_id}/").status_code == 404
    # The retry (attempt 2) finds them, fails on the Point, and only then gives them back.
    run_job(job_id)
    job = Job.objects.get(pk=job_id)
    assert (job.state, job.attempts) == ("failed", 2) and "feature #20" in job.error
    assert f"kept as uploads {slide_id} and {detections_id}" in job.error, job.error
    assert (media / "slide-uploads" / slide_id / "data").read_bytes() == fixture.slide.read_bytes()

    # A job whose worker was lost on every attempt is failed without running: the slide its killed attempt
    # moved into the job's folder is given back from there.
    fixed_id = upload_whole(client, project, fixture.geojson, chunk=1 << 20)
    job_id = register(client, project, "lost twice", slide_id, fixed_id)
    for _ in range(MAX_ATTEMPTS):
        killed_mid_import()
    run_job(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.state == "failed" and "lost 2 times" in job.error
    assert f"kept as uploads {slide_id} and {fixed_id}" in job.error, job.error
    assert (media / "slide-uploads" / slide_id / "data").read_bytes() == fixture.slide.read_bytes()
    assert (media / "slide-uploads" / fixed_id / "data").read_bytes() == fixture.geojson.read_bytes()
    assert not (media / f"projects/{project.pk}/datasets/job-{job_id}").exists()
