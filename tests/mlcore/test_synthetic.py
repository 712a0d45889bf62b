import numpy as np
import pytest

from mlcore.readers import read_dataset
from mlcore.synthetic import generate_dataset, generate_nucleus_dataset, generate_tile


def test_tile_shapes_ids_and_classes():
    image, instance_map, classes = generate_tile(np.random.default_rng(0), (100, 120), 30, 4)
    assert image.shape == (100, 120, 3) and image.dtype == np.uint8
    assert instance_map.shape == (100, 120) and instance_map.dtype == np.int32
    ids = np.unique(instance_map)[1:]
    assert ids.tolist() == list(range(1, 31))
    assert sorted(classes) == ids.tolist() and set(classes.values()) <= {0, 1, 2, 3}
    assert len(set(classes.values())) > 1


def test_same_seed_same_tile_other_seed_other_tile():
    a = generate_tile(np.random.default_rng(5), (64, 64), 10, 2)
    b = generate_tile(np.random.default_rng(5), (64, 64), 10, 2)
    c = generate_tile(np.random.default_rng(6), (64, 64), 10, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_image_looks_like_h_and_e():
    image, instance_map, _ = generate_tile(np.random.default_rng(1), (128, 128), 40, 3)
    background = image[instance_map == 0].astype(float).mean(axis=0)
    nuclei = image[instance_map > 0].astype(float).mean(axis=0)
    assert background[0] > background[1] and background[2] > background[1]  # pink: red and blue over green
    assert nuclei.sum() < background.sum() - 150                            # nuclei much darker
    assert nuclei[2] > nuclei[0]                                             # and blue-purple


def _features(dataset):
    """Simple per-nucleus features a classifier could use: area, elongation, mean and spread of darkness."""
    rows, labels = [], []
    for item in dataset.images:
        grey = item.image.astype(float).mean(axis=2)
        for instance_id, label in item.classes.items():
            ys, xs = np.nonzero(item.instance_map == instance_id)
            if xs.size < 8:
                continue
            eigen = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
            values = grey[ys, xs]
            rows.append([np.log(xs.size), np.sqrt(eigen[1] / max(eigen[0], 1e-3)), values.mean(), values.std()])
            labels.append(label)
    return np.array(rows), np.array(labels)


def test_classes_are_learnable_from_appearance():
    train = generate_nucleus_dataset(n_images=4, nuclei_per_image=60, seed=1, n_classes=5, size=(160, 160))
    test = generate_nucleus_dataset(n_images=4, nuclei_per_image=60, seed=2, n_classes=5, size=(160, 160))
    x_train, y_train = _features(train)
    x_test, y_test = _features(test)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    centroids = np.stack([((x_train - mean) / std)[y_train == k].mean(axis=0) for k in range(5)])
    distances = (((x_test - mean) / std)[:, None, :] - centroids[None]) ** 2
    accuracy = (distances.sum(axis=2).argmin(axis=1) == y_test).mean()
    assert accuracy > 0.85  # a nearest-centroid rule on four hand features; a CNN does better


def test_dataset_in_memory_with_missing_labels():
    dataset = generate_nucleus_dataset(n_images=3, nuclei_per_image=40, class_names=["x", "y"], seed=0,
                                       unlabelled_fraction=0.5)
    assert dataset.label_set.classes == ("x", "y") and dataset.format == "synthetic"
    assert [item.name for item in dataset.images] == ["tile_0000", "tile_0001", "tile_0002"]
    labelled = sum(len(item.classes) for item in dataset.images)
    total = sum(int(item.instance_map.max()) for item in dataset.images)
    assert total == 120 and 30 < labelled < 90


@pytest.mark.parametrize("format", ["seed", "coco", "hovernet", "geojson", "pannuke"])
def test_generate_dataset_writes_a_readable_dataset(tmp_path, format):
    root = generate_dataset(tmp_path / "syn", format, n_images=2, nuclei_per_image=12, class_names=["p", "q", "r"],
                            seed=3, size=(64, 64))
    dataset = read_dataset(format, root, class_names=["p", "q", "r"])
    assert len(dataset.images) == 2
    assert sum(len(item.classes) for item in dataset.images) == 24


def test_generation_at_scale_gives_every_requested_nucleus_a_class():
    # Its speed is printed by benchmarks/import_speed.py; tests carry no timed assertions.
    dataset = generate_nucleus_dataset(n_images=100, nuclei_per_image=100, seed=0)
    assert len(dataset.images) == 100
    assert sum(len(item.classes) for item in dataset.images) >= 9990
