"""A job's page cancels it, as a person would: the confirmation says what a cancel of that kind leaves, and the
page shows the job cancelled. Imports, predictions, inferences and deletions had no cancel but the API's."""

import pytest

from tests.browser.conftest import wait_until
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_queued_import_is_cancelled_from_its_page(logged_in_page, live_server, owner):
    project = do_create_project("Cancel lab", actor=owner)
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner,
                             params={"name": "colon", "format": "seed"})   # no worker here: it stays queued
    page = logged_in_page
    errors, questions = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def answer(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.click("#cancel-job")
    wait_until(page, "() => document.querySelector('#job [data-field=state]').textContent.trim() === 'cancelled'")
    assert questions == [f"Cancel job #{job.pk} (dataset import)? Nothing of the import is kept."]
    assert wait_until(page, "() => !document.getElementById('cancel-job')")
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.cancel_requested
    assert job.log_tail == "cancelled before a worker took it"
    assert not errors, errors


def test_a_deletion_card_blocked_by_a_job_comes_back_when_the_job_ends(logged_in_page, live_server, owner, tmp_path):
    """"Not now: a dataset import is queued (job N)" stayed on the page after the import had ended."""
    from tests.webapp.viewer_project import build_viewer_project

    vp = build_viewer_project(owner, tmp_path / "sources", n_images=1, nuclei=4, size=64)
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=vp.project, created_by=owner,
                             params={"name": "more", "format": "seed"})
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/")
    assert page.is_visible("#delete-blocked") and not page.query_selector("form[data-confirm-name]")
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)   # the import ends elsewhere
    page.wait_for_selector("form[data-confirm-name]", timeout=20000)   # the page loaded itself again
    assert not page.query_selector("#delete-blocked")


def test_a_cancel_that_comes_after_the_job_ended_says_so(logged_in_page, live_server, owner):
    """The API answers 409 with the job's state (it answered 200 and changed nothing): the page says that the job had
    ended, and the button goes."""
    project = do_create_project("Cancel late", actor=owner)
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner,
                             params={"name": "colon", "format": "seed"})
    page = logged_in_page
    page.on("dialog", lambda dialog: dialog.accept())
    # The card's next look would show the ended job and take the button away first: it is held back.
    page.route(f"**/api/jobs/{job.pk}/", lambda route: None)
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)   # ended elsewhere
    page.click("#cancel-job")
    wait_until(page, "() => document.getElementById('cancel-status').textContent === "
                     "'Not cancelled: the job had already succeeded.'")
    assert page.locator("#cancel-job").count() == 0
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED and not job.cancel_requested
