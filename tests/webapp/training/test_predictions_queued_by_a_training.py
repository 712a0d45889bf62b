"""The prediction job a finished training queues by itself reads as the training's, not as the person's who
started the training: it was credited to them (created_by, the activity's "owner started a prediction", "By
owner" on the job cards). Who may cancel it stays: curators, the training's starter among them. (That the
training queues it so: tests/webapp/training/test_partial_predictions.py, which runs one.)"""

import pytest
from django.test import Client
from django.utils import timezone

from webapp.jobs import operations as job_operations
from webapp.jobs.access import CANCEL_ROLE, START_ROLE
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership
from webapp.training.models import ModelVersion
from webapp.training.operations import do_start_prediction, do_start_training

pytestmark = pytest.mark.django_db


def test_a_trainings_prediction_job_reads_as_queued_by_it(owner, member, monkeypatch, api_client_for):
    from tests.workers.training_helpers import labelled_dataset_row

    project = do_create_project("queued", actor=owner)
    labelled_dataset_row(project)
    monkeypatch.setattr(job_operations, "_send", lambda job: None)   # no worker: the jobs stay queued
    training = do_start_training(project, actor=owner, options={"stages": ["sparse"]})
    Job.objects.filter(pk=training.pk).update(state=Job.State.SUCCEEDED)
    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)
    prediction = do_start_prediction(version, queued_by=training)   # as the training's runner queues it
    assert prediction.kind == Job.Kind.PREDICT and prediction.created_by is None
    assert prediction.params["reason"] == "training" and prediction.params["started_by_job"] == training.pk

    # The job resource names the training that queued it.
    client = api_client_for(owner)
    resource = client.get(f"/api/jobs/{prediction.pk}/").json()
    assert resource["queued_by"] == {"id": training.pk, "reason": "training",
                                     "url": f"http://testserver/api/jobs/{training.pk}/"}
    assert client.get(f"/api/jobs/{training.pk}/").json()["queued_by"] is None   # a person started it

    # The activity: no person, the training queued it.
    rows = client.get(f"/api/projects/{project.pk}/activity/?kind=models").json()["results"]
    queued = next(row for row in rows if row["action"] == "job.enqueued" and row["target"] == f"jobs.job:{prediction.pk}")
    assert queued["actor"] is None and queued["words"] == f"Training job {training.pk} queued a prediction"
    assert queued["details"] == {"kind": "predict", "reason": "training", "started_by_job": training.pk}
    started = next(row for row in rows if row["action"] == "job.enqueued" and row["target"] == f"jobs.job:{training.pk}")
    assert started["actor"] == owner.username and started["words"] == "started a training"

    # The job's page and the job cards say so, with a link to the training.
    browser = Client()
    browser.force_login(owner)
    link = f'<a href="/jobs/{training.pk}/">training job {training.pk}</a>'
    assert f"queued by {link}" in browser.get(f"/jobs/{prediction.pk}/").content.decode()
    assert f"<td>{link}</td>" in browser.get(f"/projects/{project.pk}/").content.decode()

    # Who may cancel it is unchanged: curators (the training's starter is one), as the start of a prediction
    # needs; not a reviewer.
    assert START_ROLE[Job.Kind.PREDICT] == CANCEL_ROLE == Role.CURATOR
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    assert api_client_for(member).post(f"/api/jobs/{prediction.pk}/cancel/").status_code == 403
    assert client.post(f"/api/jobs/{prediction.pk}/cancel/").status_code in (200, 202)
    assert Job.objects.get(pk=prediction.pk).state == Job.State.CANCELLED
