import numpy as np
import torch

from mlcore.model import CrossTrainedModel
from mlcore.predict import predict
from mlcore.types import LabelSet
from mlcore.uncertainty import entropy, js_divergence, least_confidence, margin


def test_final_class_is_argmax_of_the_mean_of_both_branches():
    sets = [LabelSet("a", ("x", "y", "z")), LabelSet("b", ("p", "q"))]
    torch.manual_seed(0)
    model = CrossTrainedModel(sets, "small", {"width": 4})
    model.use_correlation.fill_(True)
    crops = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    out = predict(model, crops, batch_size=4)   # two batches
    for name, size in (("a", 3), ("b", 2)):
        p = out[name]
        assert p.base_probs.shape == (6, size) and p.mlp_probs.shape == (6, size)
        np.testing.assert_allclose(p.probs, (p.base_probs + p.mlp_probs) / 2, atol=1e-6)
        assert (p.labels == p.probs.argmax(1)).all()
        np.testing.assert_allclose(p.probs.sum(1), 1, atol=1e-5)
        for score in p.uncertainty.values():
            assert score.shape == (6,) and (score >= 0).all() and (score <= 1).all()
    model.use_correlation.fill_(False)   # before stage 2: the base branch alone
    base_only = predict(model, crops)
    assert base_only["a"].mlp_probs is None and (base_only["a"].uncertainty["disagreement"] == 0).all()
    np.testing.assert_allclose(base_only["a"].probs, out["a"].base_probs, atol=1e-6)


def test_uncertainty_scores_on_known_distributions():
    sure = np.array([[1.0, 0.0, 0.0]])
    uniform = np.full((1, 3), 1 / 3)
    assert least_confidence(sure)[0] == 0 and np.isclose(least_confidence(uniform)[0], 2 / 3)
    assert margin(sure)[0] == 0 and np.isclose(margin(uniform)[0], 1)
    assert np.isclose(entropy(sure)[0], 0, atol=1e-9) and np.isclose(entropy(uniform)[0], 1)
    assert np.isclose(js_divergence(sure, sure)[0], 0, atol=1e-9)
    assert np.isclose(js_divergence(sure, np.array([[0.0, 1.0, 0.0]]))[0], 1)   # certain of different classes
    a, b = np.array([[0.7, 0.3]]), np.array([[0.4, 0.6]])
    assert np.isclose(js_divergence(a, b), js_divergence(b, a)).all()
