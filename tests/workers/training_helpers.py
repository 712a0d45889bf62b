"""A small two-taxonomy project for training tests, built from generated tiles."""

from pathlib import Path

import pytest
from django.test import override_settings

from mlcore.types import Cancelled
from tests.generated_datasets import generated_dataset
from webapp.datasets.importing import do_import_dataset
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.runner import run_training


def two_taxonomy_project(owner, tmp_path: Path, images: int = 4, nuclei: int = 30, name: str = "train"):
    project = do_create_project(name, actor=owner)
    for dataset_name, format, classes, seed in (("colon", "seed", ["epithelial", "inflammatory"], 0),
                                                ("breast", "coco", ["neoplastic", "connective", "dead"], 1)):
        root = generated_dataset(tmp_path / dataset_name, format=format, n_images=images, nuclei_per_image=nuclei,
                                 class_names=classes, seed=seed, size=(160, 160))
        # Test data: prepared in this process. Forking import workers took a third of a build; the pool
        # has tests of its own (tests/webapp/datasets/test_dataset_import_pool.py, the worker tests).
        with override_settings(IMPORT_PROCESSES=1):
            do_import_dataset(project, name=dataset_name, format=format, path=root, actor=owner)
    return project


FAST = {"epochs": 1, "samples_per_epoch": 64, "batch_size": 32}


def labelled_dataset_row(project, name: str = "colon"):
    """A labelled tile dataset's rows (its label set, and an empty folder under MEDIA_ROOT), without images:
    what a training's start asks for, in tests that never run the training."""
    from django.conf import settings

    from webapp.datasets.models import Dataset, LabelSet

    storage_dir = f"projects/{project.pk}/datasets/{name}"
    (Path(settings.MEDIA_ROOT) / storage_dir).mkdir(parents=True, exist_ok=True)
    label_set = LabelSet.objects.create(project=project, name=name)
    return Dataset.objects.create(project=project, name=name, label_set=label_set, format=Dataset.Format.SEED,
                                  storage_dir=storage_dir)


def stopped_after_stage_1(project, owner, options: dict) -> tuple[Job, int]:
    """A training of ``options`` cancelled once its stage 1 finished, and how many nuclei it trained on."""
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner, params={"options": options})

    def point() -> dict:
        return (Job.objects.get(pk=job.pk).result or {}).get("resume") or {}

    with pytest.raises(Cancelled):
        run_training(job, lambda *a, **k: None, lambda: point().get("done") == ["sparse"])
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
    return job, point()["nuclei"]


def resume_job(stopped: Job, owner, options: dict) -> Job:
    """A training that resumes ``stopped`` after its stage 1, with its ``options``."""
    return Job.objects.create(kind=Job.Kind.TRAIN, project=stopped.project, created_by=owner,
                              params={"options": options, "resume": {"job": stopped.pk, "stage": "sparse"}})
