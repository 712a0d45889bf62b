"""A new version is scored on its validation nuclei as its predictions will be made: with test-time
augmentation when the training's ``predict_tta`` is on (the default), with one view when it is off. The one-view
figures are kept beside, the comparison with the replaced version scores both alike, and the pages say which
(webapp.training.runner.validation_metrics, compared_with_parent)."""

import pytest
import torch

from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db

HEADLINE = ("n", "accuracy", "macro_f1", "weighted_f1")
MOVED = {"epochs": 2, "samples_per_epoch": 512}   # trained enough that its crops' flips change some predictions


def train(project, owner, logs: list, **options) -> ModelVersion:
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], **options}})
    result = run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert result["metrics"] == {name: {k: m[k] for k in (*HEADLINE, "tta")} for name, m in version.metrics.items()}
    return version


def test_a_version_is_scored_as_its_predictions_are_made_and_keeps_its_one_view_figures(
        owner, media_root, tmp_path, client, monkeypatch):
    from webapp.training import runner

    scored = []   # what the runner's scoring computed: its reports, its logits, and the same nuclei's one view

    def spy(model, table, rows=None, **kwargs):
        metrics, outputs = real(model, table, rows, **kwargs)
        scored.append((kwargs.get("tta"), metrics, outputs, real(model, table, rows, tta=False)[1]))
        return metrics, outputs

    real = runner.evaluate_with_logits
    monkeypatch.setattr(runner, "evaluate_with_logits", spy)
    project = two_taxonomy_project(owner, tmp_path)
    logs = []
    with_tta = train(project, owner, logs, **MOVED)   # predict_tta left out: the default, on
    [(tta, tta_metrics, (tta_shared, tta_heads), (one_shared, one_heads))] = scored
    assert tta is True
    for name, report in with_tta.metrics.items():
        assert {k: report[k] for k in HEADLINE} == pytest.approx({k: tta_metrics[name][k] for k in HEADLINE})
    # Eight views are not one: the mean over the flips and rotations moves every label set's logits (the
    # predicted classes may not change on a model this small, so the logits are compared, not the confusions).
    assert tta_shared.shape == one_shared.shape
    assert all(not torch.allclose(t, o, atol=1e-4) for t, o in zip(tta_heads, one_heads))
    assert with_tta.training_data["validation"]["tta"] is True
    assert with_tta.training_data["validation"]["seconds"] >= 0
    assert all(report["tta"] is True for report in with_tta.metrics.values())
    assert any("scoring" in line and "validation nuclei" in line and "8 flips and rotations" in line for line in logs)
    one_view_kept = with_tta.training_data["validation"]["one_view"]
    assert set(one_view_kept) == set(with_tta.metrics) == {"colon", "breast"}

    # The same training from scratch (no active parent to fine-tune) with predict_tta off: the same model, so
    # its one-view metrics are the figures the first version kept beside its TTA ones.
    ModelVersion.objects.filter(pk=with_tta.pk).update(is_active=False)
    logs = []
    one_view = train(project, owner, logs, predict_tta=False, **MOVED)
    assert set(one_view.training_data["validation"]) == {"tta", "seconds"}
    assert one_view.training_data["validation"]["tta"] is False
    assert one_view.training_data["compared_with"] is None
    assert not any("scoring" in line for line in logs)
    for name, report in one_view.metrics.items():
        assert report["tta"] is False
        assert {k: report[k] for k in HEADLINE} == pytest.approx(one_view_kept[name], abs=1e-12)

    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/versions/{with_tta.number}/").content.decode()
    colon = one_view_kept["colon"]
    assert (f"validation nuclei, scored with test-time augmentation (the mean over 8 flips and rotations), as this "
            f"version's predictions are made; with one view: accuracy {colon['accuracy']:.3f}") in page
    assert "validation nuclei, one view each</p>" in client.get(
        f"/projects/{project.pk}/versions/{one_view.number}/").content.decode()
    panel = client.get(f"/projects/{project.pk}/").content.decode()
    # The TTA version's rows, not the other's: each described by the table's note (a tooltip reached no keyboard).
    assert panel.count(' <span class="muted">TTA</span></summary>') == len(with_tta.metrics)
    assert panel.count('<summary aria-describedby="versions-tta">') == len(with_tta.metrics)
    assert 'id="versions-tta">TTA: scored with test-time augmentation' in panel
    assert f"colon v{with_tta.number}: {with_tta.metrics['colon']['macro_f1']:.3f} (test-time augmentation)" in panel


def test_the_comparison_with_the_replaced_version_scores_both_as_the_new_predictions(owner, media_root, tmp_path,
                                                                                      client):
    project = two_taxonomy_project(owner, tmp_path)
    v1 = train(project, owner, [])
    logs = []
    v2 = train(project, owner, logs)   # fine-tunes v1; its predictions, and so its scoring, with TTA
    compared = v2.training_data["compared_with"]
    assert compared["version"] == 1 and compared["tta"] is True
    for name, row in compared["label_sets"].items():
        # The same nuclei (the data did not change), both scored with TTA: v1 scores what it was published with.
        assert row["macro_f1"] == pytest.approx(v2.metrics[name]["macro_f1"], abs=1e-9)
        assert row["previous_macro_f1"] == pytest.approx(v1.metrics[name]["macro_f1"], abs=1e-9)
    assert any("against v1 on the same nuclei, both with test-time augmentation" in line for line in logs)
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/versions/2/").content.decode()
    assert ("Both versions scored on this version's validation nuclei, each with test-time augmentation (the mean "
            "over 8 flips and rotations), as this version's predictions are made") in page

    # Predicting with one view, v3 is compared on one view: v2 scores there the one-view figures it kept.
    v3 = train(project, owner, [], predict_tta=False)
    compared = v3.training_data["compared_with"]
    assert compared["version"] == 2 and compared["tta"] is False
    kept = v2.training_data["validation"]["one_view"]
    for name, row in compared["label_sets"].items():
        assert row["macro_f1"] == pytest.approx(v3.metrics[name]["macro_f1"], abs=1e-9)
        assert row["previous_macro_f1"] == pytest.approx(kept[name]["macro_f1"], abs=1e-9)
    page = client.get(f"/projects/{project.pk}/versions/3/").content.decode()
    assert "Both versions scored on this version's validation nuclei: each" in page


def test_a_cancel_while_the_new_version_is_scored_publishes_nothing(owner, media_root, tmp_path):
    """Scoring with TTA takes minutes on a large project: a cancel then stops it, as it stops the stages."""
    from mlcore.types import Cancelled

    project = two_taxonomy_project(owner, tmp_path)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], **MOVED}})
    stages = []
    with pytest.raises(Cancelled):
        run_training(job, lambda percent, log=None, **details: stages.append(details.get("stage")),
                     lambda: "scoring" in stages)
    assert stages[-1] == "scoring"   # trained, then stopped while it scored
    assert not ModelVersion.objects.filter(project=project).exists()
