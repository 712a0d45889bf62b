"""The keyboard's place when a training starts and ends from the project page. Start is disabled once pressed
(one training at a time), which dropped the focus to the page: a keyboard user started again from the top and a
screen reader said nothing of the job. The focus goes to the job's card (its state and progress), and stays on the
page's training section when the job ends and the page loads again."""

import pytest

from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACTIVE = "document.activeElement === document.body ? 'body' : (document.activeElement.id || document.activeElement.outerHTML.slice(0, 80))"


def test_pressing_start_keeps_the_focus_on_the_training_job(logged_in_page, live_server, owner, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the training stays queued until cancelled
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")

    # By keyboard: from the last option, Tab to Start and press Enter.
    page.focus("#train-form input[name=predict_tta]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Start training"
    page.keyboard.press("Enter")
    page.wait_for_selector("#training-job:not([hidden])")
    assert page.is_disabled("#train-form button[type=submit]")
    wait_until(page, f"({ACTIVE}) === 'training-job'")
    # What a screen reader says there: the card, named by its title line (the job and its state).
    job = wait_for(lambda: Job.objects.filter(project=project, kind=Job.Kind.TRAIN).first(), message="the job")
    wait_until(page, f"document.getElementById('training-job-title').textContent.includes('#{job.pk}')")
    assert page.get_attribute("#training-job", "aria-labelledby") == "training-job-title"

    # Tab goes on into the card, to its Cancel; cancelled there, the job ends, the button goes and the page
    # loads again with the focus on its training section rather than at the top.
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.evaluate(ACTIVE) == "cancel-training":
            break
    assert page.evaluate(ACTIVE) == "cancel-training"
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation(timeout=30_000):
        page.keyboard.press("Enter")
        wait_for(lambda: Job.objects.get(pk=job.pk).state == Job.State.CANCELLED, message="the cancel")
    page.wait_for_load_state("load")
    wait_until(page, f"({ACTIVE}) === 'training'")
    assert not page.is_disabled("#train-form button[type=submit]")
