"""A training's options: the ones TRAINING_OPTIONS names reach its TrainConfig, ``stages`` picks the stages."""

import pytest
from django.utils import timezone

from mlcore.config import STAGES, TrainConfig
from webapp.training.models import ModelVersion
from webapp.training.operations import TRAINING_OPTIONS
from webapp.training.runner import training_config


def test_the_named_options_reach_the_config_and_others_do_not():
    config, stages = training_config({"stages": "completion", "batch_size": 8, "samples_per_epoch": 512,
                                      "backbone": "resnet18", "crop_size": 32}, None)
    assert stages == ["completion"]
    assert (config.batch_size, config.samples_per_epoch, config.backbone) == (8, 512, "resnet18")
    assert config.crop_size != 32  # not a training option: ignored
    assert training_config({"stages": "all"}, None)[1] == list(STAGES)


def test_stain_jitter_is_inherited_from_the_parent_version_until_a_training_sets_it():
    assert training_config({}, None)[0].stain_jitter == 0.025   # the default
    assert training_config({"stain_jitter": 0.05}, None)[0].stain_jitter == 0.05
    parent = ModelVersion(config=TrainConfig(stain_jitter=0.05).to_dict())
    assert training_config({"epochs": 2}, parent)[0].stain_jitter == 0.05   # a scheduled retraining keeps it
    assert training_config({"stain_jitter": 0}, parent)[0].stain_jitter == 0.0
    assert set(TRAINING_OPTIONS) == {"stages", "epochs", "backbone", "device", "batch_size", "samples_per_epoch",
                                     "stain_jitter", "grayscale", "crop_context_view", "ensemble", "predict_tta"}


def test_grey_crops_are_an_option_kept_by_later_trainings():
    assert training_config({}, None)[0].grayscale == 0.0      # off by default
    assert training_config({"grayscale": 0.2}, None)[0].grayscale == 0.2
    parent = ModelVersion(config=TrainConfig(grayscale=0.2).to_dict())
    assert training_config({"epochs": 2}, parent)[0].grayscale == 0.2
    assert training_config({"grayscale": 0}, parent)[0].grayscale == 0.0


def test_predict_tta_is_an_option_of_the_training_not_of_its_config():
    # It says how the new version's predictions are made (webapp.training.runner.run_training), not how it trains.
    assert training_config({"predict_tta": False}, None)[0] == training_config({}, None)[0]


def test_stain_normalisation_is_not_a_web_app_option():
    # Measured worse than the default on two of three unseen datasets (README: Benchmarks): the CLI's config
    # has it, the web app's training does not offer it.
    assert training_config({"stain_normalisation": "macenko"}, None)[0].crop_spec.stain_normalisation == "none"


def test_the_context_view_is_an_option_kept_by_later_trainings():
    config = training_config({}, None)[0]    # on by default, as in the CLI, with its dropout
    assert config.crop_spec.context_view == 2 and config.crop_spec.channels == 6
    assert config.context_view_dropout == 0.5
    plain = training_config({"crop_context_view": 0}, None)[0]
    assert plain.crop_spec.context_view == 0 and plain.crop_spec.channels == 3
    for parent_config in (config, plain):    # a scheduled retraining keeps its parent's choice
        parent = ModelVersion(config=parent_config.to_dict())
        assert training_config({"epochs": 2}, parent)[0].crop_spec == parent_config.crop_spec
    assert training_config({"crop_context_view": 0}, ModelVersion(config=config.to_dict()))[0].crop_context_view == 0


def test_a_version_saved_before_the_context_view_field_retrains_without_one():
    # Its config has no such field and its network takes RGB crops: a retraining fine-tunes it as it is,
    # rather than starting afresh with today's default.
    saved = TrainConfig(crop_context_view=0).to_dict()
    del saved["crop_context_view"], saved["context_view_dropout"]
    assert training_config({"epochs": 2}, ModelVersion(config=saved))[0].crop_context_view == 0
    assert TrainConfig.from_saved(saved).crop_spec.channels == 3


def test_a_training_fine_tunes_its_parent_only_with_the_same_taxonomies_and_crops(tmp_path):
    from mlcore.checkpoint import load_checkpoint, save_checkpoint
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet
    from webapp.training.runner import continues_from

    sets = [LabelSet("A", ("a0", "a1")), LabelSet("B", ("b0", "b1"))]
    plain = TrainConfig(backbone="small", crop_context_view=0)
    path = save_checkpoint(tmp_path / "v1.pt", CrossTrainedModel(sets, "small", {"width": 4}, plain.crop_spec),
                           "completion", 0, True, plain)
    parent = load_checkpoint(path)
    assert continues_from(parent, sets, training_config({"epochs": 2}, ModelVersion(config=plain.to_dict()))[0])
    assert not continues_from(parent, sets + [LabelSet("C", ("c0", "c1"))], plain)   # a new taxonomy joined
    wider = training_config({"crop_context_view": 2}, ModelVersion(config=plain.to_dict()))[0]
    assert not continues_from(parent, sets, wider)    # six input channels: the parent's stem cannot take them


def test_the_number_of_models_averaged_is_an_option_kept_by_later_trainings():
    assert training_config({}, None)[0].ensemble == 1   # one model by default, as in the CLI
    assert training_config({"ensemble": 3}, None)[0].ensemble == 3
    parent = ModelVersion(config=TrainConfig(ensemble=2).to_dict())
    assert training_config({"epochs": 2}, parent)[0].ensemble == 2
    assert training_config({"ensemble": 1}, parent)[0].ensemble == 1
    # A version saved before the option existed was one model.
    assert training_config({}, ModelVersion(config={k: v for k, v in TrainConfig().to_dict().items()
                                                     if k != "ensemble"}))[0].ensemble == 1


@pytest.mark.django_db
def test_a_version_saved_with_its_cache_folder_does_not_show_it(owner, api_client_for, tmp_path):
    """Versions published before TrainConfig.portable_dict kept the worker's crop cache folder in their config."""
    from webapp.projects.operations import do_create_project

    project = do_create_project("legacy", actor=owner)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt", label_sets=[],
                                config={**TrainConfig().to_dict(), "cache_dir": "/srv/app/var/cache/crops"},
                                data_snapshot_at=timezone.now(),
                                is_active=True)
    versions = api_client_for(owner).get(f"/api/projects/{project.pk}/versions/").json()
    assert versions[0]["config"]["crop_context_view"] == TrainConfig().crop_context_view
    assert "cache_dir" not in versions[0]["config"] and "/srv/app" not in str(versions)
    assert "cache_dir" not in TrainConfig(cache_dir="/tmp/x").portable_dict()


@pytest.mark.django_db
def test_a_versions_checkpoint_url_is_absolute_as_file_urls_are(owner, api_client_for):
    from webapp.projects.operations import do_create_project

    project = do_create_project("absolute", actor=owner)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt", label_sets=[],
                                config=TrainConfig().to_dict(), data_snapshot_at=timezone.now(), is_active=True)
    client = api_client_for(owner)
    listed = client.get(f"/api/projects/{project.pk}/versions/").json()[0]["checkpoint_url"]
    activated = client.post(f"/api/projects/{project.pk}/versions/1/activate/").json()["checkpoint_url"]
    assert listed == activated == f"http://testserver/api/projects/{project.pk}/versions/1/checkpoint/"
