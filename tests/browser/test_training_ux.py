"""Training in the browser: the form's defaults and estimate, cancel asks first, the model version page,
and the retraining policy form (a bad cron expression is a field error; the next run and time zone)."""

from datetime import datetime, timedelta, timezone

import pytest

from mlcore.config import TrainConfig
from mlcore.estimate import default_schedule
from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.webapp.dataset_helpers import wait_job
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion, RetrainPolicy
from webapp.training.operations import do_start_training

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_cancelling_a_training_asks_first(logged_in_page, live_server, owner, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=8)
    # Queued, or running if an earlier test's worker is up: either way far from done when it is cancelled.
    job = do_start_training(project, actor=owner, options={"epochs": 500})
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    # One training at a time: Start waits for this one (the server would refuse a second).
    assert page.is_disabled("#train-form button[type=submit]")
    assert f"Training job #{job.pk} is" in page.inner_text("#train-busy")   # beside it, and its description

    # The form proposes the project's default schedule and estimates its time.
    nuclei = Nucleus.objects.filter(image__project=project).count()
    defaults = default_schedule(nuclei)
    assert page.input_value("#train-form input[name=epochs]") == str(defaults["epochs"])
    assert page.input_value("#train-form input[name=samples_per_epoch]") == str(defaults["samples_per_epoch"])
    assert f"Defaults for {nuclei} nuclei" in page.inner_text("#train-defaults")
    assert float(page.input_value("#train-form input[name=stain_jitter]")) == TrainConfig().stain_jitter == 0.025
    estimate = wait_until(page, "document.getElementById('train-estimate').textContent", timeout=60)
    assert estimate.startswith("Estimated time: about ") and "timed on this web server" in estimate, estimate
    # Two models averaged: each trains in turn, so twice the time.
    one_model = float(page.get_attribute("#train-estimate", "data-seconds"))
    assert page.input_value("#train-form input[name=ensemble]") == "1"
    page.fill("#train-form input[name=ensemble]", "2")
    wait_until(page, "document.getElementById('train-estimate').textContent.includes(', 2 models in turn,')",
               timeout=60)
    # Each figure is rounded to 0.1 s after the doubling: 3.55 s shows 3.5 (or 3.6) for one model, 7.1 for two.
    assert float(page.get_attribute("#train-estimate", "data-seconds")) == pytest.approx(2 * one_model, rel=0.01,
                                                                                         abs=0.2)

    questions = []

    def dismiss(dialog):
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#cancel-training")
    wait_for(lambda: questions, timeout=10, message="the confirmation")
    assert questions[0].startswith(f"Cancel training job #{job.pk}?")
    page.wait_for_timeout(700)  # a cancel sent anyway would have landed by now
    job.refresh_from_db()
    assert job.state in ("queued", "running") and not job.cancel_requested

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-training")
    wait_for(lambda: Job.objects.get(pk=job.pk).cancel_requested, timeout=15, message="the cancel")
    wait_for(lambda: Job.objects.get(pk=job.pk).state == "cancelled", timeout=60, message="the job to stop")
    # The page follows: the cancel button goes, then the page comes again with Start enabled.
    with page.expect_navigation(timeout=60_000):
        page.wait_for_selector("#cancel-training", state="detached", timeout=30_000)
    assert not page.is_disabled("#train-form button[type=submit]")


@pytest.mark.celery_worker
def test_the_model_version_page_shows_curves_confusion_and_what_it_was_trained_on(
        logged_in_page, live_server, owner, tmp_path, celery_worker_process):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    job = do_start_training(project, actor=owner, options={"epochs": 2, "samples_per_epoch": 64, "batch_size": 32,
                                                          "stain_jitter": 0.05})
    job = wait_job(job.pk, celery_worker_process, timeout=300)
    assert job.state == "succeeded", job.error
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.click("table.versions a:text('v1')")
    page.wait_for_url(f"{live_server.url}/projects/{project.pk}/versions/1/")

    # Per stage: the loss and each label set's validation macro-F1, one point per epoch.
    assert page.locator(".stage-curves").evaluate_all("ns => ns.map(n => n.dataset.stage)") == [
        "sparse", "correlation", "completion"]
    for stage in ("sparse", "correlation", "completion"):
        curves = page.locator(f".stage-curves[data-stage={stage}]")
        assert curves.locator("svg.curve-loss polyline").count() == 1
        assert curves.locator("svg.curve-loss circle").count() == 2
        assert curves.locator("svg.curve-f1 polyline").count() == 2  # colon and breast
        assert curves.locator("svg.curve-f1 circle").count() == 4
        assert curves.locator("figcaption").last.inner_text() == "validation macro-F1: colon breast"
        assert curves.locator("svg.curve-f1 text.x-label").all_text_contents() == ["1", "2"]

    # A confusion matrix per label set, its rows and columns named by the real classes.
    version = ModelVersion.objects.get(project=project)
    for name, classes in (("colon", ["epithelial", "inflammatory"]), ("breast", ["neoplastic", "connective", "dead"])):
        matrix = page.locator(f".label-set-metrics[data-label-set={name}] table.confusion")
        assert matrix.locator("thead th").all_inner_texts() == ["true \\ predicted", *classes]
        assert matrix.locator("tbody th").all_inner_texts() == classes
        cells = [[int(c) for c in row.locator("td").all_inner_texts()] for row in matrix.locator("tbody tr").all()]
        assert cells == version.metrics[name]["confusion"]

    # What it was trained on: the datasets and their sizes, the label sets, the parameters and the seed.
    rows = page.locator("#trained-on table.datasets tbody tr").evaluate_all(
        "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert rows == [[d.name, d.format, d.label_set.name, str(d.image_count), str(d.nucleus_count)]
                    for d in Dataset.objects.filter(project=project).order_by("id")]
    assert page.inner_text("#version-seed") == "0"
    parameters = dict(page.locator("#trained-on table.parameters tr").evaluate_all(
        "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])"))
    assert parameters["draws per epoch"] == "64" and parameters["epochs per stage"].startswith("sparse 2")
    assert parameters["HED stain jitter"] == "0.05"
    assert "epithelial, inflammatory" in page.inner_text("#trained-on table.model-label-sets")

    # The training job links to it too.
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    page.click("#training-outcome a:text('model v1')")
    page.wait_for_url(f"{live_server.url}/projects/{project.pk}/versions/1/")
    wait_job(job.result["prediction_job"], celery_worker_process)

    # The next training from the form inherits it: the form shows the active version's stain jitter.
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.input_value("#train-form input[name=stain_jitter]") == "0.05"


def test_the_policy_form_shows_a_bad_cron_and_the_next_run(logged_in_page, live_server, owner):
    from django_celery_beat.models import PeriodicTask

    from webapp.projects.operations import do_create_project

    project = do_create_project("policy page", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    form = page.locator("#policy-form")
    assert not form.locator("input[name=enabled]").is_checked()  # nothing is saved, so nothing is enabled
    assert page.inner_text("#policy-next").startswith("Not saved yet")

    form.locator("input[name=enabled]").check()
    form.locator("input[name=cron]").fill("0 25 * * *")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#policy-cron-error:not([hidden])")
    assert "hour '25' is not valid" in page.inner_text("#policy-cron-error")
    assert form.locator("input[name=cron]").get_attribute("aria-invalid") == "true"
    assert page.inner_text("#policy-status") == "Not saved: see the cron schedule."
    assert not RetrainPolicy.objects.filter(project=project).exists()

    before = datetime.now(timezone.utc)
    form.locator("input[name=cron]").fill("0 3 * * 0")
    form.locator("input[name=policy_stages][value=correlation]").uncheck()
    form.locator("input[name=policy_epochs]").fill("3")
    form.locator("input[name=activate_only_if_not_lower]").check()
    form.locator("button[type=submit]").click()
    wait_until(page, "document.getElementById('policy-status').textContent === 'Saved.'")
    assert page.locator("#policy-cron-error").is_hidden()
    assert form.locator("input[name=cron]").get_attribute("aria-invalid") is None
    sunday = before.replace(hour=3, minute=0, second=0, microsecond=0)
    while sunday <= before or sunday.weekday() != 6:
        sunday += timedelta(days=1)
    expected = f"Next scheduled training: {sunday:%a %Y-%m-%d} 03:00 UTC."
    assert expected in page.inner_text("#policy-next")
    assert "Times are in UTC" in page.inner_text("#policy-next")
    policy = RetrainPolicy.objects.get(project=project)
    assert policy.enabled and policy.cron == "0 3 * * 0"
    assert policy.options == {"stages": ["sparse", "completion"], "epochs": 3}
    assert policy.activate_only_if_not_lower
    assert PeriodicTask.objects.get(name=f"retrain-cron-project-{project.pk}").enabled
    # A change after the save is not saved, even one the browser refuses to submit (an interval of 0).
    form.locator("input[name=check_every_minutes]").fill("0")
    form.locator("button[type=submit]").click()
    assert page.inner_text("#policy-status") == "Changed: not saved yet."

    page.reload()
    assert form.locator("input[name=enabled]").is_checked()
    assert not form.locator("input[name=policy_stages][value=correlation]").is_checked()
    assert form.locator("input[name=policy_epochs]").input_value() == "3"
    assert form.locator("input[name=activate_only_if_not_lower]").is_checked()
    assert expected in page.inner_text("#policy-next")
