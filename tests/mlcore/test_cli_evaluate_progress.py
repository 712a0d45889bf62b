"""`evaluate` shows a bar of the nuclei it classifies: on the CoNSeP sample (18,216 nuclei, 8 views each) it ran for
minutes with nothing on the screen (an ML engineer's exploration found it). With --against it counts both models'
nuclei, and the model's own are classified once, not again for the comparison."""

import json

import pytest

from mlcore import cli, predict
from mlcore.checkpoint import save_checkpoint
from mlcore.config import TrainConfig
from mlcore.synthetic import generate_dataset
from mlcore.types import LabelSet
from tests.mlcore.helpers import random_model


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("evaluate_bar")
    generate_dataset(work / "one", format="seed", n_images=2, nuclei_per_image=12, class_names=["a", "b"], seed=0,
                     size=(96, 96))
    model = random_model([LabelSet("one", ("a", "b"))])
    save_checkpoint(work / "model.pt", model, "sparse", 0, True, TrainConfig())
    return work


def evaluate(work, *extra):
    return cli.main(["evaluate", "--checkpoint", str(work / "model.pt"), "--dataset", f"one=seed:{work / 'one'}",
                     "--label-set", "one", "--json", "--no-tta", *extra])


def test_evaluate_counts_the_nuclei_it_classifies(work, capsys):
    assert evaluate(work) == 0
    captured = capsys.readouterr()
    n = json.loads(captured.out)["n"]
    assert n > 0
    assert "classify: 100%" in captured.err and f"{n}/{n} [" in captured.err, captured.err


def test_against_counts_both_models_and_classifies_the_model_once(work, capsys, monkeypatch):
    passes = []
    forward = predict.forward_logits

    def counted(model, crops, *args, **kwargs):
        passes.append(len(crops))
        return forward(model, crops, *args, **kwargs)

    monkeypatch.setattr(predict, "forward_logits", counted)
    monkeypatch.setattr("mlcore.train.forward_logits", counted)
    assert evaluate(work, "--against", str(work / "model.pt")) == 0
    captured = capsys.readouterr()
    n = json.loads(captured.out)["n"]
    assert passes == [n, n]   # the model's, then the other's: not the model's twice
    assert f"{2 * n}/{2 * n} [" in captured.err, captured.err
