"""``python -m mlcore infer`` over several images: one model load, each image's outputs, and the batch's
mistakes caught before any image is classified."""

import json

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.cli import main
from mlcore.config import TrainConfig
from mlcore.infer import infer_image
from mlcore.model import CrossTrainedModel
from mlcore.overlay import save_png
from mlcore.readers import read_rgb
from mlcore.types import LabelSet
from tests.mlcore.helpers import disk_image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = CrossTrainedModel([LabelSet("A", ("a0", "a1", "a2")), LabelSet("B", ("b0", "b1"))], "small", {"width": 4})
    model.use_correlation.fill_(True)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", model.eval(), "completion", 0, True,
                           TrainConfig())


def tiles(folder, count):
    """``count`` different images and masks on disk, and the instance maps."""
    images, masks, maps = [], [], []
    for k in range(count):
        image, instance_map, _ = disk_image(np.random.default_rng(k), size=96, count=5 + k)
        images.append(save_png(folder / f"tile{k}.png", image))
        np.save(folder / f"tile{k}_mask.npy", instance_map)
        masks.append(folder / f"tile{k}_mask.npy")
        maps.append(instance_map)
    return images, masks, maps


def test_several_images_each_get_their_own_outputs(checkpoint, tmp_path, capsys):
    images, masks, maps = tiles(tmp_path, 3)
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", *map(str, images), "--mask", *map(str, masks),
                 "--out", str(out), "--label-set", "B", "--device", "cpu"]) == 0
    assert {p.name for p in out.iterdir()} == {f"tile{k}{suffix}" for k in range(3)
                                               for suffix in ("_B.npy", "_B_overlay.png", ".json")}
    model = load_checkpoint(checkpoint).model
    for k, instance_map in enumerate(maps):
        ids = np.unique(instance_map)[1:]
        classes = np.load(out / f"tile{k}_B.npy")
        assert classes[:, 0].tolist() == ids.tolist()   # this image's nuclei, not another's
        # The same classes as classifying the image on its own.
        alone = infer_image(model, read_rgb(images[k]), instance_map)
        assert classes[:, 1].tolist() == alone.predictions["B"].labels.tolist()
        report = json.loads((out / f"tile{k}.json").read_text())
        assert report["image"] == str(images[k]) and len(report["instances"]) == len(ids)
    total = sum(len(np.unique(m)) - 1 for m in maps)
    assert f"{total} nuclei in 3 images" in capsys.readouterr().err


def test_one_mask_per_image(checkpoint, tmp_path, capsys):
    images, masks, _ = tiles(tmp_path, 2)
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", *map(str, images), "--mask", str(masks[0]),
                 "--out", str(tmp_path / "out")]) == 2
    assert "--image gives 2 files and --mask 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_file_stops_the_batch_before_it_starts(checkpoint, tmp_path, capsys):
    images, masks, _ = tiles(tmp_path, 2)
    masks[1].unlink()
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", *map(str, images), "--mask", *map(str, masks),
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "tile1_mask.npy" in error and "not found" in error
    assert not (tmp_path / "out").exists()   # not even the first image's outputs


def test_two_images_with_one_stem_are_refused(checkpoint, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_masks, _ = tiles(tmp_path / "a", 1)
    second, second_masks, _ = tiles(tmp_path / "b", 1)
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", str(first[0]), str(second[0]),
                 "--mask", str(first_masks[0]), str(second_masks[0]), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "would write the same output files (tile0_...)" in error
    assert not (tmp_path / "out").exists()


def test_an_unreadable_image_is_skipped_named_and_fails_the_run(checkpoint, tmp_path, capsys):
    images, masks, _ = tiles(tmp_path, 3)
    images[1].write_bytes(b"\x89PNG\r\n\x1a\n not really")   # a truncated download
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", *map(str, images), "--mask", *map(str, masks),
                 "--out", str(out), "--label-set", "A", "--no-overlays"]) == 2
    error = capsys.readouterr().err
    assert f"skipped: {images[1]}" in error
    assert f"1 of 3 images could not be read and have no outputs: {images[1]}" in error
    # The images before and after it were classified; the unreadable one has no outputs at all.
    assert {p.name for p in out.iterdir()} == {"tile0_A.npy", "tile0.json", "tile2_A.npy", "tile2.json"}
    # Alone, the same image is the run's error, as it always was.
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", str(images[1]), "--mask", str(masks[1]),
                 "--out", str(tmp_path / "alone")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {images[1]}: ") and "skipped" not in error


def overlay_files(out):
    return sorted(p.name for p in out.iterdir() if p.name.endswith("_overlay.png"))


def test_one_preview_by_default_and_overlays_names_the_others(checkpoint, tmp_path, capsys):
    images, masks, _ = tiles(tmp_path, 1)

    def infer(out, *options):
        return main(["infer", "--checkpoint", str(checkpoint), "--image", str(images[0]), "--mask", str(masks[0]),
                     "--out", str(tmp_path / out), "--device", "cpu", *options])

    assert infer("default") == 0
    assert overlay_files(tmp_path / "default") == ["tile0_A_overlay.png"]   # the model's first label set
    assert sorted(p.name for p in (tmp_path / "default").glob("*.npy")) == ["tile0_A.npy", "tile0_B.npy"]
    assert "previews of A only: --overlays all" in capsys.readouterr().err
    assert infer("B", "--overlays", "B") == 0
    assert overlay_files(tmp_path / "B") == ["tile0_B_overlay.png"]
    assert infer("all", "--overlays", "all") == 0
    assert overlay_files(tmp_path / "all") == ["tile0_A_overlay.png", "tile0_B_overlay.png"]
    assert infer("none", "--overlays", "none") == 0
    assert overlay_files(tmp_path / "none") == []
    assert infer("only_B", "--label-set", "B") == 0   # the first label set written
    assert overlay_files(tmp_path / "only_B") == ["tile0_B_overlay.png"]
    assert "previews of" not in capsys.readouterr().err   # nothing left out, nothing to say
    # A preview of a label set not written is refused before anything is classified.
    assert infer("refused", "--label-set", "B", "--overlays", "A") == 2
    assert "--overlays 'A' is not a label set written (B): give their names, all or none" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("flag, tta", [([], True), (["--no-tta"], False), (["--tta"], True)])
def test_test_time_augmentation_is_on_by_default_and_said_in_the_json(checkpoint, tmp_path, capsys, flag, tta):
    images, masks, maps = tiles(tmp_path, 1)
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(checkpoint), "--image", str(images[0]), "--mask", str(masks[0]),
                 "--out", str(out), "--device", "cpu", *flag]) == 0
    report = json.loads((out / "tile0.json").read_text())
    assert report["test_time_augmentation"] is tta
    expected = infer_image(load_checkpoint(checkpoint).model, read_rgb(images[0]), maps[0], tta=tta)
    written = np.array([row["labels"]["A"]["base_probs"] for row in report["instances"]])
    np.testing.assert_allclose(written, expected.predictions["A"].base_probs, atol=6e-4)  # written to 3 decimals
    assert ("8 views each" if tta else "one view each") in capsys.readouterr().err
