"""Shared data for the page, viewer and export tests: a project with two label sets and some reviews.

Used by the ``viewer_project`` fixture (tests/webapp/datasets/conftest.py) and imported by tests that build
their own (deletion, the browser's viewer and exports). Two small synthetic seed datasets with different
taxonomies are imported through the real import path (``do_import_dataset``); a few nuclei of the first get
review labels in both label sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.test import override_settings

from tests.generated_datasets import generated_dataset
from webapp.datasets.importing import do_import_dataset
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelSet, LabelSource, Nucleus
from webapp.projects.models import Project
from webapp.projects.operations import do_create_project

ALPHA_CLASSES = ["tumour", "lymphocyte", "stroma"]
BETA_CLASSES = ["neoplastic", "inflammatory"]


@dataclass
class ViewerProject:
    project: Project
    alpha: Dataset
    beta: Dataset
    alpha_set: LabelSet
    beta_set: LabelSet
    image: Image                 # first image of alpha: has reviews in both label sets
    reviewed: dict = field(default_factory=dict)  # nucleus id -> {label_set_id: class index}


def review(nucleus: Nucleus, label_set: LabelSet, class_index: int, author=None) -> Label:
    """Append a review label and move the current label to it (as the review issue's operation will)."""
    current = CurrentLabel.objects.filter(nucleus=nucleus, label_set=label_set).first()
    label = Label.objects.create(nucleus=nucleus, label_set=label_set, class_index=class_index,
                                 source=LabelSource.REVIEW, author=author,
                                 previous=current.label if current else None)
    CurrentLabel.objects.update_or_create(nucleus=nucleus, label_set=label_set,
                                          defaults={"label": label, "class_index": class_index,
                                                    "source": LabelSource.REVIEW})
    return label


def build_viewer_project(owner, tmp_path: Path, name: str = "Colon merge", n_images: int = 2,
                         nuclei: int = 12, size: int = 128) -> ViewerProject:
    project = do_create_project(name, actor=owner, description="CoNSeP-like tiles and a second taxonomy")
    alpha_root = generated_dataset(tmp_path / f"{name}-alpha", "seed", n_images=n_images, nuclei_per_image=nuclei,
                                   class_names=ALPHA_CLASSES, seed=1, size=(size, size))
    beta_root = generated_dataset(tmp_path / f"{name}-beta", "seed", n_images=n_images, nuclei_per_image=nuclei,
                                  class_names=BETA_CLASSES, seed=2, size=(size, size), unlabelled_fraction=0.25)
    # Test data: prepared in this process (the import pool has tests of its own).
    with override_settings(IMPORT_PROCESSES=1):
        alpha = do_import_dataset(project, name="alpha", format="seed", path=alpha_root, actor=owner,
                                  label_set_name="alpha-types")
        beta = do_import_dataset(project, name="beta", format="seed", path=beta_root, actor=owner,
                                 label_set_name="beta-types")
    image = Image.objects.filter(dataset=alpha).order_by("name").first()
    vp = ViewerProject(project, alpha, beta, alpha.label_set, beta.label_set, image)
    nuclei_of_image = list(Nucleus.objects.filter(image=image).order_by("instance_id"))
    # Three nuclei reviewed in the other taxonomy, one re-classified in its own.
    for position, nucleus in enumerate(nuclei_of_image[:3]):
        review(nucleus, vp.beta_set, position % 2, author=owner)
        vp.reviewed.setdefault(nucleus.pk, {})[vp.beta_set.pk] = position % 2
    first = nuclei_of_image[0]
    gt = CurrentLabel.objects.get(nucleus=first, label_set=vp.alpha_set).class_index
    new_class = (gt + 1) % len(ALPHA_CLASSES)
    review(first, vp.alpha_set, new_class, author=owner)
    vp.reviewed[first.pk][vp.alpha_set.pk] = new_class
    return vp


def prediction_disagreement(instance_id: int) -> float:
    """The branch disagreement :func:`add_predictions` gives a nucleus (differs between nuclei)."""
    return round((instance_id % 4) / 20, 3)


def add_predictions(vp: ViewerProject, image: Image | None = None) -> dict:
    """An active model version predicting every nucleus of ``image`` in both label sets.

    Returns ``{(nucleus_id, label_set_id): (class_index, probability)}``.
    """
    from django.utils import timezone

    from webapp.training.models import ModelVersion, Prediction

    image = image or vp.image
    version = ModelVersion.objects.create(project=vp.project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)
    expected, rows = {}, []
    for nucleus in Nucleus.objects.filter(image=image).order_by("instance_id"):
        for label_set, n_classes in ((vp.alpha_set, len(ALPHA_CLASSES)), (vp.beta_set, len(BETA_CLASSES))):
            index = (nucleus.instance_id * 7 + label_set.pk) % n_classes
            probability = round(0.5 + (nucleus.instance_id % 5) / 10, 3)
            probs = [(1 - probability) / (n_classes - 1)] * n_classes
            probs[index] = probability
            rows.append(Prediction(nucleus=nucleus, label_set=label_set, model_version=version, class_index=index,
                                   probability=probability, base_probs=probs, mlp_probs=probs,
                                   least_confidence=1 - probability, margin=0.2, entropy=0.5,
                                   disagreement=prediction_disagreement(nucleus.instance_id)))
            expected[nucleus.pk, label_set.pk] = (index, probability)
    Prediction.objects.bulk_create(rows)
    return expected


def deletion_job(vp, owner, target: str):
    """A running deletion job of the viewer project's dataset alpha (``target`` "dataset") or of the whole project."""
    from webapp.jobs.models import Job

    params = ({"target": "dataset", "dataset": vp.alpha.pk, "name": "alpha"} if target == "dataset"
              else {"target": "project", "project": vp.project.pk, "name": vp.project.name})
    return Job.objects.create(kind=Job.Kind.DELETE, state=Job.State.RUNNING, project=vp.project, created_by=owner,
                              params=params)
