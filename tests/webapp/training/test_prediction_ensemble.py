"""A model version whose checkpoint is an ensemble of seeds (``python -m mlcore train --ensemble N``) predicts in the
web app as any version: the stored probabilities are the ensemble's, the mean of its members' logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from mlcore.checkpoint import save_checkpoint
from mlcore.config import TrainConfig
from mlcore.model import SeedEnsemble
from mlcore.types import LabelSet as MLLabelSet
from tests.mlcore.helpers import random_model
from tests.webapp.training.test_prediction_tta import expected_probabilities, quiet, stored_probabilities
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import Image
from webapp.jobs import operations as job_operations
from webapp.training import operations, runner
from webapp.training.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_an_ensemble_versions_predictions_are_its_members_average(owner, settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    project = two_taxonomy_project(owner, tmp_path / "generated", images=2, nuclei=12)
    label_sets = [MLLabelSet(row.name, tuple(row.class_names)) for row in project.label_sets.all().order_by("id")]
    members = [random_model(label_sets, seed=seed) for seed in (0, 1)]
    ensemble = SeedEnsemble(members).eval()
    save_checkpoint(Path(settings.MEDIA_ROOT) / "models" / "v1.pt", ensemble, "sparse", 0, True, TrainConfig())
    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)

    result = runner.run_prediction(operations.do_start_prediction(version, actor=owner), quiet, lambda: False)
    assert result["predictions"] > 0
    image = Image.objects.filter(project=project).order_by("id").first()
    name = label_sets[0].name
    stored = stored_probabilities(version, image, name)
    np.testing.assert_allclose(stored, expected_probabilities(ensemble, image, name, tta=True), atol=2e-5)   # stored rounded to 5 decimals
    alone = expected_probabilities(members[0].eval(), image, name, tta=True)
    assert np.abs(stored - alone).max() > 1e-3   # not the first member's alone
