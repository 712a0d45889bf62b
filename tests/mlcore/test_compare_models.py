"""A new model against the one it replaces, on the same validation rows (mlcore.train.compare_models)."""

import numpy as np
import pytest
import torch

from mlcore.crops import CropSpec
from mlcore.model import CrossTrainedModel
from mlcore.train import compare_models, evaluate
from mlcore.types import LabelSet
from tests.mlcore.helpers import two_set_table


def model_for(label_sets, seed: int, crop=64) -> CrossTrainedModel:
    torch.manual_seed(seed)
    return CrossTrainedModel(label_sets, "small", {"width": 4}, crop).eval()


def test_both_models_are_scored_on_the_same_rows_per_label_set():
    table, sets = two_set_table(images_per_set=3, crop_size=64)
    rows = np.arange(0, len(table), 2)
    new, old = model_for(sets, 0), model_for(sets, 2)  # seeds whose untrained models predict other classes
    compared = compare_models(new, old, table, rows)

    mine, theirs = evaluate(new, table, rows), evaluate(old, table, rows)
    assert set(compared) == {"A", "B"}
    for name, row in compared.items():
        assert row["n"] == mine[name]["n"] == theirs[name]["n"] > 0
        assert row["macro_f1"] == mine[name]["macro_f1"] and row["previous_macro_f1"] == theirs[name]["macro_f1"]
        assert row["accuracy"] == mine[name]["accuracy"] and row["previous_accuracy"] == theirs[name]["accuracy"]
    # Two differently initialised models do not score alike on every set: the comparison reads both.
    assert any(r["macro_f1"] != r["previous_macro_f1"] for r in compared.values())
    for row in compared.values():   # the interval is of this difference: it holds the observed one
        low, high = row["difference_interval"]
        assert low <= row["macro_f1"] - row["previous_macro_f1"] <= high


def test_a_model_against_itself_differs_by_nothing():
    table, sets = two_set_table(images_per_set=2, crop_size=64)
    model = model_for(sets, 0)
    compared = compare_models(model, model, table, np.arange(len(table)))
    assert all(row["difference_interval"] == [0.0, 0.0] for row in compared.values())


def test_a_label_set_the_previous_model_lacks_is_left_out():
    table, sets = two_set_table(images_per_set=2, crop_size=64)
    rows = np.arange(len(table))
    compared = compare_models(model_for(sets, 0), model_for(sets[:1], 1), table, rows)
    assert list(compared) == ["A"]


def test_a_previous_model_that_cuts_crops_otherwise_cannot_be_compared():
    table, sets = two_set_table(images_per_set=2, crop_size=64)
    previous = model_for(sets, 1, crop=CropSpec(64, context=2.0))
    with pytest.raises(ValueError, match="it cuts 64 px crops with a 2x window, where this model cuts 64 px crops$"):
        compare_models(model_for(sets, 0), previous, table, np.arange(len(table)))


def test_a_previous_model_with_other_classes_cannot_be_compared():
    table, sets = two_set_table(images_per_set=2, crop_size=64)
    renamed = [sets[0], LabelSet("B", ("b0", "b1", "b2"))]
    with pytest.raises(ValueError, match="classes differ"):
        compare_models(model_for(sets, 0), model_for(renamed, 1), table, np.arange(len(table)))


def test_with_tta_both_are_scored_on_eight_views_and_the_new_models_logits_can_be_passed_in():
    from mlcore.predict import forward_logits
    from mlcore.train import evaluation_rows
    from tests.mlcore.helpers import random_model

    table, sets = two_set_table(images_per_set=3, crop_size=64)
    rows = np.arange(0, len(table), 2)
    new, old = random_model(sets, 0).eval(), random_model(sets, 2).eval()   # their flips answer differently
    compared = compare_models(new, old, table, rows, tta=True)
    mine, theirs = evaluate(new, table, rows, tta=True), evaluate(old, table, rows, tta=True)
    for name, row in compared.items():
        assert row["macro_f1"] == mine[name]["macro_f1"] and row["previous_macro_f1"] == theirs[name]["macro_f1"]
    assert compared != compare_models(new, old, table, rows)   # one view scores otherwise

    # The caller's own logits of the new model (as the web app has them from scoring it) give the same answer.
    outputs = forward_logits(new, table.crops[evaluation_rows(new, table, rows)], tta=True)
    assert compare_models(new, old, table, rows, tta=True, outputs=outputs) == compared


def test_scoring_stops_between_batches_when_asked():
    """Scoring thousands of nuclei on 8 views each takes a while: ``should_stop`` is asked before every batch."""
    from mlcore.predict import forward_logits
    from mlcore.train import evaluate_with_logits
    from mlcore.types import Cancelled

    table, sets = two_set_table(images_per_set=3, crop_size=64)
    new, old = model_for(sets, 0), model_for(sets, 2)
    asked = []

    def stop_at_third():
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(Cancelled):
        forward_logits(new, table.crops, batch_size=4, tta=True, should_stop=stop_at_third)
    assert len(asked) == 3   # two batches ran, the third was never started
    assert len(table) > 3 * 4
    for score in (lambda stop: evaluate_with_logits(new, table, tta=True, batch_size=4, should_stop=stop),
                  lambda stop: compare_models(new, old, table, tta=True, should_stop=stop)):
        with pytest.raises(Cancelled):
            score(lambda: True)
    # Never asked to stop: the same logits as without the question.
    assert all(torch.equal(a, b) for a, b in zip(
        forward_logits(new, table.crops, batch_size=4)[1], forward_logits(new, table.crops, batch_size=4,
                                                                          should_stop=lambda: False)[1]))
