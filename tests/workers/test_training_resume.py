"""A training cancelled in stage 3 keeps its last finished epoch's checkpoint, and a new job resumes from it at the
next epoch (real worker)."""

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
# eight epochs to stage 1's one, so that, cancelled once its first epoch is kept, it outlasts the cancel's round
# trip however fast the machine:
# the worker reads the cancel flag with its progress writes, at most every half second, and with one
# epoch each stage 3 once ended before the flag was read (CI saw the job succeed). The API takes one
# epoch count for all stages; per-stage epochs are a TrainConfig option, so the job starts through the
# domain function the API calls.
OPTIONS = {"epochs": {"sparse": 1, "completion": 8}, "samples_per_epoch": 1024, "batch_size": 32,
           "stages": ["sparse", "completion"]}


def test_a_training_cancelled_mid_stage_resumes_from_its_last_epoch(owner, api_client_for, celery_worker_process,
                                                                    tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    client = api_client_for(owner)
    first_id = do_start_training(project, actor=owner, options=OPTIONS).pk
    # Cancelled once stage 3 has an epoch kept; the cancel lands an epoch or a few later.
    wait_for(lambda: ((Job.objects.get(pk=first_id).result or {}).get("resume") or {}).get("stage") == "completion",
             timeout=240, interval=0.1, message=f"an epoch of stage 3 kept\n{celery_worker_process.log()}")
    assert client.post(f"/api/jobs/{first_id}/cancel/").status_code == 200
    first = wait_job(first_id, celery_worker_process, timeout=120)
    assert first.state == "cancelled", (first.state, first.error)
    point = first.result["resume"]
    done = point["epoch"]
    assert point["stage"] == "completion" and 1 <= done < 8 and point["epochs"] == 8
    assert point["done"] == ["sparse"] and point["remaining"] == ["completion"]
    assert point["checkpoint"] == f"projects/{project.pk}/models/resume-job-{first_id}-stage3.pt"
    checkpoint_file = Path(settings.MEDIA_ROOT) / point["checkpoint"]
    assert checkpoint_file.is_file()  # kept though the cancel removed the job's scratch folder
    assert not (Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/models/resume-job-{first_id}-stage1.pt").exists()
    assert not (Path(settings.MEDIA_ROOT) / f"scratch/job-{first_id}").exists()
    assert not ModelVersion.objects.filter(project=project).exists()
    removed = sweep_orphans(now=checkpoint_file.stat().st_mtime + 10 * 3600)  # long after: past its grace time
    assert point["checkpoint"] not in removed and checkpoint_file.is_file()  # named by the job: not an orphan
    kept_state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    assert (kept_state["stage"], kept_state["epoch"], kept_state["stage_complete"]) == ("completion", done - 1, False)
    history_before = kept_state["extra"]["history"]
    assert [h["stage"] for h in history_before] == ["sparse"] + ["completion"] * done

    # The project page offers to resume it.
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/projects/{project.pk}/").content.decode()
    assert f'data-job-id="{first_id}"' in page and f"from epoch {done + 1} of completion" in page
    job_page = browser.get(f"/jobs/{first_id}/").content.decode()
    assert f"It finished epoch {done} of 8 of stage completion before it stopped" in job_page
    assert "resume-job-" not in job_page

    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": first_id}, format="json")
    assert response.status_code == 202, response.content
    resumed = Job.objects.get(pk=response.json()["id"])
    assert resumed.params["resume"] == {"job": first_id, "stage": "completion"}
    assert resumed.params["reason"] == "resume"
    assert resumed.params["options"] == {**OPTIONS, "stages": ["completion"]}
    resumed = wait_job(resumed.pk, celery_worker_process, timeout=240)
    assert resumed.state == "succeeded", resumed.error + celery_worker_process.log()

    assert "resume-job-" not in browser.get(f"/jobs/{resumed.pk}/").content.decode()  # no server path shown
    version = ModelVersion.objects.get(project=project)
    assert version.job_id == resumed.pk
    assert version.training_data["resumed_from_job"] == first_id
    assert version.training_data["stages"] == ["sparse", "completion"]
    # Its history starts with the epochs the cancelled job trained (same figures), then those it ran itself.
    assert version.history[:1 + done] == history_before
    assert [h["stage"] for h in version.history] == ["sparse"] + ["completion"] * 8  # one entry per epoch
    assert all(set(h["val_macro_f1"]) == {"colon", "breast"} for h in version.history)
    # It trained neither stage 1 nor stage 3's first epochs again.
    assert "stage sparse finished" in first.log_tail
    assert "stage sparse finished" not in resumed.log_tail
    assert f"stage completion resumes at epoch {done + 1}" in resumed.log_tail
    published = torch.load(Path(settings.MEDIA_ROOT) / version.checkpoint_file, map_location="cpu", weights_only=True)
    assert published["stage"] == "completion" and published["stage_complete"]
    # A success makes the kept checkpoint obsolete: its file and the job's resume point are gone.
    assert not checkpoint_file.exists()
    first.refresh_from_db()
    assert "resume" not in first.result
    assert AuditLogEntry.objects.filter(action="training.resume_points_discarded").exists()
    assert AuditLogEntry.objects.filter(action="training.epoch_kept").exists()
    assert client.post(f"/api/projects/{project.pk}/train/", {"resume_from": first_id},
                       format="json").status_code == 409
    wait_job(resumed.result["prediction_job"], celery_worker_process)
