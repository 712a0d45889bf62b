import numpy as np
import pytest
import torch

from mlcore.config import TrainConfig
from mlcore.data import (ImageRecord, NucleusTable, augment, build_table, sampling_weights, split_by_group,
                         table_from_arrays)
from mlcore.distributed import DistributedContext
from mlcore.stages import make_loader, stage_class_power
from mlcore.types import AnnotatedImage, LabelSet, NucleusDataset
from tests.mlcore.helpers import disk_image, two_set_table


def test_table_from_arrays_labels_matrix_with_missing():
    table, (set_a, set_b) = two_set_table(images_per_set=2, unlabelled_images=1, crop_size=64)
    assert table.crops.dtype == np.uint8 and table.crops.shape[1:] == (64, 64, 3)
    assert table.labels.shape == (len(table), 2)
    in_a = table.dataset_index == table.dataset_names.index("dsA")
    in_b = table.dataset_index == table.dataset_names.index("dsB")
    unlabelled = table.dataset_index == table.dataset_names.index("unlabelled")
    assert (table.labels[in_a, 1] == -1).all() and (table.labels[in_a, 0] >= 0).all()
    assert (table.labels[in_b, 0] == -1).all() and (table.labels[in_b, 1] >= 0).all()
    assert (table.labels[unlabelled] == -1).all()


def test_several_known_label_sets_per_nucleus_and_dict_records():
    rng = np.random.default_rng(1)
    image, instance_map, classes = disk_image(rng, count=4)
    ids = sorted(classes)
    record = {"image": image, "instance_map": instance_map, "dataset": "web",
              "labels": {"A": {ids[0]: 2}, "B": {ids[0]: 1, ids[1]: 0}}}
    table = table_from_arrays([record], [LabelSet("A", ("a", "b", "c")), LabelSet("B", ("p", "q"))])
    row = {int(i): r for r, i in enumerate(table.instance_ids)}
    assert table.labels[row[ids[0]]].tolist() == [2, 1]
    assert table.labels[row[ids[1]]].tolist() == [-1, 0]
    with pytest.raises(ValueError, match="outside label set"):
        table_from_arrays([{**record, "labels": {"B": {ids[0]: 5}}}], [LabelSet("B", ("p", "q"))])
    with pytest.raises(ValueError, match="unknown label set"):
        table_from_arrays([{**record, "labels": {"C": {ids[0]: 0}}}], [LabelSet("B", ("p", "q"))])


def test_crops_are_cached_on_disk_and_labels_are_not(tmp_path):
    rng = np.random.default_rng(2)
    image, instance_map, classes = disk_image(rng)
    label_set = LabelSet("A", ("a0", "a1", "a2"))
    first = table_from_arrays([ImageRecord(image, instance_map, {"A": classes}, "d")], [label_set], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("crops-*.npy"))) == 1
    relabelled = {k: 0 for k in classes}
    second = table_from_arrays([ImageRecord(image, instance_map, {"A": relabelled}, "d")], [label_set],
                               cache_dir=tmp_path)
    assert len(list(tmp_path.glob("crops-*.npy"))) == 1       # cache hit, no new file
    np.testing.assert_array_equal(first.crops, second.crops)
    assert (second.labels[:, 0] == 0).all()
    changed = image.copy()
    changed[0, 0] += 1
    table_from_arrays([ImageRecord(changed, instance_map, {}, "d")], [label_set], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("crops-*.npy"))) == 2       # other pixels, other key


def test_build_table_from_datasets_checks_label_sets():
    rng = np.random.default_rng(3)
    image, instance_map, classes = disk_image(rng)
    ls = LabelSet("A", ("a0", "a1", "a2"))
    dataset = NucleusDataset("dsA", "seed", ls, [AnnotatedImage("x", image, instance_map, classes)])
    table = build_table([dataset])
    assert [s.name for s in table.label_sets] == ["A"] and (table.labels[:, 0] >= 0).all()
    with pytest.raises(ValueError, match="differ"):
        build_table([dataset], [LabelSet("A", ("a0", "a2", "a1"))])


def test_split_is_by_group_seeded_and_keeps_unlabelled_in_training():
    table, _ = two_set_table(images_per_set=6, unlabelled_images=2)
    train, val = split_by_group(table, 0.34, seed=5)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(table)
    for group in np.unique(table.group_index):
        rows = np.flatnonzero(table.group_index == group)
        assert np.isin(rows, val).all() or not np.isin(rows, val).any()   # whole groups only
    unlabelled = np.flatnonzero(table.dataset_index == table.dataset_names.index("unlabelled"))
    assert np.isin(unlabelled, train).all()
    for name in ("dsA", "dsB"):   # every labelled dataset has both sides
        rows = np.flatnonzero(table.dataset_index == table.dataset_names.index(name))
        assert np.isin(rows, val).any() and np.isin(rows, train).any()
    again_train, again_val = split_by_group(table, 0.34, seed=5)
    assert np.array_equal(val, again_val)
    assert not np.array_equal(val, split_by_group(table, 0.34, seed=6)[1])


def test_sampling_weights_balance_datasets_and_classes():
    labels = np.array([[0, -1]] * 8 + [[1, -1]] * 2 + [[-1, 0]] * 2)
    table = NucleusTable(np.zeros((12, 64, 64, 3), np.uint8), labels, np.array([0] * 10 + [1] * 2), np.zeros(12, int),
                         np.zeros(12, int), np.arange(12), (LabelSet("A", ("a", "b")), LabelSet("B", ("c",))),
                         ["d0", "d1"], ["g"], ["i"])
    rows = np.arange(12)
    uniform = sampling_weights(table, rows)
    assert np.allclose(uniform, 1 / 12)
    balanced = sampling_weights(table, rows, dataset_power=1.0, class_power=1.0)
    assert np.isclose(balanced[:10].sum(), 0.5) and np.isclose(balanced[10:].sum(), 0.5)
    assert np.isclose(balanced[:8].sum(), balanced[8:10].sum())


def test_stage_3_draws_with_its_own_class_power():
    # Class "a" has 8 nuclei, "b" 2: stages 1-2 draw them 2:1 (class_power 0.5), stage 3 1:1 (1.0).
    labels = np.array([[0]] * 8 + [[1]] * 2)
    table = NucleusTable(np.zeros((10, 8, 8, 3), np.uint8), labels, np.zeros(10, int), np.zeros(10, int),
                         np.zeros(10, int), np.arange(10), (LabelSet("A", ("a", "b")),), ["d0"], ["g"], ["i"])
    config = TrainConfig(class_power=0.5, completion_class_power=1.0, samples_per_epoch=20000, batch_size=1000)

    def share_of_b(stage):
        drawn = np.concatenate([batch_labels.numpy()[:, 0] for _, batch_labels in
                                make_loader(table, np.arange(10), config, DistributedContext(), stage)])
        return float((drawn == 1).mean())

    assert stage_class_power(config, "sparse") == 0.5 and stage_class_power(config, "completion") == 1.0
    assert abs(share_of_b("sparse") - 1 / 3) < 0.02
    assert abs(share_of_b("completion") - 1 / 2) < 0.02
    assert stage_class_power(TrainConfig(class_power=0.5, completion_class_power=None), "completion") == 0.5


def test_augment_is_a_batched_dihedral_transform_plus_jitter():
    crops = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3)
    out = augment(crops, torch.Generator().manual_seed(0), jitter=0.0)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    plain = crops.permute(0, 3, 1, 2).float() / 127.5 - 1
    for i in range(2):   # without jitter each sample is one of the 8 symmetries of its crop
        candidates = []
        for t in (plain[i], plain[i].transpose(1, 2)):
            for flipped in (t, t.flip(1), t.flip(2), t.flip(1).flip(2)):
                candidates.append(flipped)
        assert any(torch.allclose(out[i], c, atol=1e-6) for c in candidates)
    jittered = augment(crops, torch.Generator().manual_seed(0), jitter=0.1)
    assert not torch.allclose(jittered, out)


def _reference_augment(crops, generator, jitter):
    """The augmentation written step by step (dihedral, brightness, saturation, contrast, clamp)."""
    x = crops.permute(0, 3, 1, 2).float() / 255.0
    coins = torch.rand((len(x), 3), generator=generator)
    factors = 1.0 + jitter * (2.0 * torch.rand((len(x), 3), generator=generator) - 1.0)
    x = torch.where((coins[:, 0] < 0.5).view(-1, 1, 1, 1), x.transpose(2, 3), x)
    x = torch.where((coins[:, 1] < 0.5).view(-1, 1, 1, 1), x.flip(2), x)
    x = torch.where((coins[:, 2] < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
    brightness, contrast, saturation = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    x = x * brightness
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey) * saturation + grey
    mean = grey.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0.0, 1.0)
    return x * 2.0 - 1.0


def test_augment_matches_the_step_by_step_transform_and_stays_channels_last():
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8))
    for jitter in (0.0, 0.3):
        fast = augment(crops, torch.Generator().manual_seed(7), jitter=jitter)
        reference = _reference_augment(crops, torch.Generator().manual_seed(7), jitter)
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
        assert fast.is_contiguous(memory_format=torch.channels_last)


def test_split_notes_name_a_lopsided_or_missing_validation_split():
    from mlcore.data import split_notes

    rng = np.random.default_rng(3)

    def record(dataset, group, count):
        image, instance_map, classes = disk_image(rng, count=count)
        return {"image": image, "instance_map": instance_map, "dataset": dataset, "group": group,
                "name": f"{dataset}-{group}", "labels": {"A": {i: c % 2 for i, c in classes.items()}}}

    # Two tiles of very unequal size: whichever goes to validation, one side holds most of the nuclei.
    records = [record("lopsided", "big", 12), record("lopsided", "small", 2), record("alone", "only", 6)]
    table = table_from_arrays(records, [LabelSet("A", ("a", "b"))])
    _, val_rows = split_by_group(table, 0.2, 0)
    notes = split_notes(table, val_rows)
    in_val = int(np.isin(np.flatnonzero(table.dataset_index == table.dataset_names.index("lopsided")), val_rows).sum())
    lopsided = [n for n in notes if "'lopsided'" in n]
    if in_val > 7:   # the big tile went to validation
        assert lopsided == [f"dataset 'lopsided': the validation split holds {in_val} of its 14 labelled nuclei "
                            f"(2 tiles, images or slide squares, whole ones on each side), leaving {14 - in_val} to train on; "
                            "more of them give a fairer split"]
    else:
        assert lopsided == []
    assert ("dataset 'alone' has one tile, image or slide square: none of its 6 labelled nuclei is validated (its figures are "
            "missing from the validation scores)") in notes
    # A balanced split says nothing.
    balanced = table_from_arrays([record("even", str(g), 5) for g in range(10)], [LabelSet("A", ("a", "b"))])
    assert split_notes(balanced, split_by_group(balanced, 0.2, 0)[1]) == []
    # The big tile on the validation side, whatever the seed drew: the note names the count.
    forced = np.flatnonzero(table.group_index == table.group_names.index("lopsided/big"))
    assert any("holds 12 of its 14" in n for n in split_notes(table, forced))
