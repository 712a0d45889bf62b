"""The project page's upload form in real Chromium, with a real worker: what the page shows while and
after an import runs, for an import that succeeds and for one that fails."""

from __future__ import annotations

import pytest

from mlcore.synthetic import generate_dataset
from tests.webapp.dataset_helpers import zip_folder
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def wait_in_page(page, expression: str, timeout: float = 60):
    """wait_until, through the page's own reload (its JavaScript context is replaced meanwhile)."""
    def check():
        try:
            return page.evaluate(expression)
        except Exception:  # noqa: BLE001 - "execution context was destroyed" during a navigation
            return False
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s in the page: {expression}")
        page.wait_for_timeout(100)


@pytest.fixture
def tiles_zip(tmp_path):
    root = generate_dataset(tmp_path / "tiles", format="seed", n_images=3, nuclei_per_image=6,
                            class_names=["tumour", "stroma"], seed=3, size=(64, 64))
    path = tmp_path / "tiles.zip"
    path.write_bytes(zip_folder(root).getvalue())
    return path


def upload_through_the_form(page, live_server, project, archive, name="tiles"):
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.fill("#upload-form input[name=name]", name)
    page.select_option("#upload-form select[name=format]", "seed")
    page.set_input_files("#upload-form input[name=archive]", str(archive))
    page.click("#upload-form button[type=submit]")


def test_the_import_log_shows_its_steps(logged_in_page, live_server, owner, tiles_zip, celery_worker_process):
    project = do_create_project("logged", actor=owner)
    page = logged_in_page
    upload_through_the_form(page, live_server, project, tiles_zip)
    wait_in_page(page, "(document.querySelector('#upload-job [data-field=log]') || {}).textContent"
                       "?.includes('stored 3 images')")
    log = page.inner_text("#upload-job [data-field=log]")
    assert "unpacking the archive" in log and "reading 3 images (seed)" in log, log
    assert "image 1/3" in log and "image 3/3" in log, log
    assert page.locator("#upload-job [data-field=log]").is_visible()
    job = Job.objects.get(project=project, kind="import")
    assert job.state == "succeeded"
    assert "stored 3 images and 18 nuclei (label set tiles)" in job.log_tail


def test_a_successful_import_shows_its_dataset_without_a_manual_reload(logged_in_page, live_server, owner, tiles_zip,
                                                                        celery_worker_process):
    project = do_create_project("fresh", actor=owner)
    page = logged_in_page
    upload_through_the_form(page, live_server, project, tiles_zip)
    assert "No datasets yet" in page.inner_text("#datasets")
    # The page brings itself up to date: the new dataset and its label set, the job's card with its result.
    wait_in_page(page, "document.querySelector('#datasets table') !== null")
    wait_in_page(page, "document.querySelector('#upload-job [data-field=done]').textContent.includes('Imported')")
    job = Job.objects.get(project=project, kind="import")
    assert f"import_job={job.pk}" in page.url
    assert "tiles" in page.inner_text("#datasets table")
    assert page.locator("#label-sets figure[data-label-set=tiles]").count() == 1
    assert "Imported 3 images and 18 nuclei" in page.inner_text("#upload-job")
    assert page.inner_text("#upload-job [data-field=state]") == "succeeded"
    assert page.inner_text("#upload-job [data-field=link]") == f"#{job.pk}"
    assert page.input_value("#upload-form input[name=name]") == ""
    # The reload keeps the reader's place: the focus is back in the upload form, not at the top of the page.
    wait_in_page(page, "document.activeElement.id === 'upload-form'")


def test_a_failed_import_keeps_the_form_and_shows_no_stale_percentage(logged_in_page, live_server, owner, tmp_path,
                                                                      tiles_zip, celery_worker_process):
    import zipfile

    project = do_create_project("failing", actor=owner)
    archive = tmp_path / "lab tiles.zip"   # a zip whose first image is no image: the import job fails on it
    with zipfile.ZipFile(tiles_zip) as source, zipfile.ZipFile(archive, "w") as broken:
        for entry in source.infolist():
            broken.writestr(entry, b"not an image" if entry.filename.endswith("tile_0000.png") else source.read(entry))
    page = logged_in_page
    upload_through_the_form(page, live_server, project, archive, name="broken")
    page.wait_for_selector("#upload-job [data-field=error]:not([hidden])", timeout=60000)
    assert page.inner_text("#upload-job [data-field=state]") == "failed"
    detail = page.inner_text("#upload-job [data-field=detail]")
    assert "%" not in detail and detail.startswith("failed"), detail
    assert "tile_0000.png" in page.inner_text("#upload-job [data-field=error]")
    # What the user typed and chose is still there, to fix and send again.
    assert page.input_value("#upload-form input[name=name]") == "broken"
    assert page.eval_on_selector("#upload-form input[name=archive]", "input => input.files.length") == 1
    assert "No datasets yet" in page.inner_text("#datasets")
    assert "import_job" not in page.url


def test_a_file_that_is_no_zip_is_refused_at_once_in_the_form(logged_in_page, live_server, owner, tmp_path):
    project = do_create_project("no zip", actor=owner)
    archive = tmp_path / "lab tiles.zip"
    archive.write_bytes(b"this is a text file, not a zip archive")
    page = logged_in_page
    upload_through_the_form(page, live_server, project, archive, name="broken")
    # Beside the archive field, which is marked invalid, described by the message and given the focus (a screen
    # reader reads the field, "invalid", and the message); the form's alert is for errors of no field.
    message = page.locator("#upload-form-archive-error")
    message.wait_for(state="visible", timeout=30000)
    assert message.inner_text().startswith("lab tiles.zip: not a zip archive")
    archive = page.locator("#upload-form input[name=archive]")
    assert archive.get_attribute("aria-invalid") == "true"
    assert archive.get_attribute("aria-describedby") == "upload-form-archive-error"
    assert page.evaluate("document.activeElement === document.querySelector('#upload-form input[name=archive]')")
    assert page.locator("#upload-form [data-role=error]").is_hidden()
    assert page.input_value("#upload-form input[name=name]") == "broken"
    assert not Job.objects.filter(project=project).exists()


def test_an_import_beside_an_active_model_says_its_predictions_follow(logged_in_page, live_server, owner, tiles_zip,
                                                                      celery_worker_process, settings):
    """The worker imports, queues the active version's predictions of the new nuclei and makes them; the card
    links that job."""
    from django.utils import timezone

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet as MLLabelSet
    from tests.conftest import wait_for
    from webapp.training.models import ModelVersion, Prediction

    project = do_create_project("modelled", actor=owner)
    checkpoint = f"projects/{project.pk}/models/v1.pt"   # an untrained model of the upload's taxonomy will do
    save_checkpoint(settings.MEDIA_ROOT / checkpoint, CrossTrainedModel([MLLabelSet("tiles", ("tumour", "stroma"))],
                    "small", {"width": 4}), "sparse", 0, True, TrainConfig(crop_context_view=0))
    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file=checkpoint, is_active=True,
                                          data_snapshot_at=timezone.now(),
                                          label_sets=[{"name": "tiles", "classes": ["tumour", "stroma"]}])
    page = logged_in_page
    upload_through_the_form(page, live_server, project, tiles_zip)
    wait_in_page(page, "document.querySelector('#upload-job [data-field=done]').textContent"
                       ".includes(\"the active model's predictions of them follow in job\")")
    prediction = Job.objects.get(project=project, kind=Job.Kind.PREDICT)
    assert page.get_attribute(f"#upload-job [data-field=done] a[href='/jobs/{prediction.pk}/']", "href")
    done = wait_for(lambda: Job.objects.filter(pk=prediction.pk, state__in=Job.FINISHED_STATES).first(), timeout=60,
                    message="the prediction job")
    assert done.state == "succeeded", done.error
    assert Prediction.objects.filter(model_version=version, nucleus__image__project=project).count() == 18
