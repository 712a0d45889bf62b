"""A training is refused up front (409, and a disabled Start button saying why) while an import into its
project is queued or running, and where the project has no labelled dataset: it reads the project's
datasets once as it starts, so it would train without the dataset being imported, or find none and fail."""

import pytest

from tests.workers.training_helpers import labelled_dataset_row
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.operations import do_set_retrain_policy, maybe_retrain

pytestmark = pytest.mark.django_db(transaction=True)


def importing(project, owner, state=Job.State.RUNNING, **params) -> Job:
    """An import job as the worker holds it while it reads the user's files."""
    return Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner, state=state,
                              params={"name": "nucls", "format": "seed", **params})


def train(client, project):
    return client.post(f"/api/projects/{project.pk}/train/", {"epochs": 1}, format="json")


def test_a_training_is_refused_while_an_import_into_the_project_runs(owner, media_root, api_client_for):
    project = do_create_project("waits", actor=owner)
    labelled_dataset_row(project)
    client = api_client_for(owner)
    for state in (Job.State.QUEUED, Job.State.RUNNING):
        job = importing(project, owner, state=state)
        response = train(client, project)
        assert response.status_code == 409, response.content
        assert response.json() == {
            "detail": f"The import of 'nucls' into project 'waits' is still {state} (job {job.pk}): start the "
                      "training once it has finished, so that it trains on that dataset too.",
            "job_id": job.pk}
        assert not Job.objects.filter(kind=Job.Kind.TRAIN).exists()
        job.state = Job.State.SUCCEEDED
        job.save()

    # Finished imports (whatever their end) and another project's import are no reason to wait.
    importing(project, owner, state=Job.State.FAILED)
    importing(do_create_project("other", actor=owner), owner)
    response = train(client, project)
    assert response.status_code == 202, response.content
    client.post(f"/api/jobs/{response.json()['id']}/cancel/")


def test_a_slide_import_holds_a_training_back_as_a_tile_import_does(owner, media_root, api_client_for, settings):
    """A training reads the slides' labelled nuclei too: it waits for a slide being imported, unless slides are
    not trained on (SLIDE_TRAINING_MAX_NUCLEI 0)."""
    project = do_create_project("slides", actor=owner)
    labelled_dataset_row(project)
    job = importing(project, owner, slide=True)
    client = api_client_for(owner)
    response = train(client, project)
    assert (response.status_code, response.json()["job_id"]) == (409, job.pk)
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
    response = train(client, project)
    assert response.status_code == 202, response.content
    client.post(f"/api/jobs/{response.json()['id']}/cancel/")


def test_a_project_without_a_labelled_dataset_is_told_to_upload_one(owner, media_root, api_client_for, settings):
    project = do_create_project("empty", actor=owner)
    client = api_client_for(owner)
    refused = {"detail": "Project 'empty' has no labelled dataset to train on: upload one first."}
    response = train(client, project)
    assert (response.status_code, response.json()) == (409, refused)

    # An unlabelled dataset (masks only) is nothing to train on either,
    unlabelled = labelled_dataset_row(project, "masks")
    Dataset.objects.filter(pk=unlabelled.pk).update(label_set=None)
    response = train(client, project)
    assert (response.status_code, response.json()) == (409, refused)
    # nor is a labelled slide where slides are not trained on, and the answer says why;
    slide = labelled_dataset_row(project, "slide")
    Dataset.objects.filter(pk=slide.pk).update(format=Dataset.Format.SLIDE)
    settings.SLIDE_TRAINING_MAX_NUCLEI = 0
    response = train(client, project)
    assert (response.status_code, response.json()) == (409, {
        "detail": "Project 'empty' has no labelled dataset to train on (SLIDE_TRAINING_MAX_NUCLEI is 0: its "
                  "whole-slide images are not trained on): upload one first."})
    assert not Job.objects.filter(kind=Job.Kind.TRAIN).exists()
    # where they are (the default), the slide is something to train on.
    settings.SLIDE_TRAINING_MAX_NUCLEI = 40_000
    response = train(client, project)
    assert response.status_code == 202, response.content
    client.post(f"/api/jobs/{response.json()['id']}/cancel/")


def test_the_train_form_says_why_it_cannot_start_yet(owner, media_root, client):
    project = do_create_project("form", actor=owner)
    client.force_login(owner)

    def start_button() -> str:
        page = client.get(f"/projects/{project.pk}/").content.decode()
        form = page[page.index('<form id="train-form"'):]
        return form[form.index('<button type="submit"'):form.index("</button>")]

    # aria-disabled, not disabled: the button keeps the focus and is described by why it does nothing.
    assert 'aria-disabled="true"' in start_button() and " disabled" not in start_button()
    assert 'aria-describedby="train-not-ready train-busy train-estimate"' in start_button()
    assert "has no labelled dataset to train on: upload one first." in client.get(
        f"/projects/{project.pk}/").content.decode()

    labelled_dataset_row(project)
    job = importing(project, owner)
    assert 'aria-disabled="true"' in start_button()
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert f"is still running (job {job.pk}): start the training once it has finished" in page

    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
    assert "disabled" not in start_button()
    # The estimate is the button's description, read when it is reached, not a live region read at every change
    # (train-busy is empty while no training runs).
    assert 'aria-describedby="train-busy train-estimate"' in start_button()
    assert '<p class="estimate" id="train-estimate"></p>' in client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="train-not-ready"' not in client.get(f"/projects/{project.pk}/").content.decode()


def test_a_scheduled_retraining_waits_for_a_running_import(owner, media_root):
    project = do_create_project("scheduled", actor=owner)
    labelled_dataset_row(project)
    do_set_retrain_policy(project, actor=owner, enabled=True, cron="0 3 * * *")
    job = importing(project, owner)
    assert maybe_retrain(project, reason="schedule") is None   # the next scheduled run tries again
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
    started = maybe_retrain(project, reason="schedule")
    assert started is not None and started.kind == Job.Kind.TRAIN
    started.delete()
