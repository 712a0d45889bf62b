"""A refusal that names a field of the training, upload, slide upload or classify form is shown beside that field:
the field marked aria-invalid and described by the message, the focus on the first such field; editing the field
takes its message away. The form's alert keeps what names no field. Before, every message went to the alert, tied
to no field, and the focus to the button. (The slide register form: tests/browser/test_slide_form.py.)"""

import json

import pytest

from tests.browser.conftest import shown_beside_its_field, wait_until
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FOCUSED = "(selector) => document.activeElement === document.querySelector(selector)"


def test_a_refused_training_option_is_shown_beside_its_field(logged_in_page, live_server, owner, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the training job stays queued
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    stages = page.locator("#train-form input[name=stages]")
    for box in stages.all():
        box.uncheck()
    page.click("#train-form button[type=submit]")   # the server refuses: no stage chosen

    message = page.locator("#train-form-stages-error")
    message.wait_for(state="visible")
    assert message.inner_text().startswith("choose at least one stage")
    # After the third stage's label, not inside it (the label names the box).
    assert page.evaluate("document.getElementById('train-form-stages-error').previousElementSibling"
                         ".contains(document.querySelector('#train-form input[value=completion]'))")
    for box in stages.all():
        assert box.get_attribute("aria-invalid") == "true"
        assert box.get_attribute("aria-describedby") == "train-form-stages-error"
    assert page.evaluate(FOCUSED, "#train-form input[name=stages][value=sparse]")
    assert page.locator("#train-error").is_hidden()
    assert not Job.objects.filter(project=project, kind=Job.Kind.TRAIN).exists()

    # A refusal of no field (a conflict) is the alert's, with the focus back on Start; the field's is gone.
    page.route(f"**/api/projects/{project.pk}/train/", lambda route: route.fulfill(
        status=409, content_type="application/json", body=json.dumps({"detail": "Already training (job 9)."})))
    stages.first.check()
    page.click("#train-form button[type=submit]")
    page.locator("#train-error").wait_for(state="visible")
    assert page.inner_text("#train-error") == "Already training (job 9)."
    assert page.locator("#train-form-stages-error").count() == 0
    assert page.locator("#train-form [aria-invalid]").count() == 0
    assert stages.first.get_attribute("aria-describedby") is None
    assert page.evaluate(FOCUSED, "#train-form button[type=submit]")

    # Accepted: the alert goes, the job starts.
    page.unroute(f"**/api/projects/{project.pk}/train/")
    page.click("#train-form button[type=submit]")
    page.wait_for_selector("#training-job:not([hidden])")
    assert page.locator("#train-error").is_hidden()
    assert Job.objects.get(project=project, kind=Job.Kind.TRAIN).params["options"]["stages"] == ["sparse"]


def test_upload_errors_go_beside_their_fields_and_the_rest_to_the_alert(logged_in_page, live_server, owner):
    project = do_create_project("field errors", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    answers = []
    page.route(f"**/api/projects/{project.pk}/datasets/", lambda route: route.fulfill(
        status=400, content_type="application/json", body=json.dumps(answers.pop(0))))
    page.fill("#upload-form input[name=name]", "tiles")
    page.set_input_files("#upload-form input[name=archive]", files=[
        {"name": "tiles.zip", "mimeType": "application/zip", "buffer": b"PK"}])

    # Two fields and a message of no field (DRF's non_field_errors): each field marked, the first one focused.
    answers.append({"detail": "...", "errors": {"archive": ["tiles.zip: not a zip archive"],
                                                "name": ["a dataset named 'tiles' is being imported"],
                                                "non_field_errors": ["The project is full."]}})
    page.click("#upload-form button[type=submit]")
    page.locator("#upload-form-name-error").wait_for(state="visible")
    assert page.inner_text("#upload-form-name-error") == "a dataset named 'tiles' is being imported"
    assert page.inner_text("#upload-form-archive-error") == "tiles.zip: not a zip archive"
    for name in ("name", "archive"):
        field = page.locator(f"#upload-form input[name={name}]")
        assert field.get_attribute("aria-invalid") == "true"
        assert field.get_attribute("aria-describedby") == f"upload-form-{name}-error"
    assert page.evaluate(FOCUSED, "#upload-form input[name=name]")   # the first in the form, not in the answer
    assert page.inner_text("#upload-form [data-role=error]") == "The project is full."
    assert page.get_attribute("#upload-form [data-role=error]", "role") == "alert"

    # A field the form does not have goes to the alert under its name; the fields of the last answer are clear.
    answers.append({"detail": "paths: 2 paths for 1 files", "errors": {"paths": ["2 paths for 1 files"]}})
    page.click("#upload-form button[type=submit]")
    wait_until(page, "document.querySelector('#upload-form [data-role=error]').textContent === "
                     "'paths: 2 paths for 1 files'")
    assert page.locator("#upload-form .field-error").count() == 0
    assert page.locator("#upload-form [aria-invalid]").count() == 0
    assert page.evaluate(FOCUSED, "#upload-form button[type=submit]")


def test_the_slide_upload_forms_refusals_go_beside_the_file_they_name(logged_in_page, live_server, owner):
    """A file the server will not take (not a slide, too large) was told in the form's alert only: now beside the
    file input it is about, which takes the focus; choosing another file takes the message away."""
    project = do_create_project("slide upload errors", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.fill("#slide-upload-form input[name=name]", "case")
    page.set_input_files("#slide-upload-form input[name=slide]", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a slide"}])
    page.set_input_files("#slide-upload-form input[name=detections]", files=[
        {"name": "cells.geojson", "mimeType": "application/json", "buffer": b"{}"}])
    page.click("#slide-upload-form button[type=submit]")

    message, slide = shown_beside_its_field(page, "slide-upload-form", "slide", "#slide-upload-form [data-role=error]")
    assert "'notes.txt' is neither a slide" in message.inner_text()

    page.set_input_files("#slide-upload-form input[name=slide]", files=[
        {"name": "case.svs", "mimeType": "application/octet-stream", "buffer": b"II*\x00"}])
    assert message.count() == 0 and slide.get_attribute("aria-invalid") is None
    assert slide.get_attribute("aria-describedby") is None


def test_the_classify_forms_refused_mask_is_shown_beside_it(logged_in_page, live_server, owner, tmp_path,
                                                            monkeypatch):
    """A photograph sent as the mask was told in the form's alert only, the focus left on the page."""
    import io

    import numpy as np
    from django.utils import timezone
    from PIL import Image

    from tests.browser.conftest import choose_tile_to_classify
    from webapp.training.models import ModelVersion

    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    choose_tile_to_classify(page)
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo, format="PNG")
    page.set_input_files("#infer-form input[name=mask]", files=[
        {"name": "my outlines.png", "mimeType": "image/png", "buffer": photo.getvalue()}])
    page.click("#infer-form button[type=submit]")

    message, mask = shown_beside_its_field(page, "infer-form", "mask", "#infer-error")
    assert message.inner_text().startswith("my outlines.png: ") and "photograph" in message.inner_text()
    assert not Job.objects.filter(project=project, kind=Job.Kind.INFER).exists()

    # Another image leaves the mask's message (it is the mask's); another mask takes it away; then it classifies.
    page.set_input_files("#infer-form input[name=image]", files=[
        {"name": "other.png", "mimeType": "image/png", "buffer": photo.getvalue()}])
    assert message.count() == 1
    choose_tile_to_classify(page)
    assert message.count() == 0 and mask.get_attribute("aria-invalid") is None
    page.click("#infer-form button[type=submit]")
    page.wait_for_selector("#infer-result:not([hidden])")
    assert Job.objects.filter(project=project, kind=Job.Kind.INFER).count() == 1
