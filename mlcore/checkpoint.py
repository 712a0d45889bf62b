"""Checkpoints: everything needed to resume training or to infer, loadable on a CPU-only machine.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so ``torch.load`` can
use ``weights_only=True``): model weights (backbone and MLPs), optimizer and schedule state,
stage and epoch, training config, label sets (names, classes, colours), architecture, crop
settings, metrics, and the versions of mlcore/torch/numpy that wrote it.
"""

from __future__ import annotations

import errno
import os
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import mlcore
from mlcore.config import STAGE_NUMBER, TrainConfig
from mlcore.crops import CropSpec
from mlcore.model import CrossTrainedModel, SeedEnsemble
from mlcore.slides import DEFAULT_MODEL_MPP
from mlcore.types import LabelSet

CHECKPOINT_FORMAT = 1


@dataclass
class LoadedCheckpoint:
    model: CrossTrainedModel
    stage: str
    epoch: int                  # last finished epoch of ``stage`` (0-based)
    stage_complete: bool        # True when ``stage`` ran all its epochs
    config: TrainConfig
    metrics: dict = field(default_factory=dict)
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    raw: dict = field(default_factory=dict)
    # The random number generators' states when it was written (``mlcore.train.RandomState``), so that a run
    # going on from it draws what a run straight through would have drawn; None in older checkpoints.
    random_state: dict | None = None

    @property
    def label_sets(self) -> tuple[LabelSet, ...]:
        return self.model.label_sets


def label_sets_to_list(label_sets) -> list[dict]:
    return [{"name": s.name, "classes": list(s.classes), "colors": [list(c) for c in s.colors]} for s in label_sets]


def label_sets_from_list(items: list[dict]) -> list[LabelSet]:
    return [LabelSet(item["name"], tuple(item["classes"]), tuple(tuple(c) for c in item["colors"])) for item in items]


def versions() -> dict:
    return {"mlcore": mlcore.__version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, model: CrossTrainedModel | SeedEnsemble, stage: str, epoch: int,
                    stage_complete: bool, config: TrainConfig, optimizer: torch.optim.Optimizer | None = None,
                    scheduler=None, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically (temporary file, then rename): a reader never sees a half-written file."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "stage_number": STAGE_NUMBER[stage],
        "epoch": int(epoch),
        "stage_complete": bool(stage_complete),
        "architecture": model.describe(),
        "label_sets": label_sets_to_list(model.label_sets),
        "crop": {**model.crop_spec.describe(), "centre": "bounding box centre", "border": "reflect101",
                 "mask_channel_values": "255 on the nucleus's pixels, 0 elsewhere (the last channel)",
                 "channels": "RGB, then the context view's RGB (context_view > 0), then the mask (mask_channel)",
                 "large_nuclei": "square of largest extent, resized (area)", "normalisation": "x / 127.5 - 1"},
        "use_correlation": bool(model.use_correlation),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "config": config.portable_dict(),
        "metrics": metrics or {},
        "versions": versions(),
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Through a Python file, not a path: torch's own writer turns "no space left" into a RuntimeError
        # without its errno, which the caller could not tell from a bug.
        with open(tmp, "wb") as sink:
            torch.save(state, sink)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)   # the disk filled, or the write was stopped: nothing half-written stays
        if _no_space(exc) is not None:
            raise NoSpaceLeft(f"the checkpoint {path.name}", needed=_state_bytes(state)) from exc
        raise
    return path


class NoSpaceLeft(OSError):
    """The disk filled while a file was written (ENOSPC); ``needed``: about the bytes the file needed."""

    def __init__(self, what: str, needed: int | None = None):
        super().__init__(errno.ENOSPC, f"no space left on the disk to write {what}")
        self.needed = needed


def _no_space(exc: BaseException | None) -> OSError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _state_bytes(state) -> int:
    """The bytes of the tensors in a checkpoint's state: what its file holds, within a few kilobytes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(value) for value in state)
    return 0


def legacy_resnet_state(backbone: str, model_state: dict) -> dict:
    """A checkpoint of the hand-written ResNets that timm's replaced, in timm's key names: their stem was
    ``stem.0`` (conv) and ``stem.1`` (BN), timm's is ``conv1`` and ``bn1``; every other key (layerN.M.*
    with downsample.0/1, fc) and every shape is the same, and so are the outputs."""
    if backbone not in ("resnet18", "resnet50") or "backbone.stem.0.weight" not in model_state:
        return model_state
    renames = {"backbone.stem.0.": "backbone.conv1.", "backbone.stem.1.": "backbone.bn1."}
    translated = {}
    for key, value in model_state.items():
        old = next((prefix for prefix in renames if key.startswith(prefix)), None)
        translated[renames[old] + key[len(old):] if old else key] = value
    return translated


def _zip_intact(path: Path) -> bool:
    """Every member of the zip is there and matches its CRC-32 (torch.load checks neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        return False


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from a checkpoint; works on CPU whatever device saved it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise ValueError(f"{path}: not a readable mlcore checkpoint (the file is empty)")
    damaged = ValueError(f"{path}: not a readable mlcore checkpoint (the file is truncated or damaged: copy it again)")
    if head == b"PK\x03\x04" and not _zip_intact(path):   # torch's zip format: cut short or changed bytes, which
        raise damaged                                      # torch.load would read as other weights without a word
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or foreign file
        if head == b"PK\x03\x04":
            raise damaged from None
        # torch's own words for a foreign file are often a bare number (a pickle protocol's magic): say what it is,
        # without its advice to load the file again with weights_only=False (running whatever the file holds).
        said = str(exc).split("\n")[0][:200]
        said = f"{type(exc).__name__}: {said}" if said and "weights_only" not in said else type(exc).__name__
        if head[:1] != b"\x80":   # neither torch's zip nor its older pickle: some other file given by mistake
            said = "not a PyTorch file"
        raise ValueError(f"{path}: not a readable mlcore checkpoint (torch could not load it: {said})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an mlcore checkpoint (format {state.get('format') if isinstance(state, dict) else '?'})")
    # A diverged training's weights (or a file saved with them): such a model classifies every nucleus as
    # class 0 with no error. Bytes changed inside the zip were refused above, by its checksums.
    broken = [name for name, tensor in state.get("model_state", {}).items()
              if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise ValueError(f"{path}: the checkpoint's weights are not finite numbers ({len(broken)} tensors, "
                         f"{broken[0]} first): the file is damaged, or its training diverged")
    architecture = state["architecture"]
    # Checkpoints from before the mask channel and context describe the crop by its size alone.
    crop = CropSpec(**architecture.get("crop", {"size": architecture["crop_size"]}))
    # The checkpoint holds the weights: a pretrained file the training started from is not read again.
    backbone_kwargs = {k: v for k, v in architecture["backbone_kwargs"].items() if k != "pretrained_file"}
    def build() -> CrossTrainedModel:
        return CrossTrainedModel(label_sets_from_list(state["label_sets"]), architecture["backbone"],
                                 backbone_kwargs, crop, mpp=architecture.get("mpp") or DEFAULT_MODEL_MPP)

    if architecture.get("members"):   # a SeedEnsemble: its members' weights under members.N.
        model = SeedEnsemble([build() for _ in range(int(architecture["members"]))])
        model.load_state_dict(state["model_state"])
    else:
        model = build()
        model.load_state_dict(legacy_resnet_state(architecture["backbone"], state["model_state"]))
    model.to(device).eval()
    return LoadedCheckpoint(model=model, stage=state["stage"], epoch=state["epoch"],
                            stage_complete=state["stage_complete"], config=TrainConfig.from_saved(state["config"]),
                            metrics=state.get("metrics", {}), optimizer_state=state.get("optimizer_state"),
                            scheduler_state=state.get("scheduler_state"), raw=state,
                            random_state=state.get("extra", {}).get("random_state"))
