"""Backbones, selectable by name through one registry and one factory (timm style).

    @register_backbone("small")
    def small_cnn(num_outputs, width=32, **kwargs): ...

    model = create_model("resnet18", num_outputs=15)

Every backbone maps a (B, C, H, W) float batch to (B, num_outputs) raw logits; C is the
``in_channels`` keyword (3 for RGB crops, 4 with the target nucleus's mask channel). ResNet-18/50 are
written here from the paper (He et al. 2016) because torchvision is not a dependency; the
CPU default ``small`` is a few conv-BN-ReLU blocks sized for 64 x 64 crops on two cores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    """Decorator adding a backbone constructor ``fn(num_outputs, **kwargs) -> nn.Module``."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    return add


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_model(name: str, num_outputs: int, **kwargs) -> nn.Module:
    """The one factory: a registered backbone with ``num_outputs`` logits."""
    try:
        constructor = _BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r} (known: {', '.join(list_backbones())})") from None
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be positive, got {num_outputs}")
    return constructor(num_outputs, **kwargs)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with stride-2 downsampling, global average pooling and a linear head.

    ``stem_stride=2`` halves the 64 x 64 crop at once: a 4x cheaper network whose receptive
    field still covers the nucleus and its neighbours, which is what lets it train on a CPU.
    """

    def __init__(self, num_outputs: int, width: int = 16, stem_stride: int = 2, blocks_per_stage: int = 2,
                 dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, width, stem_stride)]
        channels = width
        for stage in range(4):
            out_channels = width * 2 ** stage
            for block in range(blocks_per_stage):
                stride = 2 if (block == 0 and stage > 0) else 1
                if stage == 0 and block == 0:
                    continue  # the stem already is the first block of stage 0
                layers.append(conv_bn_relu(channels, out_channels, stride))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_outputs)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


@register_backbone("small")
def small_cnn(num_outputs: int, **kwargs) -> nn.Module:
    return SmallCNN(num_outputs, **kwargs)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # Stride on the 3x3 conv (ResNet v1.5, as torchvision): better accuracy than on the 1x1.
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class ResNet(nn.Module):
    """ResNet for classification. ``small_input=True`` swaps the 7x7/2 stem and max-pool for a
    3x3/1 stem, the usual choice for 32-64 px inputs (otherwise a 64 px crop is 2 x 2 at layer4)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_outputs: int,
                 width: int = 64, small_input: bool = False, zero_init_residual: bool = True, in_channels: int = 3):
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        in_channels = width
        stages = []
        for index, blocks in enumerate(layers):
            channels = width * 2 ** index
            stride = 1 if index == 0 else 2
            stage = []
            for block_index in range(blocks):
                stage.append(block(in_channels, channels, stride if block_index == 0 else 1))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_outputs)
        self.num_features = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            # Each residual block starts as the identity: easier optimisation (Goyal et al. 2017).
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_backbone("resnet18")
def resnet18(num_outputs: int, **kwargs) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_outputs, **kwargs)


@register_backbone("resnet50")
def resnet50(num_outputs: int, **kwargs) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_outputs, **kwargs)
