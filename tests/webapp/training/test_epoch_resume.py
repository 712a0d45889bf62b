"""A training keeps its last finished epoch as well as its finished stages: cancelled, failed or delivered again
after its worker was lost mid-stage, it goes on at the next epoch and ends with the very model an uninterrupted
training makes (webapp.training.runner, mlcore's exact resume)."""

import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.types import Cancelled
from tests.workers.training_helpers import two_taxonomy_project
from webapp.core import media
from webapp.core.audit import target_of
from webapp.core.models import AuditLogEntry
from webapp.jobs.models import Job
from webapp.training.estimate import training_estimate
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db

# Three epochs of stage 1, two of stage 3: a cancel after stage 1's second epoch is in the middle of a stage.
OPTIONS = {"epochs": {"sparse": 3, "completion": 2}, "samples_per_epoch": 64, "batch_size": 32,
           "stages": ["sparse", "completion"], "predict_tta": False}


def start(project, owner, **params) -> Job:
    return Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                              params={"options": OPTIONS, **params})


def run(job, logs=None, should_stop=lambda: False) -> ModelVersion:
    def report(percent, log=None, **details):
        if logs is not None and log:
            logs.append(log)
    result = run_training(job, report, should_stop)
    return ModelVersion.objects.get(pk=result["model_version_id"])


def point_of(job) -> dict | None:
    return (Job.objects.get(pk=job.pk).result or {}).get("resume")


def stop_after(job, stage: str, epoch: int):
    """should_stop: true once the job's kept point is ``epoch`` epochs into ``stage``."""
    return lambda: (point_of(job) or {}).get("stage") == stage and (point_of(job) or {}).get("epoch") == epoch


def weights(version: ModelVersion) -> list[torch.Tensor]:
    return list(load_checkpoint(media.local_path(version.checkpoint_file)).model.state_dict().values())


@pytest.fixture
def straight(owner, media_root, tmp_path) -> ModelVersion:
    """The same data trained without a stop, in a project of its own."""
    project = two_taxonomy_project(owner, tmp_path / "straight", images=2, nuclei=20, name="straight")
    return run(start(project, owner))


def test_a_training_cancelled_mid_stage_resumes_at_its_next_epoch(owner, media_root, tmp_path, straight, client):
    project = two_taxonomy_project(owner, tmp_path / "data", images=2, nuclei=20)
    first = start(project, owner)
    with pytest.raises(Cancelled):
        run(first, should_stop=stop_after(first, "sparse", 2))
    point = point_of(first)
    assert {k: point[k] for k in ("stage", "epoch", "epochs", "done", "remaining")} == {
        "stage": "sparse", "epoch": 2, "epochs": 3, "done": [], "remaining": ["sparse", "completion"]}
    kept = load_checkpoint(media.local_path(point["checkpoint"]))
    assert (kept.stage, kept.epoch, kept.stage_complete) == ("sparse", 1, False)
    # One audit row per kept epoch; the stage's first epoch's point was replaced by its second's (same file).
    assert list(AuditLogEntry.objects.filter(action="training.epoch_kept", target=target_of(first))
                .values_list("details__epoch", flat=True).order_by("id")) == [1, 2]

    first.state = Job.State.CANCELLED
    first.save(update_fields=["state"])
    client.force_login(owner)
    panel = client.get(f"/projects/{project.pk}/").content.decode()
    assert "after epoch 2 of 3 of stage 1 (sparse)" in panel
    assert "Resume: run sparse, completion from epoch 3 of sparse" in panel
    job_page = client.get(f"/jobs/{first.pk}/").content.decode()
    assert "It finished epoch 2 of 3 of stage sparse before it stopped" in job_page and "resume-job-" not in job_page
    # What is left to run: one epoch of stage 1, then stage 3.
    estimate = training_estimate(project, {**OPTIONS, "epochs": 3, "stages": point["remaining"]}, resume_point=point)
    whole = training_estimate(project, {**OPTIONS, "epochs": 3})
    assert estimate["per_stage"]["sparse"] < whole["per_stage"]["sparse"]

    logs = []
    resumed = start(project, owner, resume={"job": first.pk, "stage": "sparse"},
                    options={**OPTIONS, "stages": point["remaining"]})
    version = run(resumed, logs)
    assert any(f"going on from job {first.pk}'s epoch 2 of 3 of stage sparse" in log for log in logs), logs
    assert version.training_data["stages"] == ["sparse", "completion"]
    assert version.training_data["resumed_from_job"] == first.pk
    # The data as the first epochs read it: reviews made before the resume were not all learnt, so the
    # retraining threshold still counts them.
    assert version.data_snapshot_at.isoformat() == point["snapshot_at"]
    assert version.data_snapshot_at < resumed.created_at
    assert f'resumed from where job <a href="/jobs/{first.pk}/">' in client.get(
        f"/projects/{project.pk}/versions/{version.number}/").content.decode()
    assert [h["stage"] for h in version.history] == ["sparse"] * 3 + ["completion"] * 2
    assert [h["loss"] for h in version.history] == [h["loss"] for h in straight.history]
    assert all(torch.equal(a, b) for a, b in zip(weights(version), weights(straight)))
    assert point_of(first) is None   # a success discards it (its file goes as the transaction commits)


def test_a_training_delivered_again_after_a_lost_worker_goes_on_from_its_own_last_epoch(owner, media_root, tmp_path,
                                                                                        straight):
    project = two_taxonomy_project(owner, tmp_path / "data", images=2, nuclei=20)
    job = start(project, owner)
    Job.objects.filter(pk=job.pk).update(attempts=1)
    # The first attempt stops in stage 3, after its first epoch (the worker lost: nothing runs after it).
    with pytest.raises(Cancelled):
        run(job, should_stop=stop_after(job, "completion", 1))
    point = point_of(job)
    assert (point["stage"], point["epoch"], point["done"], point["remaining"]) == (
        "completion", 1, ["sparse"], ["completion"])

    Job.objects.filter(pk=job.pk).update(attempts=2)   # as the worker's second delivery counts it
    logs = []
    version = run(Job.objects.get(pk=job.pk), logs)
    assert any("going on from its lost attempt's epoch 1 of 2 of stage completion" in log for log in logs), logs
    assert not any("stage sparse finished" in log for log in logs)   # stage 1 was not trained again
    assert version.training_data["stages"] == ["sparse", "completion"]
    assert version.training_data["resumed_from_job"] is None
    assert [h["loss"] for h in version.history] == [h["loss"] for h in straight.history]
    assert all(torch.equal(a, b) for a, b in zip(weights(version), weights(straight)))


def test_a_first_attempt_starts_afresh_whatever_its_result_holds(owner, media_root, tmp_path, straight):
    """Only a delivery after a lost worker goes on by itself: a first attempt never reads a point."""
    project = two_taxonomy_project(owner, tmp_path / "data", images=2, nuclei=20)
    job = start(project, owner)
    with pytest.raises(Cancelled):
        run(job, should_stop=stop_after(job, "sparse", 1))
    Job.objects.filter(pk=job.pk).update(attempts=1)
    logs = []
    version = run(Job.objects.get(pk=job.pk), logs)
    assert not any("going on" in log for log in logs)
    assert all(torch.equal(a, b) for a, b in zip(weights(version), weights(straight)))


def test_a_resume_onto_as_many_other_nuclei_is_refused(owner, media_root, tmp_path):
    """Only the count was compared: a dataset replaced by another as large resumed with the saved validation rows
    pointing at nuclei the stage had trained on."""
    from webapp.datasets.models import Image
    from webapp.training.operations import NotResumable

    project = two_taxonomy_project(owner, tmp_path / "data", images=2, nuclei=20)
    first = start(project, owner)
    with pytest.raises(Cancelled):
        run(first, should_stop=stop_after(first, "sparse", 2))
    first.state = Job.State.CANCELLED
    first.save(update_fields=["state"])
    image = Image.objects.filter(project=project).order_by("id").first()
    Image.objects.filter(pk=image.pk).update(name=f"{image.name}-other")   # as many nuclei, another image
    resumed = start(project, owner, resume={"job": first.pk, "stage": "sparse"},
                    options={**OPTIONS, "stages": point_of(first)["remaining"]})
    with pytest.raises(NotResumable, match="not those job .* trained on"):
        run(resumed)
