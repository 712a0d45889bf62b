import math

import torch
import torch.nn.functional as F

from mlcore.losses import sparse_loss

BLOCKS = ((0, 3), (3, 5), (5, 9))  # label sets of 3, 2 and 4 classes: K = 9


def test_missing_label_sets_get_exactly_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 9, requires_grad=True)
    labels = torch.tensor([[2, -1, -1],     # only set 0 known
                           [-1, 1, -1],     # only set 1 known
                           [0, -1, 3],      # two sets known on one nucleus
                           [-1, -1, -1]])   # nothing known (unlabelled)
    sparse_loss(logits, labels, BLOCKS).backward()
    grad = logits.grad
    assert (grad[0, 3:] == 0).all() and (grad[0, :3] != 0).all()
    assert (grad[1, :3] == 0).all() and (grad[1, 5:] == 0).all() and (grad[1, 3:5] != 0).all()
    assert (grad[2, 3:5] == 0).all() and (grad[2, :3] != 0).all() and (grad[2, 5:] != 0).all()
    assert (grad[3] == 0).all()


def test_value_is_block_softmax_cross_entropy_averaged_over_known_cells():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5, -0.5, 0, 0, 0, 0],
                           [0.0, 0.0, 0.0, 2.0, 1.0, 1, 2, 3, 4]])
    labels = torch.tensor([[2, 0, -1], [-1, 1, 3]])
    expected = (-math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)))
                - F.log_softmax(torch.tensor([0.5, -0.5]), 0)[0].item()
                - F.log_softmax(torch.tensor([2.0, 1.0]), 0)[1].item()
                - F.log_softmax(torch.tensor([1.0, 2, 3, 4]), 0)[3].item()) / 4
    assert math.isclose(sparse_loss(logits, labels, BLOCKS).item(), expected, rel_tol=1e-6)


def test_logits_are_clamped_to_plus_minus_ten():
    logits = torch.zeros(1, 9)
    logits[0, 0] = 50.0   # clamped to 10
    labels = torch.tensor([[1, -1, -1]])
    expected = -F.log_softmax(torch.tensor([10.0, 0.0, 0.0]), 0)[1].item()
    assert math.isclose(sparse_loss(logits, labels, BLOCKS).item(), expected, rel_tol=1e-6)


def test_all_missing_batch_is_zero_and_differentiable():
    logits = torch.randn(3, 9, requires_grad=True)
    loss = sparse_loss(logits, torch.full((3, 3), -1), BLOCKS)
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()
