"""A training of several models averaged (the ``ensemble`` option, mlcore's model.ensemble): the version's
checkpoint is the ensemble, its figures the average's and each model's kept beside; the job's progress goes through
each model in turn; a cancelled one resumes from the ensemble's stage checkpoint, into the models an
uninterrupted training makes; a next training fine-tunes it only into as many models (webapp.training.runner)."""

import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.model import SeedEnsemble
from mlcore.types import Cancelled
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.core import media
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db


def start(project, owner, **options) -> Job:
    return Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                              params={"options": {**FAST, "predict_tta": False, **options}})


def run(job, reports=None, should_stop=lambda: False) -> ModelVersion:
    def report(percent, log=None, **details):
        if reports is not None:
            reports.append((percent, log, details))
    result = run_training(job, report, should_stop)
    return ModelVersion.objects.get(pk=result["model_version_id"])


def test_an_ensemble_training_publishes_the_average_and_keeps_each_models_figures(owner, media_root, tmp_path,
                                                                                 client):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    reports = []
    version = run(start(project, owner, ensemble=2), reports)

    checkpoint = load_checkpoint(media.local_path(version.checkpoint_file))
    assert isinstance(checkpoint.model, SeedEnsemble) and len(checkpoint.model.members) == 2
    assert version.config["ensemble"] == 2
    members = version.training_data["members"]
    assert [m["seed"] for m in members] == [0, 1] and set(members[0]["metrics"]) == {"colon", "breast"}
    assert {(h["stage"], h["member"]) for h in version.history} == {
        (stage, member) for stage in ("sparse", "correlation", "completion") for member in (1, 2)}

    # The progress goes through each model's turn at every stage, and never back.
    percents = [percent for percent, _, _ in reports]
    assert percents == sorted(percents)
    logs = [log for _, log, _ in reports if log]
    assert logs.index("model 1/2, stage sparse: 1 epoch") < logs.index("model 2/2, stage sparse: 1 epoch") \
        < logs.index("model 1/2, stage correlation: 1 epoch")
    assert {(d["model"], d["models"]) for _, _, d in reports if "model" in d} == {(1, 2), (2, 2)}

    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/versions/{version.number}/").content.decode()
    assert "Each of its 2 models alone" in page and "for each of 2 models" in page
    assert f'<td class="num">{members[1]["metrics"]["colon"]["macro_f1"]:.3f}</td>' in page
    assert "models averaged (seeds)" in page
    panel = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'name="ensemble" min="1" max="8" value="2"' in panel   # a next training inherits it


def test_a_cancelled_ensemble_resumes_from_its_stage_checkpoint(owner, media_root, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    first = start(project, owner, ensemble=2, stages=["sparse", "completion"])
    kept = lambda: bool((Job.objects.get(pk=first.pk).result or {}).get("resume"))  # noqa: E731
    with pytest.raises(Cancelled):
        run(first, should_stop=kept)
    point = Job.objects.get(pk=first.pk).result["resume"]
    assert point["stage"] == "sparse" and point["remaining"] == ["completion"]
    stage1 = load_checkpoint(media.local_path(point["checkpoint"])).model
    assert isinstance(stage1, SeedEnsemble)

    resumed = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner, params={
        "options": {**FAST, "predict_tta": False, "ensemble": 2, "stages": ["completion"]},
        "resume": {"job": first.pk, "stage": "sparse"}})
    version = run(resumed)
    assert version.training_data["stages"] == ["sparse", "completion"]
    final = load_checkpoint(media.local_path(version.checkpoint_file)).model
    assert isinstance(final, SeedEnsemble) and len(final.members) == 2

    # Its first model (seed 0) is the model of a single training that was never cancelled (of the same data, in
    # a project of its own): each model went on drawing from its own saved random state.
    again = two_taxonomy_project(owner, tmp_path / "again", images=2, nuclei=20, name="again")
    straight = run(start(again, owner, ensemble=1, stages=["sparse", "completion"]))
    straight_model = load_checkpoint(media.local_path(straight.checkpoint_file)).model
    assert all(torch.equal(a, b) for a, b in zip(final.members[0].state_dict().values(),
                                                 straight_model.state_dict().values()))


def test_a_next_training_fine_tunes_an_ensemble_only_into_as_many_models(owner, media_root, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    v1 = run(start(project, owner, ensemble=2, stages=["sparse"]))
    parent_members = load_checkpoint(media.local_path(v1.checkpoint_file)).model.members
    # The same number of models: each goes on from its own (stage 2 trains the heads only, so the backbones
    # it started from are still there).
    v2 = run(start(project, owner, stages=["correlation"]))   # ensemble unset: the active version's, 2
    assert v2.config["ensemble"] == 2
    for before, after in zip(parent_members, load_checkpoint(media.local_path(v2.checkpoint_file)).model.members):
        assert all((a == b).all() for a, b in zip(before.backbone.state_dict().values(),
                                                  after.backbone.state_dict().values()))
    # One model after an ensemble: trained afresh rather than refused.
    v3 = run(start(project, owner, ensemble=1, stages=["sparse"]))
    assert not isinstance(load_checkpoint(media.local_path(v3.checkpoint_file)).model, SeedEnsemble)


def test_the_api_takes_the_option_and_estimates_each_model_in_turn(owner, api_client_for, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=20)
    client = api_client_for(owner)
    refused = client.post(f"/api/projects/{project.pk}/train/", {"ensemble": 9}, format="json")
    assert refused.status_code == 400 and "ensemble" in refused.json()["detail"]
    one, two = (client.get(f"/api/projects/{project.pk}/train/estimate/?stages=sparse&ensemble={n}").json()
                for n in (1, 2))
    assert two["models"] == 2 and two["seconds"] == pytest.approx(2 * one["seconds"], rel=1e-3, abs=0.2)
