"""The project page opened while an import into the project runs: Start training is disabled and says why, and
the page loads itself again once the import has ended, with Start enabled."""

import pytest

from tests.browser.test_upload_page import wait_in_page
from tests.workers.training_helpers import labelled_dataset_row
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_start_is_enabled_by_itself_once_the_import_has_ended(logged_in_page, live_server, owner, media_root):
    project = do_create_project("waiting", actor=owner)
    labelled_dataset_row(project)
    importing = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner, state=Job.State.RUNNING,
                                   params={"name": "nucls", "format": "seed"})
    page = logged_in_page
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.is_disabled("#train-form button[type=submit]")
    assert page.inner_text("#train-not-ready") == (
        f"The import of 'nucls' into project 'waiting' is still running (job {importing.pk}): start the training "
        "once it has finished, so that it trains on that dataset too.")
    page.wait_for_timeout(2500)   # the page polls the import meanwhile and stays as it is
    assert page.is_disabled("#train-form button[type=submit]")

    Job.objects.filter(pk=importing.pk).update(state=Job.State.SUCCEEDED)   # the worker's end of it
    wait_in_page(page, "document.querySelector('#train-form button[type=submit]')?.getAttribute('aria-disabled') === null", timeout=15)
    assert page.query_selector("#train-not-ready") is None
    assert errors == []   # jobs.js took the sentence for a job card: "Cannot set properties of null"
