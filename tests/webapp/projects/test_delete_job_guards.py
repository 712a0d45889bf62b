"""The deletion job itself (run in this process): it checks again for work that started after it was
asked for, and a failure or a cancel in the middle leaves every row and file in place."""

from pathlib import Path

import pytest
from django.conf import settings

from tests.webapp.viewer_project import build_viewer_project, deletion_job
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.jobs.models import Job
from webapp.datasets import deletion
from webapp.projects.deletion import DeletionRefused, run_deletion_job
from webapp.projects.models import Project
from mlcore.types import Cancelled
from workers.tasks import _error_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def vp(owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return build_viewer_project(owner, tmp_path / "sources", n_images=3, nuclei=5, size=64)


def snapshot(vp) -> tuple:
    return (Dataset.objects.filter(project=vp.project).count(), Image.objects.filter(project=vp.project).count(),
            Nucleus.objects.filter(image__project=vp.project).count(),
            sorted(p for p in (Path(settings.MEDIA_ROOT) / "projects").rglob("*") if p.is_file()))


@pytest.mark.parametrize("target", ["dataset", "project"])
def test_a_training_queued_after_the_request_makes_the_job_refuse(vp, owner, target):
    job = deletion_job(vp, owner, target)
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=vp.project, created_by=owner)
    before = snapshot(vp)
    with pytest.raises(DeletionRefused) as refused:
        run_deletion_job(job, lambda percent, message: None)
    assert f"a training of the project is queued (job {training.pk})" in str(refused.value)
    assert _error_text(refused.value) == str(refused.value)  # shown to the user as is
    assert snapshot(vp) == before



def test_the_refusal_names_the_work_in_the_way_as_people_know_it(vp, owner):
    """One slide's classification is not "a project prediction" (the words for the whole project's)."""
    job = deletion_job(vp, owner, "dataset")
    classify = Job.objects.create(kind=Job.Kind.PREDICT, project=vp.project, created_by=owner, state=Job.State.RUNNING,
                                  params={"model_version": 1, "image": 1, "image_name": "case 1"})
    with pytest.raises(DeletionRefused) as refused:
        run_deletion_job(job, lambda percent, message: None)
    assert f"the classification of slide 'case 1' of the project is running (job {classify.pk})" in str(refused.value)

@pytest.mark.parametrize("target", ["dataset", "project"])
def test_a_cancel_in_the_middle_rolls_the_deletion_back(vp, owner, target, monkeypatch):
    monkeypatch.setattr(deletion, "NUCLEI_PER_STEP", 1)  # one image per step: several steps
    job = deletion_job(vp, owner, target)
    before = snapshot(vp)
    steps = []

    def progress(percent, message):
        steps.append(message)
        if len(steps) == 3:  # after two images were deleted
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_deletion_job(job, progress)
    assert snapshot(vp) == before
    assert Project.objects.filter(pk=vp.project.pk).exists()
    job.refresh_from_db()
    assert job.project_id == vp.project.pk


def test_a_dataset_already_gone_is_no_error(vp, owner):
    job = deletion_job(vp, owner, "dataset")
    Dataset.objects.filter(pk=vp.alpha.pk).update(name="renamed")
    Image.objects.filter(dataset=vp.alpha).delete()
    Dataset.objects.filter(pk=vp.alpha.pk).delete()
    result = run_deletion_job(job, lambda percent, message: None)
    assert result == {"target": "dataset", "name": "alpha", "deleted": False, "detail": "the dataset was already gone"}
