"""The cross-trained classifier: a backbone over the merged label space plus one label-correlation
MLP per label set.

The backbone outputs K = sum |L_d| logits, one block per label set (the "base" branch). MLP_d
reads the raw logits of every *other* block and predicts label set d (the "correlation" branch):
what a nucleus looks like in other taxonomies says something about its class in this one.
"""

from __future__ import annotations

import torch
from torch import nn

from mlcore.backbones import create_model
from mlcore.crops import CropSpec
from mlcore.slides import DEFAULT_MODEL_MPP
from mlcore.types import LabelSet

CORRELATION_HIDDEN = 128


def correlation_mlp(in_features: int, num_classes: int, hidden: int = CORRELATION_HIDDEN) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, num_classes))


class CrossTrainedModel(nn.Module):
    """Backbone + correlation MLPs. ``forward`` returns ``(logits, mlp_logits)``:

    - ``logits``: (B, K) raw backbone logits; block d is ``logits[:, blocks[d][0]:blocks[d][1]]``;
    - ``mlp_logits``: list of D tensors (B, |L_d|), empty when there is a single label set.

    ``use_correlation`` says whether the MLPs have been trained (stage 2 onwards); before that
    prediction uses the base branch only.
    """

    def __init__(self, label_sets: list[LabelSet], backbone: str = "small", backbone_kwargs: dict | None = None,
                 crop: int | CropSpec = 64, mpp: float = DEFAULT_MODEL_MPP):
        super().__init__()
        # Microns per pixel of the images the model learnt from: a slide is resampled to it before its
        # crops are cut (CoNSeP and PanNuke are 40x, about 0.25).
        self.mpp = float(mpp)
        if not label_sets:
            raise ValueError("a model needs at least one label set")
        names = [label_set.name for label_set in label_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"label set names repeat: {names}")
        self.label_sets = tuple(label_sets)
        self.backbone_name = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.crop_spec = crop if isinstance(crop, CropSpec) else CropSpec(int(crop))
        sizes = [len(label_set) for label_set in label_sets]
        self.num_outputs = sum(sizes)
        starts = [sum(sizes[:d]) for d in range(len(sizes))]
        self.blocks = tuple((start, start + size) for start, size in zip(starts, sizes))
        self.backbone = create_model(backbone, self.num_outputs, in_channels=self.crop_spec.channels,
                                     **self.backbone_kwargs)
        # MLP_d sees the logits of every block but its own; with one label set there is no input.
        self.correlation_heads = nn.ModuleList()
        if len(label_sets) > 1:
            for d, (start, end) in enumerate(self.blocks):
                self.correlation_heads.append(correlation_mlp(self.num_outputs - (end - start), sizes[d]))
                other = torch.cat([torch.arange(0, start), torch.arange(end, self.num_outputs)])
                self.register_buffer(f"other_columns_{d}", other, persistent=False)
        self.register_buffer("use_correlation", torch.tensor(False))

    @property
    def crop_size(self) -> int:
        return self.crop_spec.size

    @property
    def has_correlation_heads(self) -> bool:
        return len(self.correlation_heads) > 0

    def other_columns(self, d: int) -> torch.Tensor:
        return getattr(self, f"other_columns_{d}")

    def block(self, logits: torch.Tensor, d: int) -> torch.Tensor:
        start, end = self.blocks[d]
        return logits[:, start:end]

    def heads_forward(self, logits: torch.Tensor) -> list[torch.Tensor]:
        return [head(logits.index_select(1, self.other_columns(d)))
                for d, head in enumerate(self.correlation_heads)]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = self.backbone(images)
        return logits, self.heads_forward(logits)

    def describe(self) -> dict:
        """What is needed to rebuild the same architecture (stored in checkpoints)."""
        return {"backbone": self.backbone_name, "backbone_kwargs": self.backbone_kwargs,
                "crop_size": self.crop_size, "crop": self.crop_spec.describe(), "num_outputs": self.num_outputs,
                "blocks": [list(block) for block in self.blocks],
                "correlation_hidden": CORRELATION_HIDDEN, "mpp": self.mpp}


class SeedEnsemble(nn.Module):
    """Models of one setting trained with different seeds, whose logits (both branches) are averaged, as test-time
    augmentation averages the views of one model (:func:`mlcore.predict.forward_logits`).

    Why: the training seed alone moved a model's validation macro-F1 by a few hundredths, and an average of two
    seeds was about as good as the better of them (README, "Ensembles of seeds"), at the members' cost in training
    and in every prediction. Everything a prediction reads besides the logits (label sets, crops, resolution, whether
    the correlation heads count) is the members' own, and the same in each."""

    def __init__(self, members: list[CrossTrainedModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        first = members[0]
        for index, member in enumerate(members[1:], start=2):
            if member.describe() != first.describe() or \
                    [(s.name, s.classes) for s in member.label_sets] != [(s.name, s.classes) for s in first.label_sets]:
                raise ValueError(f"model {index} of the ensemble differs from the first (architecture, crops or "
                                 "label sets): an ensemble is of one setting trained with different seeds")
            if bool(member.use_correlation) != bool(first.use_correlation):
                raise ValueError(f"model {index} of the ensemble ends another stage than the first (its correlation "
                                 "heads are trained in one and not the other)")
        self.members = nn.ModuleList(members)

    @property
    def first(self) -> CrossTrainedModel:
        return self.members[0]

    label_sets = property(lambda self: self.first.label_sets)
    crop_spec = property(lambda self: self.first.crop_spec)
    crop_size = property(lambda self: self.first.crop_size)
    mpp = property(lambda self: self.first.mpp)
    num_outputs = property(lambda self: self.first.num_outputs)
    blocks = property(lambda self: self.first.blocks)
    has_correlation_heads = property(lambda self: self.first.has_correlation_heads)
    use_correlation = property(lambda self: self.first.use_correlation)
    backbone_name = property(lambda self: self.first.backbone_name)
    backbone_kwargs = property(lambda self: self.first.backbone_kwargs)

    def block(self, logits: torch.Tensor, d: int) -> torch.Tensor:
        return self.first.block(logits, d)

    def describe(self) -> dict:
        return {**self.first.describe(), "members": len(self.members)}
