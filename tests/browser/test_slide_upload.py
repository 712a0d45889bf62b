"""The project page's "Upload a slide" form in real Chromium, with a real worker: a fixture slide and its
GeoJSON sent in many small chunks (the form's data-chunk-bytes), a chunk that fails on the network and is
retried, then the registration's job followed until the slide is listed."""

from __future__ import annotations

import pytest

from tests.browser.test_upload_page import wait_in_page
from tests.webapp.slide_helpers import build_fixture_slide
from webapp.datasets.models import Image
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

CHUNK = 4 * 1024


def test_a_slide_uploaded_in_chunks_is_registered_and_listed(logged_in_page, live_server, owner, tmp_path,
                                                             celery_worker_process):
    fixture = build_fixture_slide(tmp_path / "local")
    assert fixture.slide.stat().st_size > 3 * CHUNK  # several chunks
    project = do_create_project("chunked slide page", actor=owner)
    page = logged_in_page
    errors, chunks, failed = [], [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

    def flaky(route):
        # The second chunk of the slide is lost on the network once: the page asks how far the server got
        # and sends it again.
        chunks.append(route.request.headers.get("content-range"))
        if len(chunks) == 2 and not failed:
            failed.append(chunks[-1])
            route.abort()
        else:
            route.continue_()

    page.route("**/slide-uploads/*/", lambda route: flaky(route) if route.request.method == "PUT"
               else route.continue_())
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.evaluate(f"document.getElementById('slide-upload-form').dataset.chunkBytes = '{CHUNK}'")
    page.fill("#slide-upload-form input[name=name]", "uploaded case")
    page.set_input_files("#slide-upload-form input[name=slide]", str(fixture.slide))
    page.set_input_files("#slide-upload-form input[name=detections]", str(fixture.geojson))
    page.click("#slide-upload-form button[type=submit]")
    wait_in_page(page, "location.search.includes('slide_job=') && "
                       "(document.querySelector('#slide-job [data-field=log]') || {}).textContent?.includes('stored')")
    image = Image.objects.get(dataset__project=project)
    assert image.slide_root == "media" and image.nucleus_count == len(fixture.boxes)
    row = page.locator("#slides table.slides tbody tr")
    assert row.count() == 1 and "case-1" in row.inner_text() and str(image.nucleus_count) in row.inner_text()
    assert failed and chunks.count(failed[0]) == 2  # the lost chunk was sent again
    assert len(chunks) >= fixture.slide.stat().st_size // CHUNK + 2
    # Registered: nothing is left to resume in the browser's storage.
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('slide-upload:')).length") == 0
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_after_a_refused_registration_and_a_reload_the_same_files_resume_without_sending_again(
        logged_in_page, live_server, owner, tmp_path, celery_worker_process):
    from webapp.datasets.models import Dataset

    fixture = build_fixture_slide(tmp_path / "local")
    project = do_create_project("resumed slide page", actor=owner)
    Dataset.objects.create(project=project, name="taken", format="seed", storage_dir="nowhere")
    page = logged_in_page
    puts = []
    page.on("request", lambda request: puts.append(request.url) if request.method == "PUT" else None)

    def submit(name: str) -> None:
        page.evaluate(f"document.getElementById('slide-upload-form').dataset.chunkBytes = '{CHUNK}'")
        page.fill("#slide-upload-form input[name=name]", name)
        page.set_input_files("#slide-upload-form input[name=slide]", str(fixture.slide))
        page.set_input_files("#slide-upload-form input[name=detections]", str(fixture.geojson))
        page.click("#slide-upload-form button[type=submit]")

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    submit("taken")
    page.wait_for_selector("#slide-upload-form-name-error")   # beside the name it refuses (field_errors.js)
    assert "already has a dataset named 'taken'" in page.inner_text("#slide-upload-form-name-error")
    sent = len(puts)
    assert sent >= fixture.slide.stat().st_size // CHUNK
    page.reload()
    submit("resumed case")  # the same files: both uploads are complete on the server already
    wait_in_page(page, "location.search.includes('slide_job=') && "
                       "(document.querySelector('#slide-job [data-field=log]') || {}).textContent?.includes('stored')")
    assert len(puts) == sent
    assert Image.objects.get(dataset__name="resumed case").nucleus_count == len(fixture.boxes)


def test_after_a_failed_import_the_same_slide_is_registered_again_without_sending_it(
        logged_in_page, live_server, owner, tmp_path, celery_worker_process):
    import json

    fixture = build_fixture_slide(tmp_path / "local")
    collection = json.loads(fixture.geojson.read_text())
    collection["features"][20]["geometry"] = {"type": "Point", "coordinates": [1, 2]}
    bad = tmp_path / "local" / "bad.geojson"
    bad.write_text(json.dumps(collection))
    project = do_create_project("failed slide page", actor=owner)
    page = logged_in_page
    puts = []
    page.on("request", lambda request: puts.append(request.url) if request.method == "PUT" else None)

    def submit(name: str, detections) -> None:
        page.evaluate(f"document.getElementById('slide-upload-form').dataset.chunkBytes = '{CHUNK}'")
        page.fill("#slide-upload-form input[name=name]", name)
        page.set_input_files("#slide-upload-form input[name=slide]", str(fixture.slide))
        page.set_input_files("#slide-upload-form input[name=detections]", str(detections))
        page.click("#slide-upload-form button[type=submit]")

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    submit("first try", bad)
    page.wait_for_selector("#slide-job [data-field=error]:not([hidden])")
    error = page.inner_text("#slide-job [data-field=error]")
    assert "feature #20" in error and "The uploaded slide case-1.tif and detections bad.geojson are kept" in error
    first_urls, sent = set(puts), len(puts)
    submit("second try", fixture.geojson)  # the detections corrected; the same slide: given back, complete
    wait_in_page(page, "location.search.includes('slide_job=') && "
                       "(document.querySelector('#slide-job [data-field=log]') || {}).textContent?.includes('stored')")
    assert Image.objects.get(dataset__name="second try").nucleus_count == len(fixture.boxes)
    assert not set(puts[sent:]) & first_urls  # only the new detections were sent
    assert len(puts) - sent == -(-fixture.geojson.stat().st_size // CHUNK)  # each chunk once
    # Only the bad detections' upload is left to resume (kept on the server for a day, unused).
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('slide-upload:'))") == [
        page.evaluate("[...Object.keys(localStorage)].find((k) => k.startsWith('slide-upload:bad.geojson:'))")]
