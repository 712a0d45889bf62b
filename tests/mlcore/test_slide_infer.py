"""Slide inference: the same predictions as infer_image on the same tiles, the model's scale, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.cli import main
from mlcore.config import TrainConfig
from mlcore.crops import CropSpec
from mlcore.data import to_input
from mlcore.infer import infer_image, infer_slide
from mlcore.model import CrossTrainedModel
from mlcore.slide_fixtures import build_test_slide
from mlcore.slide_nuclei import iter_geojson_nuclei
from mlcore.slides import DEFAULT_MODEL_MPP, open_slide
from mlcore.types import LabelSet


@pytest.fixture(scope="module")
def slides(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    return {"40x": build_test_slide(shared_data, root / "40x"),
            "20x": build_test_slide(shared_data, root / "20x", downsample=2)}


def _labels(manifest_path) -> LabelSet:
    manifest = json.loads(manifest_path.read_text())
    return LabelSet("consep", tuple(manifest["label_set"]["classes"]),
                    tuple(tuple(c) for c in manifest["label_set"]["colors"]))


class DarkCentre(nn.Module):
    """A scale-sensitive stand-in for a trained model: the class is how much of the crop's central
    24 x 24 pixels is dark, i.e. how large the nucleus is in pixels (random weights would not care)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # predict() asks the parameters for the device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, :3].mean(1)
        centre = x.shape[-1] // 2
        dark = (grey[:, centre - 12:centre + 12, centre - 12:centre + 12] < 0.2).float().mean((1, 2))
        return -(dark[:, None] - torch.tensor([0.05, 0.2, 0.35, 0.5])[None]).abs() * 50


def _classify(model, paths, **kwargs) -> tuple[list, np.ndarray, np.ndarray]:
    nuclei = list(iter_geojson_nuclei(paths["geojson"]))
    name = model.label_sets[0].name
    probs = np.full((len(nuclei), len(model.label_sets[0])), np.nan)
    with open_slide(paths["slide"]) as slide:
        for batch in infer_slide(model, slide, iter(nuclei), **kwargs):
            assert np.all(np.isnan(probs[batch.indices]))  # each nucleus once
            probs[batch.indices] = batch.predictions[name].probs
    assert not np.isnan(probs).any()
    return nuclei, probs, probs.argmax(axis=1)


def _fit_batchnorm(model: CrossTrainedModel, image: np.ndarray, mask: np.ndarray) -> None:
    """BatchNorm statistics from the image's own crops, then eval mode. A fresh network's statistics (mean 0,
    variance 1) shrink its activations until every crop gets nearly the same probabilities (within 1e-5):
    comparing those would not tell two crops apart."""
    crops, _ = model.crop_spec.cut(image, mask.astype(np.int64))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None          # a plain mean over the batches seen
    model.train()
    with torch.no_grad():
        model.backbone(to_input(torch.from_numpy(crops)))
    model.eval()


@pytest.mark.slow  # classifies a whole slide, then each of its tiles
@pytest.mark.parametrize("context_view", [0, 2])
def test_same_predictions_as_infer_image_on_the_tiles(slides, context_view):
    import tifffile

    torch.manual_seed(0)
    model = CrossTrainedModel([_labels(slides["40x"]["manifest"])], "small", {"width": 8},
                              CropSpec(context_view=context_view))
    manifest = json.loads(slides["40x"]["manifest"].read_text())
    mask = tifffile.imread(slides["40x"]["mask"])  # ids 1..N in the GeoJSON's order
    with open_slide(slides["40x"]["slide"]) as slide:
        image = slide.read_region(0, 0, 0, manifest["width"], manifest["height"])
    _fit_batchnorm(model, image, mask)
    _, slide_probs, _ = _classify(model, slides["40x"], batch_size=96)
    interior = total = 0
    for tile in manifest["tiles"]:
        x, y, w, h = tile["x"], tile["y"], tile["width"], tile["height"]
        result = infer_image(model, image[y:y + h, x:x + w], mask[y:y + h, x:x + w].astype(np.int64))
        rows = result.geometry.ids - 1
        tile_probs = result.predictions["consep"].probs
        # Away from the tile's edges the crops are the same pixels: the same probabilities. At its edges
        # infer_image mirrors the tile where the slide has the neighbouring tile.
        boxes = result.geometry.bboxes
        margin = model.crop_spec.window // 2
        inside = (boxes[:, :2].min(axis=1) >= margin) & (boxes[:, 2] <= h - margin) & (boxes[:, 3] <= w - margin)
        np.testing.assert_allclose(slide_probs[rows[inside]], tile_probs[inside], atol=1e-5)
        interior += inside.sum()
        total += len(rows)
        assert np.abs(slide_probs[rows] - tile_probs).mean() < 0.05
    assert total == manifest["nuclei"] and interior > (150 if context_view == 0 else 60)


def test_a_20x_slide_is_classified_at_the_models_scale(slides):
    model = CrossTrainedModel([LabelSet("size", ("small", "medium", "large", "huge"))], "small").eval()
    model.backbone = DarkCentre()
    nuclei_40x, _, classes_40x = _classify(model, slides["40x"], batch_size=128)
    nuclei_20x, _, classes_20x = _classify(model, slides["20x"], batch_size=128)
    assert len(set(classes_40x.tolist())) == 4
    model.mpp = 0.5  # pretend the model was trained at 20x: no resampling, the wrong scale
    _, _, unresampled = _classify(model, slides["20x"], batch_size=128)
    centres_40x = np.array([n.centroid for n in nuclei_40x])
    centres_20x = (np.array([n.centroid for n in nuclei_20x]) + 0.5) * 2 - 0.5
    distance, match = cKDTree(centres_40x).query(centres_20x)
    found = distance < 3
    assert found.mean() > 0.9
    resampled_agreement = (classes_20x[found] == classes_40x[match[found]]).mean()
    wrong_scale_agreement = (unresampled[found] == classes_40x[match[found]]).mean()
    assert resampled_agreement > 0.7
    assert resampled_agreement > wrong_scale_agreement + 0.2


def test_batches_are_bounded_and_spatial(slides):
    torch.manual_seed(1)
    model = CrossTrainedModel([_labels(slides["40x"]["manifest"])], "small", {"width": 4}).eval()
    nuclei = list(iter_geojson_nuclei(slides["40x"]["geojson"]))[:300]
    reversed_order = nuclei[::-1]  # no spatial order in the stream: still bounded regions
    events = []
    with open_slide(slides["40x"]["slide"]) as slide:
        batches = list(infer_slide(model, slide, iter(reversed_order), batch_size=50, chunk_size=200,
                                   region_size=256, progress=events.append))
    assert sorted(np.concatenate([b.indices for b in batches]).tolist()) == list(range(len(nuclei)))
    for batch in batches:
        assert len(batch.nuclei) <= 50
        x, y, width, height = batch.region
        assert width <= 256 + 2 * 48 and height <= 256 + 2 * 48
        for nucleus in batch.nuclei:
            x0, y0, x1, y1 = nucleus.bbox
            assert x <= x0 and y <= y0 and x1 <= x + width and y1 <= y + height
    assert events[-1]["nuclei"] == len(nuclei) and events[-1]["batches"] == len(batches)


def test_checkpoints_record_the_models_scale(tmp_path):
    model = CrossTrainedModel([LabelSet("a", ("x", "y"))], "small", {"width": 4}, mpp=0.5)
    path = save_checkpoint(tmp_path / "model.pt", model, "sparse", 0, True, TrainConfig())
    assert load_checkpoint(path).model.mpp == 0.5
    state = torch.load(path, weights_only=True)
    del state["architecture"]["mpp"]  # a checkpoint from before slides
    torch.save(state, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").model.mpp == DEFAULT_MODEL_MPP


def test_infer_slide_command(slides, tmp_path, capsys):
    torch.manual_seed(2)
    label_set = _labels(slides["40x"]["manifest"])
    model = CrossTrainedModel([label_set, LabelSet("other", ("p", "q"))], "small", {"width": 4})
    checkpoint = save_checkpoint(tmp_path / "model.pt", model, "sparse", 0, True, TrainConfig())
    out = tmp_path / "classified.geojson"
    args = ["infer-slide", "--checkpoint", str(checkpoint), "--slide", str(slides["40x"]["slide"]),
            "--nuclei", str(slides["40x"]["geojson"]), "--out", str(out), "--batch-size", "200"]
    assert main(args) == 0
    assert "nuclei/s" in capsys.readouterr().err
    written = list(iter_geojson_nuclei(out))
    source = list(iter_geojson_nuclei(slides["40x"]["geojson"]))
    assert len(written) == len(source)
    assert {n.class_name for n in written} <= set(label_set.classes)
    assert all(0 < n.measurements["consep: probability"] <= 1 for n in written)
    # The same outlines (the boxes are those of the simplified outlines now).
    assert sorted(n.outline.tobytes() for n in written) == sorted(n.outline.tobytes() for n in source)
    # From the mask TIFF, with the other label set.
    assert main(args[:-4] + ["--nuclei", str(slides["40x"]["mask"]), "--out", str(out), "--label-set", "other"]) == 0
    assert {n.class_name for n in iter_geojson_nuclei(out)} <= {"p", "q"}
    assert main(args + ["--label-set", "nope"]) == 2
    assert "'nope' is not one of the model's label sets" in capsys.readouterr().err
    assert not out.with_name(out.name + ".partial").exists()


@pytest.mark.slow  # classifies a whole slide twice to compare
def test_read_ahead_gives_the_same_predictions_and_passes_errors_on(slides):
    from mlcore.slide_nuclei import SlideNucleiError

    torch.manual_seed(3)
    model = CrossTrainedModel([_labels(slides["40x"]["manifest"])], "small", {"width": 4}).eval()
    _, in_caller, _ = _classify(model, slides["40x"], batch_size=100)
    _, read_ahead, _ = _classify(model, slides["40x"], batch_size=100, read_ahead=True)
    np.testing.assert_array_equal(in_caller, read_ahead)

    def broken():
        for position, nucleus in enumerate(iter_geojson_nuclei(slides["40x"]["geojson"])):
            if position == 150:
                raise SlideNucleiError("my.geojson", "feature #150: broken")
            yield nucleus

    for ahead in (False, True):
        with open_slide(slides["40x"]["slide"]) as slide:
            with pytest.raises(SlideNucleiError, match="feature #150"):
                list(infer_slide(model, slide, broken(), batch_size=50, chunk_size=100, read_ahead=ahead))
            # A consumer that stops early stops the reading too.
            first = next(iter(infer_slide(model, slide, iter_geojson_nuclei(slides["40x"]["geojson"]),
                                          batch_size=50, read_ahead=ahead)))
            assert len(first.nuclei) <= 50


def test_an_ensemble_classifies_a_slide_with_its_members_average(slides):
    from mlcore.model import SeedEnsemble
    from mlcore.predict import forward_logits, mean_outputs, predictions_from_logits

    label_set = _labels(slides["40x"]["manifest"])
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(CrossTrainedModel([label_set], "small", {"width": 4}, CropSpec(context_view=0)).eval())
    ensemble = SeedEnsemble(members).eval()
    nuclei, probs, _ = _classify(ensemble, slides["40x"], batch_size=64)
    manifest = json.loads(slides["40x"]["manifest"].read_text())
    with open_slide(slides["40x"]["slide"]) as slide:
        image = slide.read_region(0, 0, 0, manifest["width"], manifest["height"])
    import tifffile

    mask = tifffile.imread(slides["40x"]["mask"])
    crops, geometry = members[0].crop_spec.cut(image, mask.astype(np.int64))
    expected = predictions_from_logits(ensemble, *mean_outputs([forward_logits(m, crops) for m in members]))
    rows = geometry.ids - 1   # mask ids are 1..N in the GeoJSON's order
    inside = (geometry.bboxes[:, :2].min(axis=1) >= 64) & (geometry.bboxes[:, 2] <= manifest["height"] - 64) & \
        (geometry.bboxes[:, 3] <= manifest["width"] - 64)
    np.testing.assert_allclose(probs[rows[inside]], expected[label_set.name].probs[inside], atol=1e-5)
    _, alone, _ = _classify(members[0], slides["40x"], batch_size=64)
    assert np.abs(alone - probs).max() > 1e-4
