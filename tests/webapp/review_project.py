"""Shared data for the review tests (API, pages and the browser); the ``rp`` and ``users`` fixtures
(tests/conftest.py) build it.

A project with two generated datasets in two taxonomies (the real import, via
``two_taxonomy_project``), an active model version and its Prediction rows made directly with
bulk_create (test data setup: no training), and members with every role.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.utils import timezone

from mlcore.uncertainty import uncertainty_scores
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import CurrentLabel, Dataset, LabelSet, Nucleus
from webapp.projects.models import Project, Role
from webapp.projects.operations import do_set_membership
from webapp.training.models import ModelVersion, Prediction


@dataclass
class ReviewProject:
    project: Project
    colon: Dataset                # seed, label set "colon": epithelial, inflammatory
    breast: Dataset               # coco, label set "breast": neoplastic, connective, dead
    colon_set: LabelSet
    breast_set: LabelSet
    version: ModelVersion | None
    predictions: dict = field(default_factory=dict)  # (nucleus id, label set id) -> Prediction

    def prediction(self, nucleus_id: int, label_set: LabelSet) -> Prediction:
        return self.predictions[nucleus_id, label_set.pk]

    def nuclei(self, dataset: Dataset | None = None) -> list[Nucleus]:
        rows = Nucleus.objects.filter(image__project=self.project)
        if dataset is not None:
            rows = rows.filter(image__dataset=dataset)
        return list(rows.order_by("id"))


def add_predictions(version: ModelVersion, seed: int = 0) -> dict:
    """One prediction per nucleus and label set of the project, with uncertainty scores computed the
    way mlcore does (distinct values, so that every ordering is well defined)."""
    rng = np.random.default_rng(seed)
    nuclei = list(Nucleus.objects.filter(image__project=version.project).order_by("id").values_list("id", flat=True))
    rows = []
    for label_set in LabelSet.objects.filter(project=version.project).prefetch_related("classes").order_by("id"):
        n_classes = label_set.classes.count()
        base = rng.dirichlet(np.ones(n_classes) * 0.8, size=len(nuclei))
        mlp = rng.dirichlet(np.ones(n_classes) * 0.8, size=len(nuclei))
        probs = (base + mlp) / 2
        scores = uncertainty_scores(probs, base, mlp)
        for row, nucleus_id in enumerate(nuclei):
            top = int(probs[row].argmax())
            rows.append(Prediction(
                nucleus_id=nucleus_id, label_set=label_set, model_version=version, class_index=top,
                probability=float(probs[row, top]), base_probs=np.round(base[row], 5).tolist(),
                mlp_probs=np.round(mlp[row], 5).tolist(),
                **{k: float(scores[k][row]) for k in ("least_confidence", "margin", "entropy", "disagreement")}))
    Prediction.objects.bulk_create(rows, batch_size=2000)
    return {(p.nucleus_id, p.label_set_id): p for p in Prediction.objects.filter(model_version=version)}


def build_review_project(owner, tmp_path, *, images: int = 2, nuclei: int = 12, predictions: bool = True,
                         name: str = "review") -> ReviewProject:
    project = two_taxonomy_project(owner, tmp_path, images=images, nuclei=nuclei, name=name)
    colon = Dataset.objects.get(project=project, name="colon")
    breast = Dataset.objects.get(project=project, name="breast")
    version = None
    found = {}
    if predictions:
        version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                              data_snapshot_at=timezone.now(), is_active=True,
                                              label_sets=[{"name": "colon"}, {"name": "breast"}])
        found = add_predictions(version)
    return ReviewProject(project, colon, breast, colon.label_set, breast.label_set, version, found)


def unlabelled_in(rp: ReviewProject, label_set: LabelSet) -> list[int]:
    """Nuclei of the project without a human label in ``label_set``."""
    labelled = set(CurrentLabel.objects.filter(label_set=label_set, source__in=("ground_truth", "review"))
                   .values_list("nucleus_id", flat=True))
    return [n.pk for n in rp.nuclei() if n.pk not in labelled]


def add_members(project: Project, users: dict) -> None:
    owner = users["owner"]
    for key, role in (("curator", Role.CURATOR), ("reviewer", Role.REVIEWER), ("reviewer2", Role.REVIEWER),
                      ("viewer", Role.VIEWER)):
        do_set_membership(project, users[key], role, actor=owner)
