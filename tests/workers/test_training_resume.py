"""A training cancelled after stage 1 keeps that stage's checkpoint, and a new job resumes from it (real worker)."""

from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.test import Client

from tests.conftest import wait_for
from tests.webapp.dataset_helpers import wait_job
from tests.workers.training_helpers import two_taxonomy_project
from webapp.core.models import AuditLogEntry
from webapp.jobs.models import Job
from webapp.jobs.sweep import sweep_orphans
from webapp.training.models import ModelVersion
from webapp.training.operations import do_start_training

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

# Stages 1 and 3 (stage 2 takes a moment: a cancel meant for stage 3 could land after it). Stage 3 runs
# eight epochs to stage 1's one, so that it outlasts the cancel's round trip however fast the machine:
# the worker reads the cancel flag with its progress writes, at most every half second, and with one
# epoch each stage 3 once ended before the flag was read (CI saw the job succeed). The API takes one
# epoch count for all stages; per-stage epochs are a TrainConfig option, so the job starts through the
# domain function the API calls.
OPTIONS = {"epochs": {"sparse": 1, "completion": 8}, "samples_per_epoch": 1024, "batch_size": 32,
           "stages": ["sparse", "completion"]}


def test_a_training_cancelled_after_stage_1_resumes_from_its_checkpoint(owner, api_client_for, celery_worker_process,
                                                                        tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    client = api_client_for(owner)
    first_id = do_start_training(project, actor=owner, options=OPTIONS).pk
    kept = wait_for(lambda: (Job.objects.get(pk=first_id).result or {}).get("resume"), timeout=240, interval=0.1,
                    message=f"stage 1's checkpoint kept\n{celery_worker_process.log()}")
    assert client.post(f"/api/jobs/{first_id}/cancel/").status_code == 200
    first = wait_job(first_id, celery_worker_process, timeout=120)
    assert first.state == "cancelled", (first.state, first.error)
    point = first.result["resume"]
    assert point == kept and point["stage"] == "sparse" and point["remaining"] == ["completion"]
    assert point["checkpoint"] == f"projects/{project.pk}/models/resume-job-{first_id}-stage1.pt"
    checkpoint_file = Path(settings.MEDIA_ROOT) / point["checkpoint"]
    assert checkpoint_file.is_file()  # kept though the cancel removed the job's scratch folder
    assert not (Path(settings.MEDIA_ROOT) / f"scratch/job-{first_id}").exists()
    assert not ModelVersion.objects.filter(project=project).exists()
    removed = sweep_orphans(now=checkpoint_file.stat().st_mtime + 10 * 3600)  # long after: past its grace time
    assert point["checkpoint"] not in removed and checkpoint_file.is_file()  # named by the job: not an orphan
    stage_state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    history_before = stage_state["extra"]["history"]
    assert [h["stage"] for h in history_before] == ["sparse"]

    # The project page offers to resume it.
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/projects/{project.pk}/")
    assert f'data-job-id="{first_id}"' in page.content.decode()
    job_page = browser.get(f"/jobs/{first_id}/").content.decode()
    assert "It finished stage sparse before it stopped" in job_page and "resume-job-" not in job_page

    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": first_id}, format="json")
    assert response.status_code == 202, response.content
    resumed = Job.objects.get(pk=response.json()["id"])
    assert resumed.params["resume"] == {"job": first_id, "stage": "sparse"} and resumed.params["reason"] == "resume"
    assert resumed.params["options"] == {**OPTIONS, "stages": ["completion"]}
    resumed = wait_job(resumed.pk, celery_worker_process, timeout=240)
    assert resumed.state == "succeeded", resumed.error + celery_worker_process.log()

    assert "resume-job-" not in browser.get(f"/jobs/{resumed.pk}/").content.decode()  # no server path shown
    version = ModelVersion.objects.get(project=project)
    assert version.job_id == resumed.pk
    assert version.training_data["resumed_from_job"] == first_id
    assert version.training_data["stages"] == ["sparse", "completion"]
    # Its history starts with the epochs the cancelled job trained (same figures), then those it ran itself.
    assert version.history[:1] == history_before
    assert [h["stage"] for h in version.history] == ["sparse"] + ["completion"] * 8  # one entry per epoch
    assert all(set(h["val_macro_f1"]) == {"colon", "breast"} for h in version.history)
    # It did not train the finished stages again.
    assert "stage sparse finished" in first.log_tail
    assert "stage sparse finished" not in resumed.log_tail
    published = torch.load(Path(settings.MEDIA_ROOT) / version.checkpoint_file, map_location="cpu", weights_only=True)
    assert published["stage"] == "completion" and published["stage_complete"]
    # A success makes the kept checkpoint obsolete: its file and the job's resume point are gone.
    assert not checkpoint_file.exists()
    first.refresh_from_db()
    assert "resume" not in first.result
    assert AuditLogEntry.objects.filter(action="training.resume_points_discarded").exists()
    assert client.post(f"/api/projects/{project.pk}/train/", {"resume_from": first_id},
                       format="json").status_code == 409
    wait_job(resumed.result["prediction_job"], celery_worker_process)
