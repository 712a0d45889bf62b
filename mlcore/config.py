"""Training configuration: defaults, JSON parsing with errors that name the field, and the
dataset list of a CONFIG.json.

CONFIG.json::

    {
      "datasets": [{"name": "consep", "format": "hovernet", "path": "consep", "labelled": true,
                    "class_names": null, "label_set": null, "max_images": null}, ...],
      "model": {"backbone": "auto"},                      # other keys go to the backbone, e.g.
                                                          # "pretrained_file" (relative to this file);
                                                          # with "auto" they go to what it picks, so
                                                          # "width" belongs with a named backbone
      "crop": {"size": 64, "mask": false, "context": 1.0, "context_view": 2, "stain_normalisation": "none"},
      "epochs": {"sparse": 12, "correlation": 8, "completion": 10},    # or one int for all
      "batch_size": 128,
      "lr": {"sparse": 1e-3, "correlation": 1e-3, "completion": 1e-4}, # or one float for sparse
      "weight_decay": 1e-4, "optimizer": "adam", "grad_clip": 10, "ema_decay": 0.0, "threshold": 0.99,
      "pseudo_weight": 1.0,
      "completion_weighting": "nuclei",
      "lr_schedule": "cosine",
      "split": {"val_fraction": 0.2, "seed": 0},
      "sampling": {"dataset_power": 0.5, "class_power": 0.5, "completion_class_power": 1.0,
                   "samples_per_epoch": 32768},
      "augment": {"jitter": 0.1, "stain": 0.025, "context_view_dropout": 0.5, "scale": 0.0, "blur": 0.0,
                  "grayscale": 0.0},
      "correlation_views": 2, "seed": 0, "num_threads": null, "cache_dir": null
    }

Relative dataset paths resolve against the config file's folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlcore.readers import FORMATS
from mlcore.stain import METHODS as STAIN_METHODS

# Test-time augmentation where nuclei are classified for a user: on by default for tile images (the CLI's
# infer and evaluate, the web app's prediction and inference jobs), off for whole slides. On the validation
# split it raised the cross-trained model's macro-F1 on CoNSeP by 0.023 and on PanNuke by 0.031 in each of
# five seeds (README, "Test-time augmentation by default"). It costs 8 forward passes per nucleus: a few
# seconds a tile, but hours on a slide's millions of nuclei on a CPU.
TTA_DEFAULT_TILES = True
TTA_DEFAULT_SLIDES = False
TTA_HELP = "test-time augmentation: the mean over the 8 flips and rotations of each crop (8 times the forward passes)"

STAGES = ("sparse", "correlation", "completion")
OPTIMIZERS = ("adam", "adamw")
STAGE_NUMBER = {name: index + 1 for index, name in enumerate(STAGES)}


class ConfigError(ValueError):
    """A bad configuration; the message names the offending field."""


# Fields whose default changed after they were added: a config saved before such a field existed (in a
# checkpoint, a model version, a results file) trained with this value, not with today's default.
SAVED_BEFORE_THE_FIELD = {"crop_context_view": 0}
# Where a run keeps its crop cache: a path of the machine it ran on, meaningless (and not to be shown) elsewhere.
MACHINE_FIELDS = ("cache_dir",)
MAX_ENSEMBLE = 8   # models in a seed ensemble: each costs its whole training and every prediction again
# Draws in one epoch: each is an index held in memory and a crop's forward pass; 10 million is 300 times the
# default, days on a CPU. Without a ceiling 10^11 passed the form and failed in the worker allocating 745 GiB.
MAX_SAMPLES_PER_EPOCH = 10_000_000
# Pixels a side: a crop cache of N nuclei holds N x size² x channels bytes (100,000 px asked for 531 GiB).
MAX_CROP_SIZE = 512


@dataclass
class TrainConfig:
    # "auto": the small CPU net on a CPU, a larger one on a GPU (mlcore.backbones.resolve_backbone); the
    # checkpoint's architecture records the backbone actually built.
    backbone: str = "auto"
    backbone_kwargs: dict = field(default_factory=dict)
    # Models trained with the seeds seed, seed + 1, ... whose logits are averaged (mlcore.model.SeedEnsemble):
    # a seed alone moved validation macro-F1 by a few hundredths, an average of two was about as good as the
    # better of them (README, "Ensembles of seeds"), at that many times the training and inference time.
    ensemble: int = 1
    crop_size: int = 64
    crop_mask: bool = False              # a fourth input channel: the target nucleus's own mask
    crop_context: float = 1.0            # the crop's window is this many times wider, resized to crop_size
    # 0 or 2-4: three more channels, a view of the image shrunk this many times around the nucleus (the
    # full-resolution crop stays). 2 with context_view_dropout 0.5 completed left-out datasets better than
    # none and was ahead on validation (README); 0 is the plain RGB crop of earlier versions.
    crop_context_view: int = 2
    stain_normalisation: str = "none"    # "macenko": each source's stains normalised before cutting (mlcore.stain)
    epochs: dict = field(default_factory=lambda: {"sparse": 12, "correlation": 8, "completion": 10})
    lr: dict = field(default_factory=lambda: {"sparse": 1e-3, "correlation": 1e-3, "completion": 1e-4})
    batch_size: int = 128
    weight_decay: float = 1e-4
    # "adam": Adam with weight_decay as an L2 term in the gradient (what every version so far trained with);
    # "adamw": decoupled weight decay (Loshchilov & Hutter 2019), which shrinks every weight alike however
    # large its gradients' running scale; each step takes lr x weight_decay of a weight, so it is set higher,
    # e.g. 0.05.
    optimizer: str = "adam"
    grad_clip: float = 10.0
    threshold: float = 0.99
    pseudo_weight: float = 1.0           # stage 3: weight of the mean pseudo-label cell against the supervised one
    # Stage 3: "nuclei" weighs each (label set, branch) cell by its nuclei in the batch, as stage 1
    # does; "cells" (the method's) weighs every cell alike, so a label set with a dozen nuclei in
    # the batch counts as much as one with a hundred. With the longer epochs below it did better than
    # the method's settings on the real-data benchmark (README).
    completion_weighting: str = "nuclei"
    lr_schedule: str = "cosine"          # "cosine" (per step, to 0 at the stage's end) or "constant"
    # Stages 1 and 3 end with an exponential moving average of their weights (0 = the last step's).
    ema_decay: float = 0.0
    val_fraction: float = 0.2
    split_seed: int = 0
    # Defaults = the CPU benchmark's settings: an epoch is 32,768 draws, a dataset's share grows as
    # the square root of its size and classes are drawn as n_class^-0.5 (0, 0, None = uniform passes).
    # Longer than the 8,192 first used: the merged model shares an epoch among its datasets, so at
    # 8,192 CoNSeP and PanNuke-breast saw fewer draws than their own single-dataset models; at
    # 32,768 PanNuke-breast stopped trailing its single model (README).
    dataset_power: float = 0.5           # a dataset's share of the draws ~ n_dataset^(1 - p)
    class_power: float = 0.5             # within a dataset, weight n_class^-p
    # Stage 3 draws every class of a dataset equally often (None: class_power). Stage 3 made the
    # two branches agree on CoNSeP and lost their ensemble gain; the shortfall was in the rare class
    # "other" (2% of CoNSeP's nuclei), and drawing classes equally in stage 3 brought it back on the
    # real-data benchmark, where 0 and 0.5 did not (README).
    completion_class_power: float | None = 1.0
    samples_per_epoch: int | None = 32768  # None: one pass over the training nuclei
    jitter: float = 0.1
    # HED stain augmentation strength (0 = off; Tellez et al. 2018). 0.025 completed left-out datasets
    # better than 0 in each of five seeds of the leave-one-out check, all three stages, and lifted CoNSeP
    # on validation; 0.05 gained more on CoNSeP and PanNuke but cost NuCLS every seed (README).
    stain_jitter: float = 0.025
    # With crop.context_view: the share of training crops whose wider view is blanked (0 = never). Without
    # it the wider view cost PanNuke's and NuCLS's validation nuclei in most seeds: the network leant on
    # the surrounding tissue. With 0.5 it was ahead of no wider view on CoNSeP and PanNuke-breast in each of
    # five seeds, level on PanNuke, and completed left-out datasets better than none (README). No effect
    # without a context view.
    context_view_dropout: float = 0.5
    # Morphology jitter (mlcore.data.morphology_jitter; 0 = off): each training crop zoomed by U(1 - scale,
    # 1 + scale) about its nucleus and blurred by a Gaussian of U(0, blur) pixels, as scanners differ in
    # resolution and focus.
    scale_jitter: float = 0.0
    blur_jitter: float = 0.0
    # The share of training crops turned grey (mlcore.data.augment; 0 = off): another lab's stain shifts
    # colours more than any jitter here, while a nucleus's shape and texture stay.
    grayscale: float = 0.0
    correlation_views: int = 2           # augmented views whose frozen logits train the MLPs (per epoch)
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    cache_dir: str | None = None

    @property
    def crop_spec(self):
        from mlcore.crops import CropSpec

        return CropSpec(self.crop_size, self.crop_mask, float(self.crop_context), self.stain_normalisation,
                        self.crop_context_view)

    def to_dict(self) -> dict:
        return asdict(self)

    def portable_dict(self) -> dict:
        """:meth:`to_dict` without the settings of the machine it ran on (:data:`MACHINE_FIELDS`): what a checkpoint
        or a model version keeps, read back on other machines and shown to its users (a cache folder is a server
        path)."""
        return {key: value for key, value in self.to_dict().items() if key not in MACHINE_FIELDS}

    @classmethod
    def saved(cls, data: dict[str, Any] | None) -> dict[str, Any]:
        """A config saved by ``to_dict``, perhaps by an earlier version, where each field it lacks whose default
        has changed since reads as what it trained with: a model saved before the context view field existed
        has plain RGB crops, whatever today's default."""
        return {**SAVED_BEFORE_THE_FIELD, **(data or {})}

    @classmethod
    def from_saved(cls, data: dict[str, Any] | None) -> TrainConfig:
        """:meth:`from_dict` of a saved config (:meth:`saved`)."""
        return cls.from_dict(cls.saved(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        """Flat keys (as ``to_dict`` writes) or the nested CONFIG.json sections."""
        config = cls()
        data = dict(data or {})
        data.pop("datasets", None)
        sections = {
            "model": {"backbone": "backbone", "ensemble": "ensemble"},
            "crop": {"size": "crop_size", "mask": "crop_mask", "context": "crop_context",
                     "context_view": "crop_context_view", "stain_normalisation": "stain_normalisation"},
            "split": {"val_fraction": "val_fraction", "seed": "split_seed"},
            "sampling": {"dataset_power": "dataset_power", "class_power": "class_power",
                         "completion_class_power": "completion_class_power",
                         "samples_per_epoch": "samples_per_epoch"},
            "augment": {"jitter": "jitter", "stain": "stain_jitter", "context_view_dropout": "context_view_dropout",
                        "scale": "scale_jitter", "blur": "blur_jitter", "grayscale": "grayscale"},
        }
        for section, keys in sections.items():
            if section not in data:
                continue
            values = data.pop(section)
            if not isinstance(values, dict):
                raise ConfigError(f"config field {section!r} must be an object, got {type(values).__name__}")
            for key, value in values.items():
                if key in keys:
                    data[keys[key]] = value
                elif section == "model":
                    data.setdefault("backbone_kwargs", {})
                    data["backbone_kwargs"] = {**data["backbone_kwargs"], key: value}
                else:
                    raise ConfigError(f"unknown config field {section}.{key} (known: {', '.join(keys)})")
        known = set(cls.__dataclass_fields__)
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"unknown config field {key!r}")
            setattr(config, key, value)
        config.epochs = _per_stage(config.epochs, "epochs", cls().epochs, int)
        config.lr = _per_stage(config.lr, "lr", cls().lr, float)
        config.validate()
        return config

    def validate(self) -> None:
        from mlcore.backbones import check_backbone_name
        from mlcore.crops import CONTEXT_VIEWS

        try:
            check_backbone_name(self.backbone)
        except ValueError as exc:
            raise ConfigError(f"config field model.backbone: {exc}") from None
        checks = [
            ("crop.size", self.crop_size, int, lambda v: 8 <= v <= MAX_CROP_SIZE),
            ("crop.mask", self.crop_mask, bool, lambda v: True),
            ("crop.context", self.crop_context, (int, float), lambda v: 1 <= v <= 4),
            ("crop.context_view", self.crop_context_view, int, lambda v: v in CONTEXT_VIEWS),
            ("augment.stain", self.stain_jitter, (int, float), lambda v: 0 <= v < 1),
            ("augment.context_view_dropout", self.context_view_dropout, (int, float), lambda v: 0 <= v < 1),
            ("augment.scale", self.scale_jitter, (int, float), lambda v: 0 <= v <= 0.5),
            ("augment.blur", self.blur_jitter, (int, float), lambda v: 0 <= v <= 3),
            ("augment.grayscale", self.grayscale, (int, float), lambda v: 0 <= v <= 1),
            ("model.ensemble", self.ensemble, int, lambda v: 1 <= v <= MAX_ENSEMBLE),
            ("batch_size", self.batch_size, int, lambda v: v >= 2),
            ("weight_decay", self.weight_decay, (int, float), lambda v: v >= 0),
            ("grad_clip", self.grad_clip, (int, float), lambda v: v > 0),
            ("ema_decay", self.ema_decay, (int, float), lambda v: 0 <= v < 1),
            ("threshold", self.threshold, (int, float), lambda v: 0 < v < 1),
            ("pseudo_weight", self.pseudo_weight, (int, float), lambda v: v >= 0),
            ("split.val_fraction", self.val_fraction, (int, float), lambda v: 0 <= v < 1),
            ("split.seed", self.split_seed, int, lambda v: True),
            ("sampling.dataset_power", self.dataset_power, (int, float), lambda v: 0 <= v <= 1),
            ("sampling.class_power", self.class_power, (int, float), lambda v: 0 <= v <= 1),
            ("sampling.completion_class_power", self.completion_class_power, (int, float, type(None)),
             lambda v: v is None or 0 <= v <= 1),
            ("augment.jitter", self.jitter, (int, float), lambda v: 0 <= v < 1),
            ("correlation_views", self.correlation_views, int, lambda v: v >= 1),
            ("seed", self.seed, int, lambda v: True),
            ("num_threads", self.num_threads, (int, type(None)), lambda v: v is None or 1 <= v <= 1024),
        ]
        for name, value, types, ok in checks:
            if (isinstance(value, bool) and types is not bool) or not isinstance(value, types) or not ok(value):
                raise ConfigError(f"config field {name}: invalid value {value!r}")
        if self.samples_per_epoch is not None and (not isinstance(self.samples_per_epoch, int)
                                                   or not 1 <= self.samples_per_epoch <= MAX_SAMPLES_PER_EPOCH):
            raise ConfigError(f"config field sampling.samples_per_epoch: invalid value {self.samples_per_epoch!r}")
        if self.stain_normalisation not in STAIN_METHODS:
            raise ConfigError(f"config field crop.stain_normalisation: {self.stain_normalisation!r} is not one of "
                              f"{', '.join(STAIN_METHODS)}")
        if self.completion_weighting not in ("cells", "nuclei"):
            raise ConfigError(f"config field completion_weighting: {self.completion_weighting!r} is not "
                              "'cells' or 'nuclei'")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"config field optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"config field lr_schedule: {self.lr_schedule!r} is not 'cosine' or 'constant'")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"config field device: {self.device!r} is not auto, cpu or cuda")
        if not isinstance(self.backbone_kwargs, dict):
            raise ConfigError("config field model: backbone options must be an object")
        width = self.backbone_kwargs.get("width")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 1024):
            raise ConfigError(f"config field model.width: invalid value {width!r} (a whole number of channels, 1-1024)")


def _per_stage(value, name: str, defaults: dict, kind) -> dict:
    if isinstance(value, bool):
        raise ConfigError(f"config field {name}: invalid value {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():   # 1.7 epochs is no number of epochs
        raise ConfigError(f"config field {name}: invalid value {value!r} (a whole number)")
    if isinstance(value, (int, float)):
        # One number: epochs for every stage, so at least one as --epochs (0 trained nothing and wrote the random
        # weights as model.pt); a learning rate for stage 1 (the others keep theirs).
        if value < (1 if name == "epochs" else 0):
            raise ConfigError(f"config field {name}: invalid value {value!r}")
        return {stage: kind(value) for stage in STAGES} if name == "epochs" else {**defaults, "sparse": kind(value)}
    if not isinstance(value, dict):
        raise ConfigError(f"config field {name} must be a number or an object with {', '.join(STAGES)}")
    out = dict(defaults)
    for stage, stage_value in value.items():
        if stage not in STAGES:
            raise ConfigError(f"config field {name}.{stage}: unknown stage (known: {', '.join(STAGES)})")
        if (isinstance(stage_value, bool) or not isinstance(stage_value, (int, float)) or stage_value < 0
                or (kind is int and isinstance(stage_value, float) and not stage_value.is_integer())):
            raise ConfigError(f"config field {name}.{stage}: invalid value {stage_value!r}")
        out[stage] = kind(stage_value)
    return out


@dataclass
class DatasetSpec:
    name: str
    format: str
    path: Path
    labelled: bool = True
    class_names: list[str] | None = None
    label_set: str | None = None
    max_images: int | None = None


def load_config_file(path: str | Path) -> tuple[list[DatasetSpec], TrainConfig, dict]:
    """Parse CONFIG.json: (dataset specs, training config, the raw JSON)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a JSON object")
    try:
        datasets = parse_datasets(raw.get("datasets"), base=path.resolve().parent)
        config = TrainConfig.from_dict({k: v for k, v in raw.items() if k != "datasets"})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    pretrained = config.backbone_kwargs.get("pretrained_file")
    if pretrained is not None:
        pretrained = path.resolve().parent / pretrained if isinstance(pretrained, str) else None
        if pretrained is None or not pretrained.is_file():
            raise ConfigError(f"{path}: config field model.pretrained_file: "
                              f"{config.backbone_kwargs['pretrained_file']!r} is not a file")
        config.backbone_kwargs["pretrained_file"] = str(pretrained)
    return datasets, config, raw


def parse_datasets(entries, base: Path) -> list[DatasetSpec]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError("config field 'datasets' must be a non-empty list")
    specs, names = [], set()
    for index, entry in enumerate(entries):
        where = f"datasets[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"config field {where} must be an object")
        for key in ("name", "format", "path"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"config field {where}.{key} is missing or not a string")
        unknown = set(entry) - {"name", "format", "path", "labelled", "class_names", "label_set", "max_images"}
        if unknown:
            raise ConfigError(f"config field {where}: unknown key(s) {sorted(unknown)}")
        if entry["format"] not in FORMATS:
            raise ConfigError(f"config field {where}.format: {entry['format']!r} is not one of {', '.join(FORMATS)}")
        if entry["name"] in names:
            raise ConfigError(f"config field {where}.name: {entry['name']!r} is used twice")
        names.add(entry["name"])
        labelled = entry.get("labelled", True)
        if not isinstance(labelled, bool):
            raise ConfigError(f"config field {where}.labelled must be true or false")
        class_names = entry.get("class_names")
        if class_names is not None and (not isinstance(class_names, list)
                                        or not all(isinstance(c, str) for c in class_names)):
            raise ConfigError(f"config field {where}.class_names must be a list of strings")
        max_images = entry.get("max_images")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
            raise ConfigError(f"config field {where}.max_images must be a positive integer")
        path = Path(entry["path"])
        if not path.is_absolute():
            path = base / path
        if not path.exists():
            raise ConfigError(f"config field {where}.path: {path} does not exist")
        specs.append(DatasetSpec(entry["name"], entry["format"], path, labelled, class_names,
                                 entry.get("label_set"), max_images))
    return specs
