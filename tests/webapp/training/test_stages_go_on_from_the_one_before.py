"""A web training runs the stages its first asked-for stage goes on from: stage 3 alone as a project's first
training made a random network's pseudo labels the active version (macro-F1 0.11, one class for everything);
after a version trained with stage 1 only, stage 3 first fits the heads again (stage 2)."""

import pytest

from mlcore.checkpoint import load_checkpoint
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.core import media
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db


def train(project, owner, stages, logs):
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": stages, "predict_tta": False}})
    result = run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)
    return ModelVersion.objects.get(pk=result["model_version_id"])


def test_stage_three_first_runs_the_stages_it_goes_on_from(owner, media_root, tmp_path):
    project = two_taxonomy_project(owner, tmp_path)
    logs = []
    first = train(project, owner, ["completion"], logs)
    assert "stages sparse, correlation run first: the network is new, and stage completion goes on from the one " \
           "before it" in logs
    assert {entry["stage"] for entry in first.history} == {"sparse", "correlation", "completion"}

    logs.clear()
    stage_one = train(project, owner, ["sparse"], logs)   # fine-tunes v1's backbone only
    assert load_checkpoint(media.local_path(stage_one.checkpoint_file)).stage == "sparse"
    logs.clear()
    third = train(project, owner, ["completion"], logs)
    assert "stage correlation run first: v2's network went through stage sparse only, and stage completion goes " \
           "on from the one before it" in logs
    assert [entry["stage"] for entry in third.history][:1] == ["correlation"]


def test_one_label_set_trains_stage_one_and_says_so(owner, media_root, tmp_path, settings):
    from tests.generated_datasets import generated_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.projects.operations import do_create_project

    settings.IMPORT_PROCESSES = 1
    project = do_create_project("one taxonomy", actor=owner)
    do_import_dataset(project, name="colon", format="seed", actor=owner,
                      path=generated_dataset(tmp_path / "colon", "seed", n_images=3, nuclei_per_image=20,
                                             class_names=["a", "b"], seed=0, size=(128, 128)))
    logs = []
    version = train(project, owner, ["completion"], logs)
    assert ("stage completion asked for; stage sparse only is run: stages correlation and completion need a second "
            "labelled label set") in logs
    assert {entry["stage"] for entry in version.history} == {"sparse"}
