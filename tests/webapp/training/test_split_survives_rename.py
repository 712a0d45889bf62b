"""A dataset's validation split is drawn by the name it had, not the name shown: renaming it drew another split,
so the next version, fine-tuned from one that trained on some of the new validation nuclei, was scored on them
(48 of 167 in a helper's run) and so was the comparison the retraining guard decides by."""

import pytest

from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets.models import Dataset
from webapp.datasets.operations import do_edit_dataset
from webapp.jobs.models import Job
from webapp.training import runner

pytestmark = pytest.mark.django_db


def validation_images(project, owner, monkeypatch) -> set[str]:
    """The images of the validation split a training drew (by the ids the runner gives them)."""
    seen = []

    def notes(table, val_rows, **kwargs):
        seen.append({table.image_names[i] for i in set(table.image_index[val_rows].tolist())})
        return real(table, val_rows, **kwargs)

    real = runner.split_notes
    monkeypatch.setattr(runner, "split_notes", notes)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
    runner.run_training(job, lambda *args, **details: None, lambda: False)
    return seen[-1]


def test_a_renamed_dataset_keeps_its_validation_split(owner, media_root, tmp_path, monkeypatch):
    project = two_taxonomy_project(owner, tmp_path, images=6)
    before = validation_images(project, owner, monkeypatch)
    for dataset in Dataset.objects.filter(project=project):
        do_edit_dataset(dataset, actor=owner, name=f"{dataset.name} (renamed)")
        do_edit_dataset(Dataset.objects.get(pk=dataset.pk), actor=owner, name=f"{dataset.name}, again")
    assert sorted(Dataset.objects.filter(project=project).values_list("split_key", flat=True)) == ["breast", "colon"]
    assert validation_images(project, owner, monkeypatch) == before and before


def test_a_new_dataset_named_as_a_renamed_one_was_is_its_own_dataset(owner, media_root, tmp_path):
    from webapp.datasets.models import Image

    project = two_taxonomy_project(owner, tmp_path)
    colon = Dataset.objects.get(project=project, name="colon")
    do_edit_dataset(colon, actor=owner, name="colon, first")
    Dataset.objects.filter(pk=Dataset.objects.get(project=project, name="breast").pk).update(name="colon")
    names = runner.table_names(list(Image.objects.filter(project=project).select_related("dataset")))
    newer = Dataset.objects.get(project=project, name="colon")
    assert names == {colon.pk: "colon", newer.pk: f"colon #{newer.pk}"}


def test_a_lopsided_split_is_said_on_the_versions_page(owner, media_root, tmp_path, client):
    """It was only in the job's log: a curator saw "578 for training, 1216 for validation" and no reason."""
    from webapp.training.models import ModelVersion

    project = two_taxonomy_project(owner, tmp_path, images=1)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
    runner.run_training(job, lambda *args, **details: None, lambda: False)
    version = ModelVersion.objects.get(project=project)
    notes = version.training_data["split_notes"]
    assert sorted(note.split(":")[0] for note in notes) == ["dataset 'breast' has one tile, image or slide square",
                                                            "dataset 'colon' has one tile, image or slide square"]
    client.force_login(owner)
    html = client.get(f"/projects/{project.pk}/versions/{version.number}/").content.decode()
    assert html.count('data-role="split-note"') == 2 and "none of its" in html
