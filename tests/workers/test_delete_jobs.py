"""The deletion jobs on a real Celery worker: a dataset's, then the whole project's, rows and files go;
everything else stays; the project's deletion job outlives the project for the one who asked."""

from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.webapp.dataset_helpers import project_files, wait_job
from tests.webapp.viewer_project import build_viewer_project, review
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelSet, Nucleus
from webapp.jobs.models import Job
from webapp.projects.models import Membership, Project, Role
from webapp.projects.operations import do_set_membership
from webapp.review.models import ReviewLease
from webapp.training.models import ModelVersion, Prediction
from webapp.training.operations import do_set_retrain_policy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def rows_of(project_id: int) -> dict[str, int]:
    return {
        "datasets": Dataset.objects.filter(project_id=project_id).count(),
        "images": Image.objects.filter(project_id=project_id).count(),
        "nuclei": Nucleus.objects.filter(image__project_id=project_id).count(),
        "labels": Label.objects.filter(label_set__project_id=project_id).count(),
        "current": CurrentLabel.objects.filter(label_set__project_id=project_id).count(),
        "predictions": Prediction.objects.filter(model_version__project_id=project_id).count(),
        "leases": ReviewLease.objects.filter(label_set__project_id=project_id).count(),
        "label_sets": LabelSet.objects.filter(project_id=project_id).count(),
        "versions": ModelVersion.objects.filter(project_id=project_id).count(),
        "members": Membership.objects.filter(project_id=project_id).count(),
    }


def with_predictions_and_a_lease(vp, owner) -> None:
    """Rows that hang off the nuclei of both datasets: predictions, a cross-taxonomy review, a lease."""
    version = ModelVersion.objects.create(project=vp.project, number=1, checkpoint_file=f"projects/{vp.project.pk}/models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)
    checkpoint = Path(settings.MEDIA_ROOT) / version.checkpoint_file
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"a checkpoint")
    for nucleus in Nucleus.objects.filter(image__project=vp.project):
        Prediction.objects.create(nucleus=nucleus, label_set=vp.alpha_set, model_version=version, class_index=0,
                                  probability=0.9, base_probs=[0.9, 0.05, 0.05], mlp_probs=None,
                                  least_confidence=0.1, margin=0.8, entropy=0.2, disagreement=0.0)
    beta_nucleus = Nucleus.objects.filter(image__dataset=vp.beta).order_by("id").first()
    review(beta_nucleus, vp.alpha_set, 2, author=owner)  # a beta nucleus labelled in alpha's taxonomy
    ReviewLease.objects.create(nucleus=Nucleus.objects.filter(image__dataset=vp.alpha).first(),
                               label_set=vp.alpha_set, user=owner, expires_at=timezone.now(),
                               claimed_at=timezone.now())


def test_deleting_a_dataset_then_the_project_removes_their_rows_and_files(owner, make_user, tmp_path, api_client_for,
                                                                          celery_worker_process):
    from django_celery_beat.models import PeriodicTask

    vp = build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=6, size=96)
    keeper = build_viewer_project(owner, tmp_path / "keeper", name="Keeper", n_images=1, nuclei=4, size=64)
    curator = make_user("curator")
    do_set_membership(vp.project, curator, Role.CURATOR, actor=owner)
    with_predictions_and_a_lease(vp, owner)
    do_set_retrain_policy(vp.project, actor=owner, min_new_reviews=5, cron="0 3 * * 0")
    assert PeriodicTask.objects.filter(name__endswith=f"-project-{vp.project.pk}").count() == 2
    media = Path(settings.MEDIA_ROOT)
    alpha_folder, beta_folder = media / vp.alpha.storage_dir, media / vp.beta.storage_dir
    alpha_nuclei = set(Nucleus.objects.filter(image__dataset=vp.alpha).values_list("pk", flat=True))
    assert alpha_folder.is_dir() and any(alpha_folder.rglob("*.png"))
    before = rows_of(vp.project.pk)
    keeper_before, keeper_files = rows_of(keeper.project.pk), project_files(keeper.project.pk)

    # A curator deletes the dataset alpha.
    response = api_client_for(curator).delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/")
    assert response.status_code == 202, response.content
    job = wait_job(response.json()["id"], celery_worker_process, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.result["name"] == "alpha" and job.result["images"] == 2 and job.result["nuclei"] == 12
    assert not Dataset.objects.filter(pk=vp.alpha.pk).exists()
    assert not Nucleus.objects.filter(pk__in=alpha_nuclei).exists()
    assert not Label.objects.filter(nucleus_id__in=alpha_nuclei).exists()
    assert not Prediction.objects.filter(nucleus_id__in=alpha_nuclei).exists()
    assert not alpha_folder.exists()
    after = rows_of(vp.project.pk)
    assert after["datasets"] == 1 and after["images"] == before["images"] - 2
    assert after["nuclei"] == before["nuclei"] - 12 and after["leases"] == 0
    # The label set stays, with the beta nucleus's review in it; beta's files and rows stay.
    assert after["label_sets"] == 2 and after["versions"] == 1 and after["members"] == 2
    assert Label.objects.filter(label_set=vp.alpha_set, nucleus__image__dataset=vp.beta).exists()
    assert beta_folder.is_dir() and any(beta_folder.rglob("*.png"))
    deleted = AuditLogEntry.objects.get(action="dataset.deleted")
    assert (deleted.actor, deleted.target) == (curator, f"datasets.dataset:{vp.alpha.pk}")
    assert deleted.details["nuclei"] == 12

    # The admin deletes the project.
    project_id = vp.project.pk
    response = api_client_for(owner).delete(f"/api/projects/{project_id}/")
    assert response.status_code == 202, response.content
    job = wait_job(response.json()["id"], celery_worker_process, timeout=120)
    assert job.state == "succeeded", job.error
    assert not Project.objects.filter(pk=project_id).exists()
    assert set(rows_of(project_id).values()) == {0}
    assert not Job.objects.filter(project_id=project_id).exists()
    assert not PeriodicTask.objects.filter(name__endswith=f"-project-{project_id}").exists()
    assert not (media / "projects" / str(project_id)).exists()
    assert job.project_id is None and job.result["nuclei"] == before["nuclei"] - 12
    audit = AuditLogEntry.objects.get(action="project.deleted")
    assert (audit.actor, audit.target, audit.details["name"]) == (owner, f"projects.project:{project_id}", "Colon merge")
    # Whoever asked still reads the job; others do not.
    assert api_client_for(owner).get(f"/api/jobs/{job.pk}/").json()["state"] == "succeeded"
    assert api_client_for(curator).get(f"/api/jobs/{job.pk}/").status_code == 404

    # The other project is untouched.
    assert rows_of(keeper.project.pk) == keeper_before
    assert project_files(keeper.project.pk) == keeper_files and keeper_files
