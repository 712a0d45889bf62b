"""Backbones, selectable by name through one registry and one factory (timm style).

    @register_backbone("small")
    def small_cnn(num_outputs, width=32, **kwargs): ...

    model = create_model("resnet18", num_outputs=15)
    model = create_model("timm/efficientnet_b0", num_outputs=15, in_channels=4)

Every backbone maps a (B, C, H, W) float batch to (B, num_outputs) raw logits; C is the
``in_channels`` keyword (3 for RGB crops, 4 with the target nucleus's mask channel).

- ``small``: the CPU default, a few conv-BN-ReLU blocks sized for 64 x 64 crops on two cores.
- ``resnet18``, ``resnet50``: timm's ResNets; ``small_input=True`` gives them a 3x3/1 stem.
- ``timm/<model name>``: any model timm knows, e.g. ``timm/convnext_atto``.
- ``auto`` (a config value, not a backbone): :func:`resolve_backbone` picks ``small`` on a CPU and
  ``resnet18`` with the small-input stem on a GPU.

Weights are random unless the option ``pretrained_file`` names a local state dict (.pth, .bin or
.safetensors, in timm's key layout, e.g. a timm model's ``model.safetensors``): nothing is ever
downloaded. A first conv of another channel count is adapted by timm (``adapt_input_conv``) and a
classifier of another size is left at its random initialisation.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

AUTO = "auto"
TIMM_PREFIX = "timm/"
# What "auto" becomes on each kind of device (the options given with "auto" are added to these). On a
# CPU the default stays the 16-wide small net, the one every CPU benchmark figure was measured with
# (13 M multiply-adds per 64 px crop). A GPU gets a ResNet-18 with a 3x3 stem, so that a 64 px crop keeps
# 8 x 8 cells at layer4: 2.2 G multiply-adds per crop, about 10 PFLOP for the CLI's default schedule
# (about 750,000 crops through the backbone), minutes on a current GPU against the CPU's 30-minute
# budget (an estimate: not yet timed on a GPU).
AUTO_CHOICE = {"cpu": ("small", {}), "cuda": ("resnet18", {"small_input": True})}

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
    """The built-in backbone names (``timm/<name>`` adds every model timm knows)."""
    return sorted(_BACKBONES)


def backbone_choices() -> list[str]:
    """What a user may pick in a form or on the command line: ``auto`` and the built-in names."""
    return [AUTO, *list_backbones()]


def check_backbone_name(name: str) -> None:
    """Raise ValueError unless ``name`` is ``auto``, a built-in backbone or ``timm/<a model timm knows>``."""
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a string, got {name!r}")
    if name == AUTO or name in _BACKBONES:
        return
    if name.startswith(TIMM_PREFIX):
        if not import_timm().is_model(name[len(TIMM_PREFIX):]):
            raise ValueError(f"unknown backbone {name!r}: timm has no model {name[len(TIMM_PREFIX):]!r} "
                             "(timm.list_models() lists them)")
        return
    raise ValueError(f"unknown backbone {name!r} (known: {', '.join(backbone_choices())}, "
                     f"or {TIMM_PREFIX}<a timm model name>)")


def create_model(name: str, num_outputs: int, **kwargs) -> nn.Module:
    """The one factory: a registered backbone or ``timm/<name>`` with ``num_outputs`` logits."""
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be positive, got {num_outputs}")
    if name == AUTO:
        raise ValueError("backbone 'auto' depends on the device: resolve_backbone() turns it into a name first")
    check_backbone_name(name)
    if name.startswith(TIMM_PREFIX):
        return timm_model(name[len(TIMM_PREFIX):], num_outputs, **kwargs)
    return _BACKBONES[name](num_outputs, **kwargs)


def resolve_backbone(name: str, kwargs: dict | None, device: str | torch.device | None) -> tuple[str, dict]:
    """The backbone to build for ``name`` on ``device``: ``auto`` becomes :data:`AUTO_CHOICE`'s entry
    for the device's type (its options, then the given ones); any other name is returned as it is.
    ``device`` None or "auto" means CUDA when it is available, as the training's device does."""
    kwargs = dict(kwargs or {})
    if name != AUTO:
        return name, kwargs
    if device is None or str(device) == AUTO:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    chosen, defaults = AUTO_CHOICE[kind]
    return chosen, {**defaults, **kwargs}


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


@register_backbone("resnet18")
def resnet18(num_outputs: int, **kwargs) -> nn.Module:
    return timm_resnet("resnet18", num_outputs, **kwargs)


@register_backbone("resnet50")
def resnet50(num_outputs: int, **kwargs) -> nn.Module:
    return timm_resnet("resnet50", num_outputs, **kwargs)


def timm_resnet(arch: str, num_outputs: int, width: int = 64, small_input: bool = False,
                zero_init_residual: bool = True, pretrained_file: str | os.PathLike | None = None,
                in_channels: int = 3, **kwargs) -> nn.Module:
    """timm's ResNet with stage widths ``width * (1, 2, 4, 8)``. ``small_input=True`` swaps the 7x7/2
    stem and max-pool for a 3x3/1 stem, the usual choice for 32-64 px inputs (otherwise a 64 px crop
    is 2 x 2 at layer4); a pretrained 7x7 stem does not fit it, so that conv then starts fresh.
    ``zero_init_residual`` is timm's ``zero_init_last`` under the name the hand-written ResNet used."""
    model = timm_model(arch, num_outputs, in_channels, channels=tuple(width * 2 ** stage for stage in range(4)),
                       zero_init_last=zero_init_residual, **kwargs)
    if width != 64:
        _narrow_stem(model, width)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    if pretrained_file is not None:
        load_pretrained_file(model, pretrained_file, num_outputs, in_channels)
    return model


def _narrow_stem(model: nn.Module, width: int) -> None:
    """timm's plain stem is 64 channels wide whatever the stage widths; make it ``width`` wide as the first
    stage (and as the hand-written ResNet, whose checkpoints of any width must load): the stem conv and BN,
    and the first block's input conv and shortcut, which then reads ``width`` channels."""
    model.conv1 = nn.Conv2d(model.conv1.in_channels, width, 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    first = model.layer1[0]
    first.conv1 = nn.Conv2d(width, first.conv1.out_channels, first.conv1.kernel_size, first.conv1.stride,
                            first.conv1.padding, bias=False)
    out_channels = (first.conv3 if hasattr(first, "conv3") else first.conv2).out_channels  # Bottleneck, BasicBlock
    first.downsample = None if out_channels == width else nn.Sequential(
        nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    for conv in (model.conv1, first.conv1, *([first.downsample[0]] if first.downsample is not None else [])):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def timm_model(arch: str, num_outputs: int, in_channels: int = 3, dropout: float | None = None,
               pretrained_file: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """``timm.create_model`` with random weights, or with a local file's (never a download).
    ``dropout`` is timm's ``drop_rate`` (before the classifier); other options go to timm as they are."""
    timm = import_timm()
    if dropout is not None:
        kwargs["drop_rate"] = dropout
    model = timm.create_model(arch, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **kwargs)
    if pretrained_file is not None:
        load_pretrained_file(model, pretrained_file, num_outputs, in_channels)
    return model


def load_pretrained_file(model: nn.Module, path: str | os.PathLike, num_outputs: int, in_channels: int) -> None:
    """Load a timm-layout state dict from ``path`` into ``model`` through timm's ``load_pretrained``,
    which adapts the first conv to ``in_channels`` and drops a classifier of another size. Every other
    weight must be in the file, and nothing else: a file of another architecture is an error rather
    than a silent partial load."""
    from timm.models import load_pretrained, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone option pretrained_file: {path} not found")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # torch and safetensors raise several types for a corrupt or foreign file
        raise ValueError(f"backbone option pretrained_file: {path} is not a readable state dict ({exc})") from None
    config = dict(model.pretrained_cfg)
    classifiers = config.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    head_keys = {f"{name}.{kind}" for name in classifiers for kind in ("weight", "bias")}
    expected = set(model.state_dict()) - head_keys
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected - head_keys)
    if missing or unexpected:
        raise ValueError(f"backbone option pretrained_file: {path} does not fit {config.get('architecture')} "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    first_convs = config.get("first_conv") or ()
    stems_that_fit = {}
    for name in (first_convs,) if isinstance(first_convs, str) else first_convs:
        weight, module = state.get(f"{name}.weight"), model.get_submodule(name)
        if weight is None or not isinstance(module, nn.Conv2d) or weight.ndim != 4:
            continue
        if weight.shape == module.weight.shape:
            stems_that_fit[f"{name}.weight"] = weight
        if weight.shape[2:] != module.weight.shape[2:]:
            del state[f"{name}.weight"]  # another kernel size (the small-input stem): it starts fresh
        elif module.groups == 1 and module.in_channels == in_channels:
            # The file's own input channels (timm assumes the cfg's 3), so a 4-channel file also adapts.
            config["input_size"] = (weight.shape[1], *tuple(config.get("input_size") or (3, 224, 224))[1:])
    head = next((state[f"{name}.weight"] for name in classifiers if f"{name}.weight" in state), None)
    # The file's own head size, so that a head of this model's size is loaded and another one is dropped.
    config["num_classes"] = head.shape[0] if head is not None else -1
    # The state dict itself is the weight source: the download locations are cleared, so nothing is fetched.
    config.update(state_dict=state, file=None, url=None, hf_hub_id=None, source=None)
    try:
        # Not strict: the keys were checked above; only a dropped head or stem is left out.
        load_pretrained(model, pretrained_cfg=config, num_classes=num_outputs, in_chans=in_channels, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise ValueError(f"backbone option pretrained_file: {path} does not fit "
                         f"{config.get('architecture')}: {exc}") from None
    # A stem that already fits is the file's own. timm releases before our pin assume 3 source channels,
    # try to adapt such a stem and fall back to a random one with only a log warning: set it here.
    with torch.no_grad():
        for key, weight in stems_that_fit.items():
            model.get_parameter(key).copy_(weight)


def import_timm():
    """Import timm (slow, so only when a timm backbone is used), offline and on a CPU-only torch.

    timm imports torchvision. The torchvision wheel from PyPI is built against CUDA torch; beside a
    CPU-only torch its C++ ops cannot load, and its import then stops at registering a fake kernel for
    ``torchvision::nms`` (pytorch/vision#9337). Declaring the two ops it registers unconditionally (nms,
    qnms) without any kernel lets the import go on: timm uses no torchvision op, and calling one raises.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "torchvision" not in sys.modules:
        _declare_torchvision_ops_if_unloadable()
    import timm

    return timm


def _declare_torchvision_ops_if_unloadable() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return  # timm's own ImportError will name the missing package
    for library in Path(spec.origin).parent.glob("_C.*"):
        try:
            torch.ops.load_library(str(library))
            return
        except OSError:
            break
    for op in ("nms", "qnms"):
        if not hasattr(torch.ops.torchvision, op):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
