"""Two uploads of one dataset name at once (a double click on Upload): the second is refused with the words of
the name check, naming the first's job, instead of both being queued and the second failing on the database's
unique constraint ("IntegrityError: UNIQUE constraint failed ..."). An import whose name was taken after it was
queued fails with the same words."""

import pytest
from django.test import override_settings

from mlcore.synthetic import generate_dataset
from tests.webapp.dataset_helpers import zip_folder
from webapp.datasets import uploads
from webapp.datasets.importing import ImportRejected, do_import_dataset
from webapp.datasets.models import Dataset
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def upload_while(project, owner, tmp_path, api_client_for, monkeypatch, kind: str, params: dict):
    """Upload a dataset named "colon" while, as its files are written, another request queues a job of ``kind``
    in the project (``params``); the response and that job."""
    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    root = generate_dataset(tmp_path / "d", "seed", n_images=1, nuclei_per_image=4, seed=0, size=(64, 64))
    real_stage = uploads._stage
    other = {}

    def stage_while_another_job_is_queued(*args, **kwargs):
        staged = real_stage(*args, **kwargs)
        other["job"] = Job.objects.create(kind=kind, project=project, created_by=owner, params=params)
        return staged

    monkeypatch.setattr(uploads, "_stage", stage_while_another_job_is_queued)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/",
                                          {"name": "colon", "format": "seed", "archive": zip_folder(root)},
                                          format="multipart")
    return response, other["job"]


def test_an_upload_staged_while_the_same_name_was_queued_is_refused(owner, media_root, tmp_path, api_client_for,
                                                                     monkeypatch):
    project = do_create_project("race", actor=owner)
    # The first click's request is queued while the second's upload is written.
    response, first = upload_while(project, owner, tmp_path, api_client_for, monkeypatch, Job.Kind.IMPORT,
                                   {"name": "Colon", "format": "seed"})
    assert response.status_code == 400, response.content
    assert f"is being imported into project 'race' (job {first.pk})" in response.json()["detail"]
    assert Job.objects.filter(kind=Job.Kind.IMPORT).count() == 1
    assert not any(uploads.staging_root().iterdir())   # the refused upload's files are gone


def test_a_name_taken_after_the_check_fails_the_import_in_words(owner, media_root, tmp_path, monkeypatch):
    from webapp.datasets import importing

    project = do_create_project("race", actor=owner)
    root = generate_dataset(tmp_path / "d", "seed", n_images=1, nuclei_per_image=4, seed=0, size=(64, 64))
    checks = []
    real_check = importing.refuse_taken_dataset_name

    def first_check_passes_then_the_other_commits(project_, name, exclude=None):
        if not checks:   # the job's first check, before the other import of this name committed
            checks.append(name)
            Dataset.objects.create(project=project_, name=name, format="seed", storage_dir="elsewhere")
            return None
        return real_check(project_, name, exclude)

    monkeypatch.setattr(importing, "refuse_taken_dataset_name", first_check_passes_then_the_other_commits)
    with override_settings(IMPORT_PROCESSES=1), pytest.raises(ImportRejected, match="already has a dataset named"):
        do_import_dataset(project, name="colon", format="seed", path=root, actor=owner)
    assert Dataset.objects.filter(project=project).count() == 1


def test_an_upload_staged_while_a_deletion_was_asked_for_is_refused(owner, media_root, tmp_path, api_client_for,
                                                                     monkeypatch):
    """Both answered 202: the deletion then failed on the import it had to wait for, and the dataset stayed."""
    project = do_create_project("race", actor=owner)
    response, deletion = upload_while(project, owner, tmp_path, api_client_for, monkeypatch, Job.Kind.DELETE,
                                      {"target": "dataset", "dataset": 1, "name": "old"})
    assert response.status_code == 409, response.content
    assert f"is being deleted (job {deletion.pk}" in response.json()["detail"]
    assert not Job.objects.filter(kind=Job.Kind.IMPORT).exists()
    assert not any(uploads.staging_root().iterdir())
