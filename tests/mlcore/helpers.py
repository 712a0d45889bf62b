"""Small hand-made nuclei for the method's tests (fast, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.config import TrainConfig
from mlcore.data import ImageRecord, table_from_arrays
from mlcore.train import train_all
from mlcore.types import LabelSet

COLOURS = ((70, 20, 130), (150, 60, 100), (20, 20, 20), (90, 120, 200))


def disk_image(rng: np.random.Generator, size: int = 96, count: int = 10, num_classes: int = 3):
    """An image of coloured disks (class = colour) with its instance map and {id: class}."""
    image = rng.integers(180, 240, (size, size, 3), dtype=np.uint8)
    instance_map = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    classes = {}
    for instance_id in range(1, count + 1):
        cy, cx = rng.integers(6, size - 6, 2)
        radius = int(rng.integers(4, 8))
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
        cls = int(rng.integers(0, num_classes))
        instance_map[disk] = instance_id
        image[disk] = COLOURS[cls]
        classes[instance_id] = cls
    present = set(np.unique(instance_map).tolist()) - {0}
    return image, instance_map, {k: v for k, v in classes.items() if k in present}


def two_set_table(images_per_set: int = 6, seed: int = 0, unlabelled_images: int = 0, crop_size=None):
    """A table with label sets A (3 classes, from dataset dsA) and B (2 classes: colour 0 vs rest);
    ``crop_size``: a size or a :class:`mlcore.crops.CropSpec` (None: the crops a default config trains on)."""
    crop_size = TrainConfig().crop_spec if crop_size is None else crop_size
    rng = np.random.default_rng(seed)
    set_a = LabelSet("A", ("a0", "a1", "a2"))
    set_b = LabelSet("B", ("b0", "b1"))
    records = []
    for index in range(images_per_set):
        image, instance_map, classes = disk_image(rng)
        records.append(ImageRecord(image, instance_map, {"A": classes}, "dsA", f"a{index}"))
        image, instance_map, classes = disk_image(rng)
        records.append(ImageRecord(image, instance_map, {"B": {k: min(v, 1) for k, v in classes.items()}},
                                   "dsB", f"b{index}"))
    for index in range(unlabelled_images):
        image, instance_map, _ = disk_image(rng)
        records.append(ImageRecord(image, instance_map, {}, "unlabelled", f"u{index}"))
    return table_from_arrays(records, [set_a, set_b], crop_size=crop_size), [set_a, set_b]


def tiny_real_config(shared_data, with_nucls: bool = False) -> dict:
    """A CONFIG.json for a tiny model of a slice of the real samples (CoNSeP, PanNuke, PanNuke-breast
    and, with ``with_nucls``, NuCLS): seconds to train, for the concept-completion tests."""
    datasets = [
        {"name": "consep", "format": "hovernet", "path": str(shared_data / "consep"), "max_images": 12},
        {"name": "pannuke", "format": "coco", "path": str(shared_data / "pannuke"), "max_images": 4},
        {"name": "pannuke_breast_binary", "format": "coco", "path": str(shared_data / "pannuke_breast_binary"),
         "max_images": 4},
    ]
    if with_nucls:
        datasets.append({"name": "nucls", "format": "seed", "path": str(shared_data / "nucls")})
    return {"datasets": datasets, "model": {"width": 4}, "batch_size": 64, "correlation_views": 1,
            "split": {"val_fraction": 0.3}}


def separable_table(images: int = 40, seed: int = 0):
    """One label set whose class is the nucleus's colour, four disks per image that never touch: a set any
    working training run separates (the learning checks). Returns (table, label set)."""
    rng = np.random.default_rng(seed)
    size = 96
    yy, xx = np.mgrid[:size, :size]
    label_set = LabelSet("colour", ("purple", "pink", "black"))
    records = []
    for index in range(images):
        image = rng.integers(180, 240, (size, size, 3), dtype=np.uint8)
        instance_map = np.zeros((size, size), np.int32)
        classes = {}
        for instance_id, (cy, cx) in enumerate(((24, 24), (24, 72), (72, 24), (72, 72)), start=1):
            radius = int(rng.integers(5, 9))
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
            cls = int(rng.integers(0, len(label_set.classes)))
            instance_map[disk] = instance_id
            image[disk] = COLOURS[cls]
            classes[instance_id] = cls
        records.append(ImageRecord(image, instance_map, {label_set.name: classes}, "toy", f"toy{index}"))
    return table_from_arrays(records, [label_set], crop_size=TrainConfig().crop_spec), label_set


def assert_report_is_its_confusion(report: dict) -> None:
    """A metrics report (mlcore.metrics.classification_report, as stored in metrics.json or a model
    version) says what its own confusion matrix says: n, accuracy and macro-F1 recomputed from it."""
    confusion = np.asarray(report["confusion"], dtype=np.float64)
    n = confusion.sum()
    assert report["n"] == n > 0
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / n)
    true_positive, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    present = (support > 0) | (predicted > 0)
    f1 = 2 * true_positive[present] / (support[present] + predicted[present])   # = 2PR/(P+R), 0 when no hit
    assert report["macro_f1"] == pytest.approx(f1.mean())


def stop_in_second_epoch(table, config, probe_dir):
    """A ``should_stop`` for stage 1 that stops early in its second epoch: a one-stage probe run in
    ``probe_dir`` counts the batches of an epoch first."""
    probe = train_all(table, config=config, stages=("sparse",), out_dir=probe_dir)
    steps_per_epoch = int(np.ceil(probe.history[0]["samples"] / config.batch_size))
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > steps_per_epoch + 1

    return should_stop


def random_model(label_sets, seed: int = 0):
    """A small model with seeded random weights whose probabilities follow its input: an initialised net answers
    nearly the same for every crop and every view of it, so its last layer is scaled up until the crops' (and
    their flips') differences show, as a trained net's do (what test-time augmentation averages)."""
    import torch

    from mlcore.model import CrossTrainedModel

    torch.manual_seed(seed)
    model = CrossTrainedModel(list(label_sets), "small", {"width": 4})
    last = [module for module in model.backbone.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(300)
    return model


def config_of_generated_datasets(tmp_path, datasets: dict[str, list[str]], **extra):
    """A CONFIG.json of generated "seed"-format datasets ({name: class names}, 4 small images each) beside
    ``tmp_path``, as the benchmarks read theirs: its path, its TrainConfig and the table of its nuclei."""
    import json

    from mlcore.cli import read_datasets
    from mlcore.config import load_config_file
    from mlcore.data import build_table
    from mlcore.synthetic import generate_dataset

    specs = []
    for index, (name, classes) in enumerate(datasets.items()):
        root = generate_dataset(tmp_path / name, format="seed", n_images=4, nuclei_per_image=20,
                                class_names=classes, seed=index, size=(128, 128))
        specs.append({"name": name, "format": "seed", "path": str(root)})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"datasets": specs, "model": {"width": 4}, **extra}))
    dataset_specs, config, _ = load_config_file(path)
    return path, config, build_table(read_datasets(dataset_specs), crop_size=config.crop_spec)


def tiny_models_by_seed(table, config, seeds, out_dir) -> list:
    """One quick stage-1 model per training seed (one epoch of 64 draws), their model.pt paths."""
    paths = []
    for seed in seeds:
        run = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "epochs": 1, "samples_per_epoch": 64,
                                     "batch_size": 32})
        train_all(table, config=run, stages=["sparse"], out_dir=out_dir / f"seed{seed}")
        paths.append(out_dir / f"seed{seed}" / "model.pt")
    return paths
