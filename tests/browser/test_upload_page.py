"""The project page's upload form in real Chromium, with a real worker: what the page shows while and
after an import runs, for an import that succeeds and for one that fails."""

from __future__ import annotations

import pytest

from mlcore.synthetic import generate_dataset
from tests.browser.conftest import wait_until
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
