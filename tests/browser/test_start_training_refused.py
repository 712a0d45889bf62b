"""Start training while it cannot start (a training runs, or an import the training must wait for): the button was
disabled, which a keyboard cannot reach, and its reason was a tooltip. It stays in the Tab order, marked
aria-disabled, with the reason shown beside it and read as its description; pressing it sends nothing."""

import pytest

from tests.browser.conftest import accessible
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.training.operations import do_start_training

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

START = "#train-form button[type=submit]"


def test_start_while_a_training_runs_is_reached_by_tab_says_why_and_sends_nothing(logged_in_page, live_server, owner,
                                                                                tmp_path, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the training stays queued
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    job = do_start_training(project, actor=owner, options={})
    page = logged_in_page
    page.route("**/train/estimate/**", lambda route: route.abort())
    starts = []
    page.on("request", lambda request: starts.append(request.url) if request.method == "POST" else None)
    page.goto(f"{live_server.url}/projects/{project.pk}/")

    page.focus("#train-form input[name=predict_tta]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Start training"
    assert page.get_attribute(START, "aria-disabled") == "true"
    reason = f"Training job #{job.pk} is queued: one training at a time. Start can be pressed again once it has ended."
    assert page.inner_text("#train-busy") == reason and page.is_visible("#train-busy")
    start = accessible(page, START)
    assert start["name"] == "Start training" and start["description"].startswith(reason)

    page.keyboard.press("Enter")                      # the button
    page.focus("#train-form input[name=epochs]")
    page.keyboard.press("Enter")                      # a field: the form's implicit submission
    page.wait_for_timeout(500)                        # time for a request to leave, were one sent
    assert starts == []
    assert Job.objects.filter(project=project, kind=Job.Kind.TRAIN).count() == 1
    assert page.is_hidden("#train-error")


def test_start_while_the_project_has_no_labels_says_why(logged_in_page, live_server, owner):
    from webapp.projects.operations import do_create_project

    project = do_create_project("empty", actor=owner)
    page = logged_in_page
    page.route("**/train/estimate/**", lambda route: route.abort())
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.focus(START)
    assert page.evaluate("document.activeElement.textContent") == "Start training"
    assert "has no labelled dataset to train on: upload one first." in accessible(page, START)["description"]
