"""The project page's slide card in real Chromium, with a real worker that reads SLIDES_ROOT: registering a
slide by path through the form (the job's progress and log, then the slide listed with its exports), and a
refused path shown beside its field."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shown_beside_its_field
from tests.browser.test_upload_page import wait_in_page
from webapp.datasets.models import Image
from webapp.projects.slides_folder import do_set_slides_folder
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_a_slide_registered_through_the_form_is_listed_with_its_exports(logged_in_page, live_server, owner, settings,
                                                                        slides_share, slide_worker):
    settings.SLIDES_ROOT = slides_share
    project = do_create_project("slides page", actor=owner)
    do_set_slides_folder(project, "lab")
    page = logged_in_page
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.fill("#slide-form input[name=name]", "case one")
    page.fill("#slide-form input[name=path]", "lab/case-1.tif")
    page.fill("#slide-form input[name=detections_path]", "lab/case-1.geojson")
    page.click("#slide-form button[type=submit]")
    wait_in_page(page, "location.search.includes('slide_job=') && "
                       "(document.querySelector('#slide-job [data-field=log]') || {}).textContent?.includes('stored')")
    image = Image.objects.get(dataset__project=project)
    assert f"stored {image.nucleus_count:,} nuclei" in page.inner_text("#slide-job [data-field=log]")
    row = page.locator("#slides table.slides tbody tr")
    assert row.count() == 1 and "case-1" in row.inner_text() and str(image.nucleus_count) in row.inner_text()
    assert row.locator("a", has_text="CSV").get_attribute("href").endswith(f"/slides/{image.pk}/export/merged.csv?bom=yes")
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_a_path_out_of_the_share_is_the_forms_error(logged_in_page, live_server, owner, settings, slides_share):
    settings.SLIDES_ROOT = slides_share
    project = do_create_project("slides refused", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    # No folder of the share granted: no form, a note saying whom to ask; the upload form stays.
    assert page.locator("#slide-form").count() == 0
    assert "ask a server administrator" in page.inner_text("#slides")
    assert page.locator("#slide-upload-form").count() == 1
    do_set_slides_folder(project, "lab")
    page.reload()
    assert page.get_attribute("#slide-form input[name=path]", "placeholder") == "e.g. lab/case-12.svs"
    page.fill("#slide-form input[name=name]", "x")
    page.fill("#slide-form input[name=path]", "../etc/passwd")
    page.fill("#slide-form input[name=detections_path]", "lab/case-1.geojson")
    page.click("#slide-form button[type=submit]")
    # Beside the path it is about (it was the form's alert, tied to no field), the field invalid and focused.
    message, path = shown_beside_its_field(page, "slide-form", "path", "#slide-form [data-role=error]")
    assert "'..' is not allowed" in message.inner_text()
    assert page.locator("#slide-job").is_hidden()
    # Editing the path takes its message away.
    path.press_sequentially("x")
    assert message.count() == 0 and path.get_attribute("aria-invalid") is None
    assert path.get_attribute("aria-describedby") is None
