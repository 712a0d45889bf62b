import math

import torch
import torch.nn.functional as F

from mlcore.losses import completion_loss
from mlcore.types import MISSING

BLOCKS = ((0, 2), (2, 5))  # set 0: 2 classes, set 1: 3 classes


def confident(index, size, strength=20.0):
    row = torch.zeros(size)
    row[index] = strength
    return row


def test_threshold_gates_the_pseudo_labels():
    # One nucleus whose set-1 class is missing (set 0 known).
    base = torch.cat([torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.5, 0.2])])[None]  # base set 1 unsure
    mlp0 = torch.tensor([[1.0, 0.0]])
    mlp1 = confident(2, 3)[None]  # MLP_1 is sure: class 2
    labels = torch.tensor([[0, -1]])
    loss, terms = completion_loss(base, [mlp0, mlp1], labels, BLOCKS, threshold=0.99)
    # base block 1 learns class 2 from the confident MLP; MLP_1 learns nothing from the unsure base
    assert terms.pseudo_counts[1].tolist() == [1, 0]
    expected_pseudo = F.cross_entropy(base[:, 2:5], torch.tensor([2])).item()
    assert math.isclose(terms.pseudo[1, 0].item(), expected_pseudo, rel_tol=1e-6)
    assert math.isnan(terms.pseudo[1, 1].item())
    # with a threshold above the MLP's confidence nothing passes
    _, strict = completion_loss(base, [mlp0, mlp1], labels, BLOCKS, threshold=1 - 1e-12)
    assert strict.pseudo_counts.sum() == 0
    # with a low threshold the base's argmax (class 1) also teaches MLP_1
    _, loose = completion_loss(base, [mlp0, mlp1], labels, BLOCKS, threshold=0.3)
    assert loose.pseudo_counts[1].tolist() == [1, 1]
    assert math.isclose(loose.pseudo[1, 1].item(), F.cross_entropy(mlp1, torch.tensor([1])).item(), rel_tol=1e-6)


def test_loss_is_normalised_over_present_cells():
    torch.manual_seed(0)
    logits = torch.randn(3, 5)
    mlp = [torch.randn(3, 2), confident(0, 3).repeat(3, 1)]
    labels = torch.tensor([[1, -1], [0, -1], [1, -1]])  # set 1 never known, set 0 always
    loss, terms = completion_loss(logits, mlp, labels, BLOCKS, threshold=0.99)
    supervised = [F.cross_entropy(logits[:, 0:2], labels[:, 0]), F.cross_entropy(mlp[0], labels[:, 0])]
    pseudo = [F.cross_entropy(logits[:, 2:5], torch.zeros(3, dtype=torch.long))]
    # only present cells count: 2 supervised (set 0), 1 pseudo (set 1, base <- mlp)
    expected = sum(supervised) / 2 + sum(pseudo) / 1
    assert torch.isclose(loss, expected, rtol=1e-6)
    assert int((~torch.isnan(terms.supervised)).sum()) == 2
    assert int((~torch.isnan(terms.pseudo)).sum()) + int((terms.pseudo_counts > 0).sum()) == 2


def test_pseudo_targets_are_detached_and_both_branches_get_gradients():
    logits = confident(1, 5)[None].repeat(2, 1).requires_grad_(True)   # base set 0 sure: class 1
    mlp0 = confident(0, 2)[None].repeat(2, 1).requires_grad_(True)    # MLP_0 sure: class 0
    mlp1 = torch.randn(2, 3, requires_grad=True)
    labels = torch.tensor([[-1, 2], [-1, 0]])   # set 0 missing on both
    loss, terms = completion_loss(logits, [mlp0, mlp1], labels, BLOCKS, threshold=0.9)
    loss.backward()
    assert terms.pseudo_counts[0].tolist() == [2, 2]
    assert logits.grad[:, 0:2].abs().sum() > 0 and mlp0.grad.abs().sum() > 0
    assert math.isfinite(loss.item())


def test_unlabelled_nuclei_get_pseudo_labels_in_every_set():
    logits = torch.cat([confident(0, 2), confident(2, 3)])[None]
    mlp = [confident(0, 2)[None], confident(2, 3)[None]]
    loss, terms = completion_loss(logits, mlp, torch.tensor([[-1, -1]]), BLOCKS, threshold=0.99)
    assert terms.pseudo_counts.tolist() == [[1, 1], [1, 1]]
    assert torch.isnan(terms.supervised).all()
    assert loss.item() < 1e-3   # everyone agrees with confidence (base logits clamp at 10)


def test_pseudo_weight_scales_only_the_pseudo_cells():
    torch.manual_seed(0)
    blocks = ((0, 2), (2, 5))
    logits = torch.randn(6, 5) * 20          # large logits: confident branches, so pseudo cells exist
    heads = [torch.randn(6, 2) * 20, torch.randn(6, 3) * 20]
    labels = torch.tensor([[0, MISSING], [1, MISSING], [1, MISSING], [MISSING, 2], [MISSING, 0], [MISSING, 1]])
    full, terms = completion_loss(logits, heads, labels, blocks, threshold=0.5, pseudo_weight=1.0)
    half, _ = completion_loss(logits, heads, labels, blocks, threshold=0.5, pseudo_weight=0.5)
    none, _ = completion_loss(logits, heads, labels, blocks, threshold=0.5, pseudo_weight=0.0)
    supervised = torch.nanmean(terms.supervised)
    pseudo = torch.nanmean(terms.pseudo)
    assert int(terms.pseudo_counts.sum()) > 0
    torch.testing.assert_close(none, supervised)
    torch.testing.assert_close(full, supervised + pseudo)
    torch.testing.assert_close(half, supervised + 0.5 * pseudo)


def test_nuclei_weighting_averages_over_entries_not_cells():
    torch.manual_seed(1)
    logits = torch.randn(4, 5)
    heads = [torch.randn(4, 2), torch.randn(4, 3)]
    # set 0 known on three nuclei, set 1 on one; a threshold of ~1 keeps the pseudo cells empty
    labels = torch.tensor([[1, MISSING], [0, MISSING], [1, MISSING], [MISSING, 2]])
    per_entry = [F.cross_entropy(logits[:3, 0:2], labels[:3, 0], reduction="sum"),
                 F.cross_entropy(heads[0][:3], labels[:3, 0], reduction="sum"),
                 F.cross_entropy(logits[3:, 2:5], labels[3:, 1], reduction="sum"),
                 F.cross_entropy(heads[1][3:], labels[3:, 1], reduction="sum")]
    by_nuclei, _ = completion_loss(logits, heads, labels, BLOCKS, threshold=1 - 1e-12, weighting="nuclei")
    assert torch.isclose(by_nuclei, sum(per_entry) / 8, rtol=1e-6)
    by_cells, _ = completion_loss(logits, heads, labels, BLOCKS, threshold=1 - 1e-12)
    cells = [per_entry[0] / 3, per_entry[1] / 3, per_entry[2], per_entry[3]]
    assert torch.isclose(by_cells, sum(cells) / 4, rtol=1e-6)
    assert not torch.isclose(by_cells, by_nuclei)
