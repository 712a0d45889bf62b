import json

import cv2
import numpy as np
import pytest

from mlcore.infer import infer_image, read_mask, write_outputs
from mlcore.model import CrossTrainedModel
from mlcore.types import DataError, LabelSet
from tests.mlcore.helpers import disk_image


@pytest.fixture(scope="module")
def model():
    model = CrossTrainedModel([LabelSet("A", ("a0", "a1", "a2")), LabelSet("B", ("b0", "b1"))], "small", {"width": 4})
    model.use_correlation.fill_(True)
    return model.eval()


def test_outputs_per_label_set_and_json(model, tmp_path):
    image, instance_map, _ = disk_image(np.random.default_rng(0), size=96, count=8)
    result = infer_image(model, image, instance_map)
    ids = np.unique(instance_map)[1:]
    assert result.geometry.ids.tolist() == ids.tolist()
    written = write_outputs(tmp_path, "tile", image, instance_map, result, model, ["B"], image_path="tile.png")
    assert {p.name for p in written} == {"tile_B.npy", "tile_B_overlay.png", "tile.json"}
    classes = np.load(tmp_path / "tile_B.npy")
    assert classes.shape == (len(ids), 2) and classes[:, 0].tolist() == ids.tolist()
    assert set(classes[:, 1].tolist()) <= {0, 1}
    overlay = cv2.imread(str(tmp_path / "tile_B_overlay.png"))
    assert overlay.shape[1] == 96 and overlay.shape[0] > 96     # the legend goes below the image
    report = json.loads((tmp_path / "tile.json").read_text())
    assert [s["name"] for s in report["label_sets"]] == ["B"]
    first = report["instances"][0]
    assert first["id"] == int(ids[0]) and len(first["centroid"]) == 2
    label = first["labels"]["B"]
    assert label["class"] in ("b0", "b1") and len(label["base_probs"]) == 2 and len(label["mlp_probs"]) == 2
    assert 0 <= label["disagreement"] <= 1
    assert label["class"] == ("b0", "b1")[classes[0, 1]]
    with pytest.raises(ValueError, match="unknown label set"):
        write_outputs(tmp_path, "tile", image, instance_map, result, model, ["C"])


def test_read_mask_npy_and_png(tmp_path):
    mask = np.zeros((20, 30), np.int32)
    mask[2:5, 3:9] = 7
    mask[10:15, 10:12] = 300
    np.save(tmp_path / "m.npy", mask)
    assert (read_mask(tmp_path / "m.npy", (20, 30)) == mask).all()
    cv2.imwrite(str(tmp_path / "m16.png"), mask.astype(np.uint16))
    assert (read_mask(tmp_path / "m16.png") == mask).all()
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[mask == 7] = (0, 0, 255)
    colour[mask == 300] = (0, 255, 0)
    cv2.imwrite(str(tmp_path / "mrgb.png"), colour)
    relabelled = read_mask(tmp_path / "mrgb.png")
    assert len(np.unique(relabelled)) == 3 and (relabelled[mask == 0] == 0).all()
    assert len(np.unique(relabelled[mask == 7])) == 1 and len(np.unique(relabelled[mask == 300])) == 1
    with pytest.raises(DataError, match="differs from image size"):
        read_mask(tmp_path / "m.npy", (21, 30))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="2-D"):
        read_mask(tmp_path / "bad.npy")


def test_overlay_compression_changes_the_file_size_not_the_pixels(model, tmp_path):
    image, instance_map, _ = disk_image(np.random.default_rng(1), size=96, count=8)
    result = infer_image(model, image, instance_map)
    write_outputs(tmp_path / "stored", "tile", image, instance_map, result, model, ["A"])
    write_outputs(tmp_path / "packed", "tile", image, instance_map, result, model, ["A"], overlay_compression=6)
    stored, packed = tmp_path / "stored" / "tile_A_overlay.png", tmp_path / "packed" / "tile_A_overlay.png"
    np.testing.assert_array_equal(cv2.imread(str(stored)), cv2.imread(str(packed)))
    assert packed.stat().st_size < stored.stat().st_size
    written = write_outputs(tmp_path / "none", "tile", image, instance_map, result, model, overlays=False)
    assert {p.name for p in written} == {"tile_A.npy", "tile_B.npy", "tile.json"}


def test_overlays_of_some_label_sets_are_the_same_pictures(model, tmp_path):
    image, instance_map, _ = disk_image(np.random.default_rng(2), size=96, count=8)
    result = infer_image(model, image, instance_map)
    write_outputs(tmp_path / "all", "tile", image, instance_map, result, model)
    written = write_outputs(tmp_path / "B", "tile", image, instance_map, result, model, overlays=["B"])
    assert {p.name for p in written} == {"tile_A.npy", "tile_B.npy", "tile.json", "tile_B_overlay.png"}
    # B's preview drawn alone is B's, not the first label set's colours under B's name.
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "B" / "tile_B_overlay.png")),
                                  cv2.imread(str(tmp_path / "all" / "tile_B_overlay.png")))
    assert not np.array_equal(cv2.imread(str(tmp_path / "all" / "tile_A_overlay.png")),
                              cv2.imread(str(tmp_path / "all" / "tile_B_overlay.png")))
    with pytest.raises(ValueError, match="overlay of label set 'A', which is not written"):
        write_outputs(tmp_path / "x", "tile", image, instance_map, result, model, ["B"], overlays=["A"])


def test_label_set_names_never_become_paths(tmp_path):
    names = ["a/b", "../escape", "ok", "Zellkern 細胞"]
    model = CrossTrainedModel([LabelSet(n, ("x", "y")) for n in names], "small", {"width": 4}).eval()
    image, instance_map, _ = disk_image(np.random.default_rng(1), size=64, count=3)
    out = tmp_path / "out"
    written = write_outputs(out, "../tile", image, instance_map, infer_image(model, image, instance_map), model)
    assert all(p.parent == out for p in written)  # nothing outside the output folder
    assert {p.name for p in written} == {"image_set1.npy", "image_set1_overlay.png", "image_set2.npy",
                                         "image_set2_overlay.png", "image_ok.npy", "image_ok_overlay.png",
                                         "image_Zellkern 細胞.npy", "image_Zellkern 細胞_overlay.png", "image.json"}
    report = json.loads((out / "image.json").read_text())
    assert [(s["name"], s["file_part"]) for s in report["label_sets"]] == [
        ("a/b", "set1"), ("../escape", "set2"), ("ok", "ok"), ("Zellkern 細胞", "Zellkern 細胞")]


def tiles_on_disk(folder, seed: int, count: int = 4) -> list[tuple]:
    """``count`` images ``t<k>.png`` with their masks ``t<k>.npy``, as (image path, mask path) pairs."""
    from mlcore.overlay import save_png

    pairs = []
    for k in range(count):
        image, instance_map, _ = disk_image(np.random.default_rng(seed + k), size=96, count=3 + k)
        save_png(folder / f"t{k}.png", image)
        np.save(folder / f"t{k}.npy", instance_map)
        pairs.append((folder / f"t{k}.png", folder / f"t{k}.npy"))
    return pairs


def test_infer_tiles_reads_ahead_without_changing_a_result(model, tmp_path):
    from mlcore.infer import infer_tiles

    pairs = tiles_on_disk(tmp_path, seed=10)
    (tmp_path / "t2.npy").write_bytes(b"not an array")   # the third tile's mask is unreadable
    ahead = list(infer_tiles(model, pairs, read_ahead=True))
    in_turn = list(infer_tiles(model, pairs, read_ahead=False))
    assert [t.image_path.name for t in ahead] == ["t0.png", "t1.png", "t2.png", "t3.png"]   # in order
    for one, other in zip(ahead, in_turn):
        assert (one.error is None) == (other.error is None)
        if one.error is not None:
            assert one.result is None and "t2.npy" in str(one.error)
            continue
        assert one.result.geometry.ids.tolist() == np.unique(np.load(one.mask_path))[1:].tolist()
        for name in ("A", "B"):
            assert np.array_equal(one.result.predictions[name].probs, other.result.predictions[name].probs)
            alone = infer_image(model, one.image, one.instance_map).predictions[name]
            assert np.array_equal(one.result.predictions[name].labels, alone.labels)
    assert [t.error is not None for t in ahead] == [False, False, True, False]


def test_infer_and_write_writes_behind_the_same_files_in_order(model, tmp_path):
    from mlcore.infer import infer_and_write

    pairs = tiles_on_disk(tmp_path, seed=20)
    (tmp_path / "t1.png").write_bytes(b"not a png")   # the second tile is unreadable, between written ones
    behind = list(infer_and_write(model, pairs, tmp_path / "behind", names=["B"]))
    in_turn = list(infer_and_write(model, pairs, tmp_path / "in_turn", names=["B"], read_ahead=False,
                                   write_behind=False))
    for tiles in (behind, in_turn):
        assert [t.image_path.name for t in tiles] == ["t0.png", "t1.png", "t2.png", "t3.png"]
        assert [t.error is not None for t in tiles] == [False, True, False, False]
        assert tiles[1].outputs == [] and "t1.png" in str(tiles[1].error)
        for tile in (tiles[0], tiles[2], tiles[3]):
            stem = tile.image_path.stem
            assert sorted(p.name for p in tile.outputs) == [f"{stem}.json", f"{stem}_B.npy", f"{stem}_B_overlay.png"]
            assert all(p.is_file() for p in tile.outputs)
    # Every file byte for byte the same as writing in turn, and nothing for the unreadable tile.
    names = sorted(p.name for p in (tmp_path / "behind").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "in_turn").iterdir()) and not any("t1" in n for n in names)
    for name in names:
        behind_bytes = (tmp_path / "behind" / name).read_bytes()
        in_turn_bytes = (tmp_path / "in_turn" / name).read_bytes()
        if name.endswith(".json"):   # the JSON names its own image path, the same here
            assert json.loads(behind_bytes) == json.loads(in_turn_bytes)
        else:
            assert behind_bytes == in_turn_bytes
    # Stems other than the images' (the benchmark writes one tile many times under different names).
    again = list(infer_and_write(model, [pairs[0]] * 2, tmp_path / "stems", names=["B"], stems=["x", "y"]))
    assert [sorted(p.name for p in t.outputs)[0] for t in again] == ["x.json", "y.json"]


def test_a_photograph_or_a_jpeg_is_refused_as_a_mask(tmp_path):
    """A photo sent as the mask read as tens of thousands of one-pixel "nuclei"; a JPEG label image has new values
    along every edge. Both are refused, naming the file; a real RGB label image still reads."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    with pytest.raises(DataError, match=r"photo.png: \d+ instances of 1\.\d pixels on average: this looks like a "
                                        "photograph"):
        read_mask(tmp_path / "photo.png")
    labels = np.zeros((64, 64, 3), np.uint8)
    labels[5:20, 5:20] = (0, 0, 255)
    labels[30:50, 30:45] = (0, 255, 0)
    cv2.imwrite(str(tmp_path / "labels.jpg"), labels)
    with pytest.raises(DataError, match="labels.jpg: a JPEG cannot hold an instance map"):
        read_mask(tmp_path / "labels.jpg")
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    assert len(np.unique(read_mask(tmp_path / "labels.png"))) == 3
