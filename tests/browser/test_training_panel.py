"""The project page's training section: start training, watch live progress, see the new version."""

import pytest

from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_start_training_from_the_project_page_and_watch_it(logged_in_page, live_server, owner, tmp_path,
                                                          celery_worker_process):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert "No model has been trained yet" in page.inner_text("#training")
    assert page.input_value("#train-form select[name=backbone]") == "auto"  # small on a CPU worker, larger on a GPU
    page.fill("#train-form input[name=epochs]", "1")
    # A lab with slides from another scanner; 0.025 is a value between the form's old 0.01 steps, which the
    # browser refused to submit.
    page.fill("#train-form input[name=stain_jitter]", "0.025")
    assert page.eval_on_selector("#train-form input[name=stain_jitter]", "input => input.checkValidity()")
    page.fill("#train-form input[name=grayscale]", "0.2")     # grey crops, for slides from other centres
    # Test-time augmentation of the new version's predictions: on by default, unticked here (sent as false).
    assert page.is_checked("#train-form input[name=predict_tta]")
    page.uncheck("#train-form input[name=predict_tta]")
    page.click("#train-form button[type=submit]")
    page.wait_for_selector("#training-job:not([hidden])")
    job = wait_for(lambda: Job.objects.filter(project=project, kind="train").first(), message="the training job")
    # The card names its job (it read "Training job :" when started from the page) and links to it.
    wait_until(page, f"document.querySelector('#training-job [data-field=link]').textContent === '#{job.pk}'")
    assert page.get_attribute("#training-job [data-field=link]", "href") == f"/jobs/{job.pk}/"
    # The live bar moves while the worker trains, and the page reloads on success with the version.
    wait_until(page, "document.querySelector('#training-job [data-field=detail]').textContent.includes('%')")
    # Assistive technology reads the bar as a progressbar with its value, and hears the state change.
    track = page.locator("#training-job .progress")
    assert track.get_attribute("role") == "progressbar" and track.get_attribute("aria-valuemax") == "100"
    assert 0 <= int(track.get_attribute("aria-valuenow")) <= 100
    assert page.get_attribute("#training-job [data-field=state]", "aria-live") == "polite"
    wait_for(lambda: ModelVersion.objects.filter(project=project).exists(), timeout=300,
             message=f"version published\n{celery_worker_process.log()}")
    page.wait_for_selector("table.versions", timeout=60000)
    text = page.inner_text("#training")
    assert "Active version: v1" in text
    assert "ago." in text  # the sentence ends at its words, not after a stray space ("ago .")
    assert "colon:" in text and "breast:" in text  # metrics per label set
    assert page.locator("svg.metrics-plot circle").count() == 2  # one point per label set
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
    job.refresh_from_db()
    assert job.state == "succeeded"
    assert job.params["options"]["stain_jitter"] == 0.025
    assert ModelVersion.objects.get(project=project).config["stain_jitter"] == 0.025
    assert job.params["options"]["grayscale"] == 0.2 == ModelVersion.objects.get(project=project).config["grayscale"]
    # The job's page keeps its log: the stages, the epochs, the version it published.
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    log = page.inner_text("#job [data-field=log]")
    for line in ("loaded 4 images, 80 nuclei", "stage sparse: 1 epoch", "stage sparse, epoch 1/1 done",
                 "stage completion, epoch 1/1 done", "published v1"):
        assert line in log, log
    prediction = wait_for(lambda: Job.objects.filter(project=project, kind="predict", state="succeeded").first(),
                          timeout=120, message="predictions stored")
    assert job.params["options"]["predict_tta"] is False
    assert prediction.params["tta"] is False and prediction.result["tta"] is False


def test_viewer_member_sees_no_training_controls(page, live_server, owner, member, tmp_path):
    from webapp.projects.operations import do_set_membership

    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=5)
    do_set_membership(project, member, "viewer", actor=owner)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "member")
    page.fill("input[name=password]", "pw-member")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.locator("#training").count() == 1
    assert page.locator("#train-form").count() == 0
    assert page.locator("#policy-form").count() == 0


def report(macro_f1: float, confusion: list[list[int]], classes: list[str]) -> dict:
    return {"n": sum(map(sum, confusion)), "accuracy": 0.7, "macro_f1": macro_f1, "weighted_f1": 0.7,
            "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": sum(row)}
                          for name, row in zip(classes, confusion)},
            "confusion": confusion}


def test_the_metrics_plot_and_the_confusion_matrix_are_labelled(logged_in_page, live_server, owner):
    from django.utils import timezone

    from webapp.projects.operations import do_create_project

    project = do_create_project("charts", actor=owner)
    classes = ["epithelial cell", "lymphocyte", "fibroblast"]
    for number, f1 in ((1, 0.4), (2, 0.8)):
        ModelVersion.objects.create(
            project=project, number=number, checkpoint_file=f"models/v{number}.pt", data_snapshot_at=timezone.now(),
            is_active=number == 2, label_sets=[{"name": "colon", "classes": classes}],
            metrics={"colon": report(f1, [[5, 1, 0], [2, 7, 1], [0, 3, 9]], classes)})
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    # The y axis: a label on each gridline, saying the value a point on that line has.
    labels = page.eval_on_selector_all("svg.metrics-plot text[x='2']", "ts => ts.map(t => [t.textContent, "
                                       "Number(t.getAttribute('y'))])")
    assert [text for text, _ in labels] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    at = dict(labels)
    points = page.eval_on_selector_all("svg.metrics-plot circle", "cs => cs.map(c => Number(c.getAttribute('cy')))")
    assert sorted(points) == [at["0.8"], at["0.4"]]  # v2 on the 0.8 line, v1 on the 0.4 line
    # The confusion matrix names its classes, for the true rows and the predicted columns.
    page.click("table.versions tr:first-child details summary")
    matrix = page.locator("table.versions tr:first-child table.confusion")
    assert matrix.locator("thead th").all_inner_texts()[1:] == classes
    assert matrix.locator("tbody th").all_inner_texts() == classes
    assert matrix.locator("tbody tr").nth(1).locator("td").all_inner_texts() == ["2", "7", "1"]


def test_the_checkpoint_downloads_from_the_versions_table_under_a_safe_name(logged_in_page, live_server, owner):
    """Issue 15: the checkpoint came as application/vnd.snesdev-page-table, named with a colon and spaces."""
    from pathlib import Path

    from django.conf import settings
    from django.utils import timezone

    from webapp.projects.operations import do_create_project

    project = do_create_project("Colon: trial run 2", actor=owner)
    path = Path(settings.MEDIA_ROOT) / "models" / f"p{project.pk}" / "v1.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file=str(path.relative_to(settings.MEDIA_ROOT)),
                                data_snapshot_at=timezone.now(), is_active=True)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    with page.expect_response(lambda r: r.url.endswith("/versions/1/checkpoint/")) as answer, \
            page.expect_download() as download:
        page.click("table.versions a:text-is('checkpoint')")
    assert answer.value.headers["content-type"] == "application/octet-stream"
    assert download.value.suggested_filename == "Colon_trial_run_2-v1.pt"
    assert Path(download.value.path()).read_bytes() == path.read_bytes()


def test_the_warning_of_a_lower_active_version_rolls_back_to_the_one_it_replaced(logged_in_page, live_server, owner):
    from django.utils import timezone

    from webapp.projects.operations import do_create_project

    project = do_create_project("rollback", actor=owner)
    for number in (1, 2):
        compared = {"version": 1, "label_sets": {"colon": {"n": 40, "macro_f1": 0.61, "previous_macro_f1": 0.66,
                                                           "accuracy": 0.7, "previous_accuracy": 0.72,
                                                           "difference_interval": [-0.09, -0.01]}}}
        ModelVersion.objects.create(project=project, number=number, checkpoint_file=f"models/v{number}.pt",
                                    data_snapshot_at=timezone.now(), is_active=number == 2,
                                    training_data={"compared_with": compared} if number == 2 else {})
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert "The active version v2 scored lower than v1" in page.locator("#newest-comparison").inner_text()
    # Making a version active asks first: declined, nothing changes.
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("#newest-comparison button:text-is('Make v1 active')")
    page.wait_for_timeout(500)
    assert questions == ["Make v1 the active model instead of v2? The review queues, the gallery and new "
                         "predictions use it from now on; v2 stays and can be made active again."]
    assert ModelVersion.objects.get(project=project, is_active=True).number == 2
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():   # the page reloads once the version is active, and says so
        page.click("#newest-comparison button:text-is('Make v1 active')")
    assert page.locator("#training > p strong").first.inner_text() == "v1"
    assert page.locator("main > p.flash.success").inner_text() == "Model v1 is now active (was v2)."
    assert ModelVersion.objects.get(project=project, is_active=True).number == 1
    # Now the warning says the newest version is not active, and offers it back.
    assert "v2, the newest version, is not the active one" in page.locator("#newest-comparison").inner_text()
    with page.expect_navigation():
        page.click("#newest-comparison button:text-is('Make v2 active')")
    assert ModelVersion.objects.get(project=project, is_active=True).number == 2
