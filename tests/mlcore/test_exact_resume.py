"""A run that goes on from a checkpoint with the same seed draws what a run straight through draws
(mlcore.train.RandomState): stages trained one call at a time, a cancelled stage resumed from its last epoch and
an ensemble's members, trained stage by stage, end as the very models of an uninterrupted run."""

import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.config import TrainConfig
from mlcore.types import Cancelled
from mlcore.train import train_all
from tests.mlcore.helpers import two_set_table

TINY = {"backbone": "small", "backbone_kwargs": {"width": 4}, "batch_size": 32, "samples_per_epoch": 64,
        "correlation_views": 2, "epochs": {"sparse": 2, "correlation": 2, "completion": 2}, "device": "cpu",
        "num_threads": 1}


@pytest.fixture(scope="module")
def table():
    return two_set_table()[0]


def config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def assert_same_weights(model, other):
    state, other_state = model.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys()
    differing = [key for key in state if not torch.equal(state[key], other_state[key])]
    assert not differing, f"{len(differing)} of {len(state)} tensors differ, e.g. {differing[:3]}"


@pytest.fixture(scope="module")
def straight(table, tmp_path_factory):
    """Seed 0, all three stages in one call."""
    return train_all(table, config=config(), out_dir=tmp_path_factory.mktemp("straight"), validate_epochs=False)


@pytest.mark.parametrize("stages", [("sparse", "correlation", "completion"), ("sparse", "completion")])
def test_stages_trained_one_call_at_a_time_end_as_the_straight_run(table, straight, tmp_path, stages):
    whole = straight if len(stages) == 3 else train_all(table, config=config(), stages=stages,
                                                        out_dir=tmp_path / "whole", validate_epochs=False)
    previous = None
    for stage in stages:
        done = train_all(table, config=config(), stages=(stage,), init_checkpoint=previous,
                         out_dir=tmp_path / stage, validate_epochs=False)
        previous = done.stage_checkpoints[stage]
        assert_same_weights(done.model, load_checkpoint(whole.stage_checkpoints[stage]).model)
    assert_same_weights(done.model, whole.model)
    assert load_checkpoint(previous).random_state["saved"]["torch"].dtype == torch.uint8


def test_going_on_with_another_seed_draws_anew(table, straight, tmp_path):
    """The seed still decides: a checkpoint's draw is taken up only by a run of its own seed."""
    reseeded = train_all(table, config=config(seed=1), stages=("correlation", "completion"),
                         init_checkpoint=straight.stage_checkpoints["sparse"], out_dir=tmp_path,
                         validate_epochs=False)
    state, other = reseeded.model.state_dict(), straight.model.state_dict()
    assert any(not torch.equal(state[key], other[key]) for key in state)


@pytest.mark.parametrize("stage", ["sparse", "correlation", "completion"])
def test_a_stage_cancelled_after_an_epoch_and_resumed_ends_as_the_straight_run(table, straight, tmp_path, stage):
    seen = []

    def progress(event):
        seen.append(event)

    def should_stop():
        return any(event["stage"] == stage and event["epoch"] == 2 and event["step"] > 0 for event in seen)

    with pytest.raises(Cancelled):
        train_all(table, config=config(), progress=progress, should_stop=should_stop, out_dir=tmp_path,
                  validate_epochs=False)
    last = load_checkpoint(tmp_path / "last.pt")
    assert (last.stage, last.epoch, last.stage_complete) == (stage, 0, False)
    later = ("sparse", "correlation", "completion")[("sparse", "correlation", "completion").index(stage):]
    resumed = train_all(table, config=config(), stages=later, init_checkpoint=last, out_dir=tmp_path / "resumed",
                        validate_epochs=False)
    assert_same_weights(resumed.model, straight.model)


def test_an_ensembles_members_are_the_straight_runs_of_their_seeds(table, straight, tmp_path):
    """Trained stage by stage, in two calls (the second going on from the ensemble's stage 1 checkpoint, as a
    resumed web app training does), the members are seed 0's and seed 1's models run straight through."""
    first = train_all(table, config=config(ensemble=2), stages=("sparse",), out_dir=tmp_path / "first",
                      validate_epochs=False)
    ensemble = train_all(table, config=config(ensemble=2), stages=("correlation", "completion"),
                         init_checkpoint=first.stage_checkpoints["sparse"], out_dir=tmp_path / "rest",
                         validate_epochs=False)
    seed_1 = train_all(table, config=config(seed=1), out_dir=None, validate_epochs=False)
    assert_same_weights(ensemble.model.members[0], straight.model)
    assert_same_weights(ensemble.model.members[1], seed_1.model)
