"""A cancel asked for while a job reports nothing (a training scoring its new version, one image's inference)
stops it: the worker reads the job's cancel flag between its progress writes too, and nothing is published
or written after it. Before, the flag came only with a progress write: a training cancelled while it scored
published its version, made it active and queued its predictions."""

import pytest

from mlcore.types import Cancelled
from tests.webapp.training import test_prediction_tta as tta_tests
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.jobs.models import Job
from webapp.training import runner
from webapp.training.models import ModelVersion
from workers.handlers import HANDLERS, JobContext

# Progress is written on a second connection (webapp.jobs.operations.progress_database): committed rows only.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "progress"])

project_with_model = tta_tests.project_with_model   # the fixture: a project with an active random-weight model


def cancel(job: Job) -> None:
    """What the API's cancel does to the row, from another process."""
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)


def running(job: Job) -> JobContext:
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    return JobContext(job, min_interval_s=0.0)   # every check reads the row: no half-second window to race


def test_the_flag_is_read_between_progress_writes(owner):
    job = Job.objects.create(kind=Job.Kind.TRAIN, created_by=owner, params={})
    context = running(job)
    assert context.stop_requested() is False
    cancel(job)
    assert context.stop_requested(at_once=True) is True and context.cancel_requested
    with pytest.raises(Cancelled):
        context.check_cancel()


def test_a_training_cancelled_while_it_scores_publishes_nothing(owner, media_root, tmp_path, monkeypatch):
    project = two_taxonomy_project(owner, tmp_path)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"]}})
    real = runner.validation_metrics

    def scored_then_cancelled(*args, **kwargs):
        answer = real(*args, **kwargs)
        cancel(job)   # the user's click lands while the last nuclei are scored: no progress is written after
        return answer

    monkeypatch.setattr(runner, "validation_metrics", scored_then_cancelled)
    with pytest.raises(Cancelled):
        HANDLERS[Job.Kind.TRAIN](running(job))
    assert not ModelVersion.objects.filter(project=project).exists()


def test_an_inference_cancelled_while_it_classifies_writes_no_files(project_with_model, owner, api_client_for,
                                                                   monkeypatch):
    from webapp.datasets.models import Image

    project, version, model = project_with_model
    png, mask = tta_tests._inference_files(Image.objects.filter(project=project).order_by("id").first())
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/", {"image": png, "mask": mask},
                                          format="multipart")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    cancel(job)   # before the first batch: the old handler classified the whole image and wrote its files
    with pytest.raises(Cancelled):
        HANDLERS[Job.Kind.INFER](running(job))
    from webapp.core import media

    assert not media.work_path(f"{job.params['folder']}/out").exists()
