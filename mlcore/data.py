"""The training set as one table of pre-cut crops, built from datasets or from web-app arrays.

A :class:`NucleusTable` holds, for N nuclei, the uint8 crops (N, S, S, C: RGB, plus the nucleus's
mask when the crop spec has one), the (N, D) label matrix
of the merged label space (column d = class index in label set d, ``MISSING`` = -1), the dataset
and split group of each nucleus, and where it came from (image, instance id). Crops are cut once,
cached on disk under a hash of their inputs, and kept in memory, so epochs never touch images.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlcore.crops import CROP_ALGORITHM_VERSION, CROP_SIZE, CropSpec
from mlcore.geometry import instance_geometry
from mlcore.stain import estimate_stain
from mlcore.types import MISSING, LabelSet, NucleusDataset


@dataclass
class ImageRecord:
    """One image as the web app hands it over: pixels, instance map and known labels.

    ``labels`` maps a label set name to ``{instance id: class index}``; instances absent from a
    label set's dict are missing in it. ``dataset`` names the source (split and sampling are per
    dataset) and ``group`` the split unit (tile or slide; defaults to ``name``).
    """

    image: np.ndarray
    instance_map: np.ndarray
    labels: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    dataset: str = "default"
    name: str = ""
    group: str = ""


@dataclass
class CropRecord:
    """Nuclei whose crops are cut already: a whole-slide image's labelled nuclei, cut region by region from
    the slide (:func:`mlcore.infer.slide_crops`), since the slide does not fit in memory as an image does.

    ``crops`` (N, S, S, C) uint8 as the table's crop spec cuts them, ``ids`` their N instance ids (unique in
    the record); ``labels``, ``dataset``, ``name`` and ``group`` as for :class:`ImageRecord`. The crops are
    taken as they are: not cached again, and not stain-normalised again (the slide's own estimate did it)."""

    crops: np.ndarray
    ids: np.ndarray
    labels: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    dataset: str = "default"
    name: str = ""
    group: str = ""


@dataclass
class NucleusTable:
    crops: np.ndarray           # (N, S, S, C) uint8: RGB (+ the nucleus's mask)
    labels: np.ndarray          # (N, D) int64, MISSING = -1
    dataset_index: np.ndarray   # (N,) int64 into dataset_names
    group_index: np.ndarray     # (N,) int64 into group_names
    image_index: np.ndarray     # (N,) int64 into image_names
    instance_ids: np.ndarray    # (N,) int64 instance id in its image's map
    label_sets: tuple[LabelSet, ...]
    dataset_names: list[str]
    group_names: list[str]
    image_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[1])

    @property
    def channels(self) -> int:
        return int(self.crops.shape[3])

    def label_set_index(self, name: str) -> int:
        for d, label_set in enumerate(self.label_sets):
            if label_set.name == name:
                return d
        raise KeyError(f"no label set {name!r} (have: {', '.join(s.name for s in self.label_sets)})")

    def subset(self, indices: np.ndarray) -> NucleusTable:
        indices = np.asarray(indices, dtype=np.int64)
        return NucleusTable(self.crops[indices], self.labels[indices], self.dataset_index[indices],
                            self.group_index[indices], self.image_index[indices], self.instance_ids[indices],
                            self.label_sets, self.dataset_names, self.group_names, self.image_names)

    def with_label_sets(self, label_sets: list[LabelSet]) -> NucleusTable:
        """The same nuclei with only the given label sets' columns (e.g. a single-dataset baseline)."""
        columns = [self.label_set_index(label_set.name) for label_set in label_sets]
        return NucleusTable(self.crops, self.labels[:, columns], self.dataset_index, self.group_index,
                            self.image_index, self.instance_ids, tuple(self.label_sets[c] for c in columns),
                            self.dataset_names, self.group_names, self.image_names)

    def summary(self) -> dict:
        """Counts per dataset and per label set class, for logs and the web app."""
        out = {"nuclei": len(self), "datasets": {}, "label_sets": {}}
        for index, name in enumerate(self.dataset_names):
            rows = self.dataset_index == index
            out["datasets"][name] = {"nuclei": int(rows.sum()),
                                     "unlabelled": int((self.labels[rows] == MISSING).all(axis=1).sum())}
        for d, label_set in enumerate(self.label_sets):
            counts = np.bincount(self.labels[self.labels[:, d] != MISSING, d], minlength=len(label_set))
            out["label_sets"][label_set.name] = dict(zip(label_set.classes, counts.tolist()))
        return out


def merged_label_sets(datasets: Iterable[NucleusDataset]) -> list[LabelSet]:
    """The label sets of the labelled datasets, in order, one per name (shared names must agree)."""
    found: dict[str, LabelSet] = {}
    for dataset in datasets:
        if dataset.label_set is None:
            continue
        label_set = dataset.label_set
        if label_set.name in found and found[label_set.name].classes != label_set.classes:
            raise ValueError(f"dataset {dataset.name!r}: label set {label_set.name!r} has classes "
                             f"{list(label_set.classes)}, another dataset has {list(found[label_set.name].classes)}")
        found.setdefault(label_set.name, label_set)
    return list(found.values())


def build_table(datasets: list[NucleusDataset], label_sets: list[LabelSet] | None = None,
                cache_dir: str | Path | None = None, crop_size: int | CropSpec = CROP_SIZE,
                progress: Callable[[dict], None] | None = None) -> NucleusTable:
    """The table of every nucleus of ``datasets``; label sets default to :func:`merged_label_sets`.

    A labelled dataset fills the column of the label set with its label set's name (its classes
    must match); unlabelled datasets leave every column missing.
    """
    if label_sets is None:
        label_sets = merged_label_sets(datasets)
    by_name = {label_set.name: label_set for label_set in label_sets}
    records: list[ImageRecord] = []
    for dataset in datasets:
        label_set = dataset.label_set
        if label_set is not None:
            if label_set.name not in by_name:
                raise ValueError(f"dataset {dataset.name!r} has label set {label_set.name!r}, which is not "
                                 f"among the model's ({', '.join(by_name)})")
            if by_name[label_set.name].classes != label_set.classes:
                raise ValueError(f"dataset {dataset.name!r}: classes {list(label_set.classes)} differ from label set "
                                 f"{label_set.name!r}'s {list(by_name[label_set.name].classes)}")
        for image in dataset.images:
            labels = {label_set.name: image.classes} if label_set is not None else {}
            records.append(ImageRecord(image.image, image.instance_map, labels, dataset.name, image.name, image.group))
    return table_from_arrays(records, label_sets, cache_dir=cache_dir, crop_size=crop_size, progress=progress)


def table_from_arrays(records: Iterable[ImageRecord | CropRecord | Mapping], label_sets: list[LabelSet],
                      cache_dir: str | Path | None = None, crop_size: int | CropSpec = CROP_SIZE,
                      progress: Callable[[dict], None] | None = None) -> NucleusTable:
    """The table built from arrays the caller supplies (the web app's database rows).

    ``records`` are :class:`ImageRecord` objects or dicts with the same keys, or :class:`CropRecord`
    objects (crops cut already). Crops are cut per image and cached per dataset under ``cache_dir``
    (keyed by a hash of pixels, masks and crop settings); labels are never cached, so relabelling does
    not cut crops again.
    """
    records = [record if isinstance(record, (ImageRecord, CropRecord)) else ImageRecord(**record)
               for record in records]
    spec = crop_size if isinstance(crop_size, CropSpec) else CropSpec(int(crop_size))
    for record in records:
        if isinstance(record, CropRecord) and (record.crops.shape[1:] != (spec.size, spec.size, spec.channels)
                                               or len(record.crops) != len(record.ids)):
            raise ValueError(f"the crops of {record.name!r} are {record.crops.shape} for {len(record.ids)} ids; "
                             f"the table cuts ({spec.size}, {spec.size}, {spec.channels}) crops")
    column = {label_set.name: d for d, label_set in enumerate(label_sets)}
    dataset_names: list[str] = []
    for record in records:
        if record.dataset not in dataset_names:
            dataset_names.append(record.dataset)
        unknown = set(record.labels) - set(column)
        if unknown:
            raise ValueError(f"image {record.name!r} of {record.dataset!r} has labels for unknown label set(s) "
                             f"{sorted(unknown)} (known: {', '.join(column)})")
    crops_per_record = _crops_with_cache(records, dataset_names, cache_dir, spec, progress)

    group_names: list[str] = []
    group_code: dict[str, int] = {}
    parts = {key: [] for key in ("labels", "dataset", "group", "image", "ids")}
    for image_index, (record, (crops, ids)) in enumerate(zip(records, crops_per_record)):
        labels = np.full((len(ids), len(label_sets)), MISSING, dtype=np.int64)
        row_of = {int(instance_id): row for row, instance_id in enumerate(ids)}
        for set_name, classes in record.labels.items():
            d = column[set_name]
            num_classes = len(label_sets[d])
            for instance_id, class_index in classes.items():
                row = row_of.get(int(instance_id))
                if row is None or class_index is None or int(class_index) == MISSING:
                    continue  # a label for an instance not in the mask, or an explicit "unknown"
                if not 0 <= int(class_index) < num_classes:
                    raise ValueError(f"image {record.name!r}: class index {class_index} of instance {instance_id} "
                                     f"is outside label set {set_name!r} (0..{num_classes - 1})")
                labels[row, d] = int(class_index)
        group = f"{record.dataset}/{record.group or record.name or image_index}"
        if group not in group_code:
            group_code[group] = len(group_names)
            group_names.append(group)
        parts["labels"].append(labels)
        parts["dataset"].append(np.full(len(ids), dataset_names.index(record.dataset), np.int64))
        parts["group"].append(np.full(len(ids), group_code[group], np.int64))
        parts["image"].append(np.full(len(ids), image_index, np.int64))
        parts["ids"].append(np.asarray(ids, np.int64))
    crops = (np.concatenate([c for c, _ in crops_per_record]) if records
             else np.zeros((0, spec.size, spec.size, spec.channels), np.uint8))

    def joined(key, width=None):
        if parts[key]:
            return np.concatenate(parts[key])
        return np.zeros((0, width) if width is not None else (0,), np.int64)

    return NucleusTable(crops, joined("labels", len(label_sets)), joined("dataset"), joined("group"),
                        joined("image"), joined("ids"), tuple(label_sets), dataset_names, group_names,
                        [f"{r.dataset}/{r.name or i}" for i, r in enumerate(records)])


def default_cache_dir() -> Path:
    return Path(os.environ.get("MLCORE_CACHE_DIR") or Path.home() / ".cache" / "mlcore")


def _crops_with_cache(records: list[ImageRecord], dataset_names: list[str], cache_dir, spec: CropSpec,
                      progress) -> list[tuple[np.ndarray, np.ndarray]]:
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(records)
    for i, record in enumerate(records):
        if isinstance(record, CropRecord):
            out[i] = (record.crops, np.asarray(record.ids, np.int64))
    for dataset in dataset_names:
        members = [i for i, r in enumerate(records) if r.dataset == dataset and isinstance(r, ImageRecord)]
        if not members:
            continue
        key = None
        if cache_dir is not None:
            digest = hashlib.sha256(f"crops v{CROP_ALGORITHM_VERSION} {sorted(spec.describe().items())}".encode())
            for i in members:
                for array in (records[i].image, records[i].instance_map):
                    array = np.ascontiguousarray(array)
                    digest.update(f"{array.shape}{array.dtype}".encode())
                    digest.update(array.data)
            key = digest.hexdigest()[:32]
            crops_path = Path(cache_dir) / f"crops-{key}.npy"
            index_path = Path(cache_dir) / f"crops-{key}.index.npz"
            if crops_path.is_file() and index_path.is_file():
                crops = np.load(crops_path)
                index = np.load(index_path)
                bounds = np.concatenate([[0], np.cumsum(index["counts"])])
                for j, i in enumerate(members):
                    out[i] = (crops[bounds[j]:bounds[j + 1]], index["ids"][bounds[j]:bounds[j + 1]])
                if progress:
                    progress({"stage": "crops", "dataset": dataset, "images": len(members), "cached": True})
                continue
        # A dataset is one source of stains: one estimate from all its images (mlcore.stain says why).
        stain = (estimate_stain(records[i].image for i in members) if spec.stain_normalisation != "none"
                 else None)
        for step, i in enumerate(members):
            record = records[i]
            if record.image.shape[:2] != record.instance_map.shape:
                raise ValueError(f"image {record.name!r} of {dataset!r}: image {record.image.shape[:2]} and "
                                 f"instance map {record.instance_map.shape} differ in size")
            crops, geometry = spec.cut(record.image, record.instance_map, stain=stain)
            out[i] = (crops, geometry.ids)
            if progress and (step % 50 == 0 or step == len(members) - 1):
                progress({"stage": "crops", "dataset": dataset, "step": step + 1, "steps": len(members)})
        if key is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            crops = (np.concatenate([out[i][0] for i in members]) if members
                     else np.zeros((0, spec.size, spec.size, spec.channels), np.uint8))
            # Write to temporary names then rename: a concurrent reader never sees half a file.
            tmp_crops = Path(cache_dir) / f".crops-{key}.{os.getpid()}.npy"
            tmp_index = Path(cache_dir) / f".crops-{key}.{os.getpid()}.index.npz"
            np.save(tmp_crops, crops)
            np.savez(tmp_index, ids=np.concatenate([out[i][1] for i in members]) if members else np.zeros(0, np.int64),
                     counts=np.array([len(out[i][1]) for i in members], np.int64))
            os.replace(tmp_crops, crops_path)
            os.replace(tmp_index, index_path)
    return out  # type: ignore[return-value]


def instance_ids(instance_map: np.ndarray) -> np.ndarray:
    """Sorted ids of the instances of a map (the row order of its crops)."""
    return instance_geometry(instance_map).ids


# ----------------------------------------------------------------------------------------------
# Split and sampling


def split_by_group(table: NucleusTable, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation row indices, drawn per dataset by split group (tile or image).

    Patches of one tile overlap, so whole groups go to one side. Datasets with no known label
    (unlabelled ones) stay entirely in training: there is nothing to validate on them.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    is_val = np.zeros(len(table), dtype=bool)
    for index, name in enumerate(table.dataset_names):
        # Seeded per dataset name: a dataset gets the same split alone (single-dataset baseline)
        # as among others (the merged model), so their validation metrics compare.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        rows = np.flatnonzero(table.dataset_index == index)
        if val_fraction == 0 or not (table.labels[rows] != MISSING).any():
            continue
        groups = np.unique(table.group_index[rows])
        if len(groups) < 2:
            continue
        count = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
        chosen = rng.choice(groups, size=count, replace=False)
        is_val[rows[np.isin(table.group_index[rows], chosen)]] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_notes(table: NucleusTable, val_rows: np.ndarray, most: float = 0.5) -> list[str]:
    """Warnings about a split that whole groups made lopsided: a labelled dataset with one group (nothing of it
    is validated), or whose validation holds more than ``most`` of its labelled nuclei (two tiles of unequal
    size: one went to each side). The split itself stays as it is, so that results compare across runs."""
    notes = []
    in_val = np.zeros(len(table), dtype=bool)
    in_val[np.asarray(val_rows, np.int64)] = True
    labelled = (table.labels != MISSING).any(axis=1)
    for index, name in enumerate(table.dataset_names):
        rows = (table.dataset_index == index) & labelled
        total = int(rows.sum())
        if not total:
            continue
        groups = len(np.unique(table.group_index[rows]))
        validated = int((rows & in_val).sum())
        if groups < 2:
            notes.append(f"dataset {name!r} has one tile, image or slide square: none of its {total} labelled nuclei is "
                         f"validated (its figures are missing from the validation scores)")
        elif validated > most * total:
            notes.append(f"dataset {name!r}: the validation split holds {validated} of its {total} labelled "
                         f"nuclei ({groups} tiles, images or slide squares, whole ones on each side), leaving "
                         f"{total - validated} to train on; more of them give a fairer split")
    return notes


def sampling_weights(table: NucleusTable, rows: np.ndarray, dataset_power: float = 0.0,
                     class_power: float = 0.0) -> np.ndarray:
    """Per-row sampling weights: ``n_dataset^-dataset_power * n_class^-class_power``.

    A dataset's share of the draws is proportional to ``n_dataset^(1 - dataset_power)``: 0 keeps
    its natural share, 1 draws every dataset equally often, 0.5 in between (square root). Within a
    dataset, class_power=1 draws every class equally often (its first known label set decides a nucleus's class;
    unlabelled nuclei count as one more class).
    """
    weights = np.ones(len(rows), dtype=np.float64)
    datasets = table.dataset_index[rows]
    labels = table.labels[rows]
    first_known = np.where((labels != MISSING).any(axis=1), (labels != MISSING).argmax(axis=1), -1)
    class_of = np.where(first_known >= 0, labels[np.arange(len(rows)), np.maximum(first_known, 0)], MISSING)
    for dataset in np.unique(datasets):
        in_dataset = datasets == dataset
        size = float(in_dataset.sum())
        if class_power:
            keys = class_of[in_dataset] * 1000 + first_known[in_dataset]
            _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            within = counts[inverse].astype(np.float64) ** -class_power
            # Rescaled to sum to the dataset's size: class balancing moves mass inside a dataset only.
            weights[in_dataset] = within * (size / within.sum())
        weights[in_dataset] *= size ** -dataset_power
    return weights / weights.sum()


class CropBatches(torch.utils.data.Dataset):
    """Whole batches by index list: ``dataset[[i, j, ...]] -> (uint8 crops, labels)``.

    Used with ``DataLoader(batch_size=None, sampler=BatchSampler(...))`` so that a batch is one
    NumPy gather instead of B ``__getitem__`` calls and a collate.
    """

    def __init__(self, crops: np.ndarray, labels: np.ndarray):
        self.crops = crops
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.sort(np.asarray(indices, dtype=np.int64))  # sorted: sequential memory access
        return torch.from_numpy(self.crops[indices]), torch.from_numpy(self.labels[indices])


class WeightedEpochSampler(torch.utils.data.Sampler):
    """Draws ``num_samples`` indices with replacement by weight, a fresh draw per epoch.

    Distributed-aware: every rank draws the same sequence from (seed, epoch) and keeps its own
    slice, like DistributedSampler does for a shuffle.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.weights = np.asarray(weights, dtype=np.float64)
        # A multiple of the world size: every rank gets as many samples, hence as many batches
        # (DistributedDataParallel hangs when one rank runs a step the others do not).
        self.num_samples = -(-int(num_samples) // world_size) * world_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        drawn = rng.choice(len(self.weights), size=self.num_samples, replace=True, p=self.weights)
        return iter(drawn[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


# ----------------------------------------------------------------------------------------------
# Batched augmentation and normalisation (on tensors, after the gather)


def to_input(crops: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, S, S, C) -> float (B, C, S, S) in [-1, 1], channels-last (faster convs on CPU).
    A mask channel (0 / 255) becomes -1 / 1 like the colours."""
    x = crops.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights
# The 8 symmetries of the square as (transpose, flip rows, flip columns) bits of a number 0-7.
_DIHEDRAL_BITS = (1, 2, 4)
# Optical densities of haematoxylin, eosin and DAB per unit stain (rows), Ruifrok & Johnston 2001,
# as scikit-image's rgb2hed uses them.
_RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))


def dihedral(crops: torch.Tensor, code: int) -> torch.Tensor:
    """Symmetry ``code`` (0-7: transpose, flip rows, flip columns bits) of (B, S, S, C) crops."""
    if code & 1:
        crops = crops.transpose(1, 2)
    if code & 2:
        crops = crops.flip(1)
    if code & 4:
        crops = crops.flip(2)
    return crops


def augment(crops: torch.Tensor, generator: torch.Generator | None = None, jitter: float = 0.1,
            device: torch.device | str = "cpu", stain: float = 0.0, view_dropout: float = 0.0,
            zoom: float = 0.0, blur: float = 0.0, grayscale: float = 0.0) -> torch.Tensor:
    """Random dihedral transform (flips and 90-degree rotations: a nucleus has no orientation),
    optional stain jitter in HED space and mild brightness/contrast/saturation jitter, per sample,
    on the whole batch at once.

    uint8 (B, S, S, C) -> float (B, C, S, S) in [-1, 1], channels-last, like ``to_input``; a mask
    channel (C = 4 or 7) is flipped with the colours and never jittered. ``view_dropout``: the share of
    samples whose wider view (channels 3-5, mlcore.crops.CropSpec.context_view) is blanked to 0, so that
    the network learns to classify from the nucleus's own view and cannot lean on its surroundings alone.
    ``zoom`` and ``blur``: :func:`morphology_jitter` with each sample's zoom drawn from U(1 - zoom, 1 + zoom)
    and its Gaussian blur's sigma from U(0, blur) pixels (drawn last, and only when asked for).
    ``grayscale``: the share of samples whose colours (every view's) are replaced by their grey value after the
    stain jitter, so that the network must also classify from shape and texture alone (drawn only when asked for).
    Written for speed, as this runs on every training batch: the symmetries are applied to the uint8
    crops, one group of samples per symmetry (not to every sample with a select), the stain jitter is
    one 3 x 3 matrix per sample in optical-density space, and the three colour jitters, being
    per-sample affine maps of the pixel and its grey value, fold into one
    ``alpha * x + beta * grey + gamma`` with the [-1, 1] scaling included.
    """
    crops = crops.to(device, non_blocking=True)
    batch = crops.shape[0]
    # Drawn on the CPU generator, then moved: the same draws whatever the device.
    coins = torch.rand((batch, 3), generator=generator)
    factors = 1.0 + jitter * (2.0 * torch.rand((batch, 3), generator=generator) - 1.0)
    symmetry = ((coins < 0.5).long() * torch.tensor(_DIHEDRAL_BITS)).sum(dim=1).to(crops.device)
    flipped = torch.empty_like(crops)
    for code in range(8):
        rows = (symmetry == code).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        flipped.index_copy_(0, rows, dihedral(crops.index_select(0, rows), code))
    x = flipped.float()                              # (B, S, S, C) in 0..255
    # Colours come in threes (a wider view's after the crop's own, mlcore.crops.CropSpec), a mask last. The
    # views of one sample get the same jitter: side by side along the width, they are one picture's pixels.
    views = x.shape[3] // 3
    rgb, extra = x[..., :3 * views].reshape(batch, x.shape[1], -1, 3), x[..., 3 * views:]
    if stain > 0:
        rgb = stain_jitter(rgb, stain, generator)
    if grayscale > 0:
        # Drawn only when asked for, as the view dropout below: runs without it keep their draws.
        chosen = (torch.rand(batch, generator=generator) < grayscale).nonzero().squeeze(1).to(x.device)
        rgb[chosen] = (rgb[chosen] @ torch.tensor(_GREY, device=x.device)).unsqueeze(3).expand(-1, -1, -1, 3)
    if jitter > 0:
        # brightness b, then saturation s around the grey value, then contrast c around the mean grey:
        # c*b*s*x + c*b*(1-s)*grey + (1-c)*b*mean(grey), then mapped from [0, 255] to [-1, 1].
        brightness, contrast, saturation = (factors[:, i].to(x.device) for i in range(3))
        grey = rgb @ torch.tensor(_GREY, device=x.device)           # (B, S, S)
        scale = contrast * brightness
        alpha = (2.0 / 255.0 * scale * saturation).view(-1, 1, 1, 1)
        beta = (2.0 / 255.0 * scale * (1.0 - saturation)).view(-1, 1, 1)
        gamma = (2.0 / 255.0 * (1.0 - contrast) * brightness * grey.mean(dim=(1, 2)) - 1.0).view(-1, 1, 1)
        rgb = (rgb * alpha).add_(torch.addcmul(gamma, grey, beta).unsqueeze(3)).clamp_(-1.0, 1.0)
    else:
        rgb = rgb * (2.0 / 255.0) - 1.0
    rgb = rgb.reshape(x.shape[:3] + (3 * views,))
    x = torch.cat([rgb, extra.mul_(2.0 / 255.0).sub_(1.0)], dim=3) if extra.shape[3] else rgb.contiguous()
    if view_dropout > 0 and views > 1:
        # Drawn only when asked for: the generator's other draws, and so every run without it, stay as they were.
        blank = (torch.rand(batch, generator=generator) < view_dropout).nonzero().squeeze(1).to(x.device)
        x[blank, :, :, 3:6] = 0.0
    # An NHWC tensor seen as NCHW is channels-last already: no copy.
    x = x.permute(0, 3, 1, 2)
    if zoom > 0 or blur > 0:
        zooms = 1.0 + zoom * (2.0 * torch.rand(batch, generator=generator) - 1.0)
        sigmas = blur * torch.rand(batch, generator=generator)
        x = morphology_jitter(x, zooms, sigmas, max_sigma=blur)
    return x


def morphology_jitter(x: torch.Tensor, zooms: torch.Tensor, sigmas: torch.Tensor, max_sigma: float | None = None
                      ) -> torch.Tensor:
    """Each sample (B, C, S, S) zoomed about its centre by ``zooms[b]`` (above 1: the nucleus looks larger, as at
    a higher magnification; the edge mirrored where a zoom out needs pixels beyond it), then blurred by a Gaussian
    of ``sigmas[b]`` pixels (0: untouched), as scanners differ in resolution and focus (the morphology
    augmentations of Tellez et al. 2019). Every channel alike: a wider view is centred on the same nucleus.
    ``max_sigma`` sets the kernel's size (default: the largest sigma). Returns channels-last memory."""
    batch = x.shape[0]
    device = x.device
    if bool((zooms != 1).any()):
        theta = torch.zeros((batch, 2, 3))
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zooms
        grid = torch.nn.functional.affine_grid(theta.to(device), list(x.shape), align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    largest = float(sigmas.max()) if max_sigma is None else max_sigma
    if largest > 0 and bool((sigmas > 0).any()):
        radius = max(1, math.ceil(2.0 * largest))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        weights = torch.exp(-0.5 * (offsets / sigmas.clamp(min=1e-6).unsqueeze(1)) ** 2)
        weights[sigmas <= 0] = (offsets == 0).float()           # sigma 0: the identity kernel
        weights = (weights / weights.sum(dim=1, keepdim=True)).to(device)
        channels = x.shape[1]
        kernels = weights.repeat_interleave(channels, dim=0)    # (B * C, K): every channel of a sample alike
        flat = x.reshape(1, batch * channels, x.shape[2], x.shape[3])
        flat = torch.nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect")
        flat = torch.nn.functional.conv2d(flat, kernels.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
        flat = torch.nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect")
        flat = torch.nn.functional.conv2d(flat, kernels.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
        x = flat.view_as(x)
    return x.contiguous(memory_format=torch.channels_last)


def stain_jitter(rgb: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """HED stain augmentation (Tellez et al. 2018): each sample's haematoxylin, eosin and DAB
    amounts scaled by U(1 - sigma, 1 + sigma) and shifted by U(-sigma, sigma) in optical density.

    (B, S, S, 3) float 0..255 -> the same. Beer-Lambert: OD = -log((I + 1) / 256); stains = OD @ H^-1;
    the per-sample scaling and shift fold into one matrix and offset, so it is one batched matmul.
    """
    batch = rgb.shape[0]
    scale = 1.0 + sigma * (2.0 * torch.rand((batch, 3), generator=generator) - 1.0)
    shift = sigma * (2.0 * torch.rand((batch, 3), generator=generator) - 1.0)
    rgb_from_hed = torch.tensor(_RGB_FROM_HED, dtype=torch.float64)
    hed_from_rgb = torch.linalg.inv(rgb_from_hed)
    matrices = (hed_from_rgb.unsqueeze(0) * scale.double().unsqueeze(1)) @ rgb_from_hed     # (B, 3, 3)
    offsets = shift.double() @ rgb_from_hed                                                  # (B, 3)
    density = torch.log1p(rgb).neg_().add_(math.log(256.0)).view(batch, -1, 3)
    density = torch.baddbmm(offsets.float().to(rgb.device).unsqueeze(1), density, matrices.float().to(rgb.device))
    return density.neg_().exp_().mul_(256.0).sub_(1.0).clamp_(0.0, 255.0).view(rgb.shape)
