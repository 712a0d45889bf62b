import torch
import torch.nn.functional as F

from mlcore.losses import correlation_loss
from mlcore.model import CrossTrainedModel
from mlcore.types import MISSING, LabelSet


def test_cross_entropy_on_known_rows_only():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels = torch.tensor([0, -1, 1])
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([0, 1]))
    assert torch.isclose(correlation_loss(logits, labels), expected)


def test_no_known_row_gives_zero_loss_with_a_graph():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = correlation_loss(logits, torch.full((3,), -1))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


def test_mlp_shapes_and_inputs_are_the_other_blocks_raw_logits():
    sets = [LabelSet("a", ("x", "y", "z")), LabelSet("b", ("p", "q")), LabelSet("c", ("r", "s", "t", "u"))]
    model = CrossTrainedModel(sets, "small", {"width": 4})
    model.eval()
    # Linear(K - |L_d| -> 128) -> BatchNorm1d -> ReLU -> Linear(128 -> |L_d|)
    for d, size in enumerate((3, 2, 4)):
        head = model.correlation_heads[d]
        assert head[0].in_features == 9 - size and head[0].out_features == 128
        assert isinstance(head[1], torch.nn.BatchNorm1d) and isinstance(head[2], torch.nn.ReLU)
        assert head[3].out_features == size
    logits = torch.randn(5, 9)
    outputs = model.heads_forward(logits)
    assert [o.shape for o in outputs] == [(5, 3), (5, 2), (5, 4)]
    # MLP_1 ("b", columns 3:5) must not see its own block: changing it changes nothing.
    changed = logits.clone()
    changed[:, 3:5] += 100
    assert torch.allclose(model.heads_forward(changed)[1], outputs[1])
    assert not torch.allclose(model.heads_forward(changed)[0], outputs[0])


def test_stage_two_draws_rare_classes_as_often_as_common_ones_when_class_balanced():
    from mlcore.stages import correlation_epoch_rows

    labels_d = torch.tensor([0] * 180 + [1] * 20 + [MISSING] * 50)
    balanced = correlation_epoch_rows(labels_d, class_power=1.0, generator=torch.Generator().manual_seed(0))
    assert len(balanced) == 200 and bool((labels_d[balanced] != MISSING).all())
    rare_share = float((labels_d[balanced] == 1).float().mean())
    assert 0.4 < rare_share < 0.6, rare_share                       # 0.1 without balancing
    plain = correlation_epoch_rows(labels_d, class_power=0.0, generator=torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(200))               # one shuffled pass over the known rows


def test_small_label_sets_get_more_stage_two_draws_with_dataset_power():
    from mlcore.stages import correlation_draws, correlation_epoch_rows

    assert correlation_draws([15000, 250, 0], dataset_power=0.0) == [15000, 250, 0]
    draws = correlation_draws([15000, 250, 0], dataset_power=0.5)
    assert draws[0] == 15000 and draws[2] == 0
    assert draws[1] == round(15000 * (250 / 15000) ** 0.5)            # ~1,936: the sampler's square-root share
    labels_d = torch.tensor([0, 1, MISSING, 1])
    rows = correlation_epoch_rows(labels_d, 0.0, torch.Generator().manual_seed(0), draws=50)
    assert len(rows) == 50 and set(rows.tolist()) <= {0, 1, 3}
