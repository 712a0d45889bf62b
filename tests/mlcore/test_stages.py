"""The stage objects and the one epoch loop: each stage trains what it says and nothing else."""

import numpy as np
import pytest
import torch

from mlcore.config import STAGES, TrainConfig
from mlcore.distributed import DistributedContext
from mlcore.model import CrossTrainedModel
from mlcore.stages import STAGE_TYPES, CompletionStage, CorrelationStage, SparseStage
from mlcore.train import train_one_epoch
from mlcore.types import MISSING, Cancelled
from tests.mlcore.helpers import two_set_table

CONFIG = TrainConfig(backbone_kwargs={"width": 4}, batch_size=16, samples_per_epoch=None, correlation_views=1,
                     threshold=0.5, num_threads=1)


@pytest.fixture(scope="module")
def table():
    return two_set_table(images_per_set=2, unlabelled_images=1)[0]


def build(stage_type, table):
    torch.manual_seed(0)
    model = CrossTrainedModel(list(table.label_sets), "small", {"width": 4}, CONFIG.crop_spec)
    parameters = stage_type.trainable_parameters(model)
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    rows = np.arange(len(table))
    if not stage_type.trains_on_unlabelled:
        rows = rows[(table.labels != MISSING).any(axis=1)]
    stage = stage_type(model, table, rows, CONFIG, DistributedContext(), torch.device("cpu"),
                       torch.Generator().manual_seed(0))
    return model, stage, optimizer


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_every_stage_of_the_method_has_one_type_in_order():
    assert tuple(STAGE_TYPES) == STAGES
    assert [STAGE_TYPES[name].name for name in STAGES] == list(STAGES)


@pytest.mark.parametrize("stage_type, backbone_trains, heads_train", [
    (SparseStage, True, False), (CorrelationStage, False, True), (CompletionStage, True, True)])
def test_an_epoch_changes_what_the_stage_trains_and_nothing_else(table, stage_type, backbone_trains, heads_train):
    model, stage, optimizer = build(stage_type, table)
    backbone, heads = snapshot(model.backbone), snapshot(model.correlation_heads)
    events = []
    stats = train_one_epoch(stage, optimizer, 0, 1, CONFIG, progress=events.append)
    assert changed(backbone, model.backbone) is backbone_trains
    assert changed(heads, model.correlation_heads) is heads_train
    assert stats["stage"] == stage_type.name and stats["samples"] > 0 and np.isfinite(stats["loss"])
    assert [e["step"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["steps"] == len(events)
    assert all(e["stage"] == stage_type.name for e in events)


def test_stage_one_trains_on_labelled_nuclei_only_stage_three_on_all(table):
    labelled = int((table.labels != MISSING).any(axis=1).sum())
    assert labelled < len(table)   # the table has unlabelled nuclei
    _, sparse, optimizer = build(SparseStage, table)
    assert train_one_epoch(sparse, optimizer, 0, 1, CONFIG)["samples"] == labelled
    _, completion, optimizer = build(CompletionStage, table)
    assert train_one_epoch(completion, optimizer, 0, 1, CONFIG)["samples"] == len(table)


def test_completion_reports_its_pseudo_labels_per_epoch(table):
    _, stage, optimizer = build(CompletionStage, table)
    first = train_one_epoch(stage, optimizer, 0, 2, CONFIG)
    second = train_one_epoch(stage, optimizer, 1, 2, CONFIG)
    counts = np.array(first["pseudo_labels"])
    assert counts.shape == (len(table.label_sets), 2) and counts.sum() > 0
    # Counted per epoch, not carried over: each epoch's counts are at most its nuclei per direction.
    assert (np.array(second["pseudo_labels"]) <= len(table)).all()
    assert "pseudo_labels" not in train_one_epoch(*build(SparseStage, table)[1:], 0, 1, CONFIG)


@pytest.mark.parametrize("stage_type", [SparseStage, CorrelationStage, CompletionStage])
def test_any_stage_stops_with_the_one_cancellation_exception(table, stage_type):
    _, stage, optimizer = build(stage_type, table)
    with pytest.raises(Cancelled, match=f"stopped in stage {stage_type.name}, epoch 3, step 1"):
        train_one_epoch(stage, optimizer, 2, 3, CONFIG, should_stop=lambda: True)
