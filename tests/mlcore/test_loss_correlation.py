import torch
import torch.nn.functional as F

from mlcore.losses import correlation_loss
from mlcore.model import CrossTrainedModel
from mlcore.types import LabelSet


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
