"""The classifier's input options: the target nucleus's mask channel, wider context, HED stain
jitter and test-time augmentation, and that checkpoints carry them."""

import inspect

import numpy as np
import pytest
import torch

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.config import ConfigError, TrainConfig
from mlcore.crops import CropSpec, cut_crops, reflect_101
from mlcore.data import ImageRecord, augment, dihedral, stain_jitter, table_from_arrays, to_input
from mlcore.model import CrossTrainedModel
from mlcore.predict import forward_logits, predict
from mlcore.train import evaluate, train_all
from mlcore.types import LabelSet
from tests.mlcore.helpers import disk_image, two_set_table
from tests.mlcore.test_crops import coordinate_image


def two_touching_nuclei():
    mask = np.zeros((120, 120), np.int32)
    mask[50:60, 50:60] = 1
    mask[50:60, 60:68] = 2        # a neighbour touching nucleus 1 on its right
    return coordinate_image(120, 120), mask


def test_mask_channel_marks_only_the_target_nucleus():
    image, mask = two_touching_nuclei()
    crops, geometry = cut_crops(image, mask, mask_channel=True)
    assert crops.shape == (2, 64, 64, 4)
    assert geometry.ids.tolist() == [1, 2]
    # The colours are the RGB crop, unchanged.
    plain, _ = cut_crops(image, mask)
    np.testing.assert_array_equal(crops[..., :3], plain)
    for row, instance_id in enumerate((1, 2)):
        rows, cols = crops[row, :, 0, 0].astype(int), crops[row, 0, :, 1].astype(int)
        expected = (mask[rows[:, None], cols[None, :]] == instance_id) * 255
        np.testing.assert_array_equal(crops[row, :, :, 3], expected)
        assert set(np.unique(crops[row, :, :, 3])) == {0, 255}
    assert crops[0, :, :, 3].sum() // 255 == 100 and crops[1, :, :, 3].sum() // 255 == 80


def test_context_cuts_a_wider_window_resized_to_the_crop_size():
    image = coordinate_image(250, 250)
    mask = np.zeros((250, 250), np.int32)
    mask[120:130, 120:130] = 1
    crops, _ = cut_crops(image, mask, 64, context=2.0, mask_channel=True)
    assert crops.shape == (1, 64, 64, 4)
    rows = crops[0, :, 0, 0].astype(float)
    # The box centre is (125, 125); the 128-pixel window spans rows 61..188, two rows per crop row.
    np.testing.assert_allclose(rows, np.arange(61, 189).reshape(64, 2).mean(axis=1), atol=0.51)
    # The nucleus's 10 x 10 pixels cover 5 x 5 of the resized crop.
    assert crops[0, :, :, 3].astype(float).sum() / 255 == pytest.approx(25, abs=1)
    with pytest.raises(ValueError, match="context"):
        cut_crops(image, mask, context=0.5)


def test_context_is_mirrored_at_the_image_border_too():
    image, mask = two_touching_nuclei()
    crops, _ = cut_crops(image, mask, 64, context=2.0)
    assert crops.shape == (2, 64, 64, 3) and (crops[..., 2] == 7).all()   # no black fill
    with pytest.raises(ValueError, match="context"):
        cut_crops(image, mask, context=0.5)


def test_a_nucleus_larger_than_the_window_keeps_its_mask():
    image = coordinate_image(200, 200)
    mask = np.zeros((200, 200), np.int32)
    mask[20:120, 30:110] = 3       # 100 px tall: wider than the 64 px window
    crops, _ = cut_crops(image, mask, mask_channel=True)
    assert crops.shape == (1, 64, 64, 4)
    coverage = crops[0, :, :, 3].astype(float).sum() / 255 / 64 ** 2
    assert coverage == pytest.approx(80 / 100, abs=0.03)   # the window is 100 x 100, the nucleus 100 x 80


def test_crop_spec_describes_and_cuts_as_the_config_says():
    config = TrainConfig.from_dict({"crop": {"size": 48, "mask": True, "context": 1.5},
                                    "augment": {"stain": 0.05}})
    spec = config.crop_spec
    # The default wider view (2x: a 96 px window) comes with them: the colours, its colours, the mask.
    assert spec == CropSpec(48, True, 1.5, context_view=2) and spec.channels == 7 and spec.window == 96
    assert config.stain_jitter == 0.05
    image, mask = two_touching_nuclei()
    crops, _ = spec.cut(image, mask)
    assert crops.shape == (2, 48, 48, 7)
    plain = TrainConfig.from_dict({"crop": {"size": 48, "mask": True, "context": 1.5, "context_view": 0}}).crop_spec
    assert plain == CropSpec(48, True, 1.5) and plain.channels == 4 and plain.window == 72
    for bad, field in (({"crop": {"mask": "yes"}}, "crop.mask"), ({"crop": {"context": 0.5}}, "crop.context"),
                       ({"augment": {"stain": 1.5}}, "augment.stain")):
        with pytest.raises(ConfigError, match=field):
            TrainConfig.from_dict(bad)


def test_stain_jitter_of_zero_strength_changes_nothing_and_keeps_range():
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3))).float()
    same = stain_jitter(rgb.clone(), 1e-9, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, rgb, atol=0.05, rtol=0)
    moved = stain_jitter(rgb.clone(), 0.2, torch.Generator().manual_seed(0))
    assert moved.min() >= 0 and moved.max() <= 255
    assert (moved - rgb).abs().mean() > 1.0        # it does move the colours


def test_augment_flips_the_mask_channel_with_the_colours_and_never_jitters_it():
    image, mask = two_touching_nuclei()
    crops, _ = cut_crops(image, mask, mask_channel=True)
    crops = torch.from_numpy(crops)
    out = augment(crops, torch.Generator().manual_seed(3), jitter=0.2, stain=0.1)
    assert out.shape == (2, 4, 64, 64)
    mask_out = out[:, 3]
    assert set(torch.unique(mask_out).tolist()) == {-1.0, 1.0}
    for row in range(2):
        views = [to_input(dihedral(crops[row:row + 1], code))[0, 3] for code in range(8)]
        assert any(torch.equal(mask_out[row], view) for view in views)


def test_test_time_augmentation_is_the_mean_over_the_eight_symmetries():
    table, label_sets = two_set_table(images_per_set=2, crop_size=64)
    torch.manual_seed(0)
    model = CrossTrainedModel(label_sets, "small", {"width": 4}).eval()
    crops = torch.from_numpy(table.crops[:10])
    logits, _ = forward_logits(model, crops, tta=True)
    with torch.no_grad():
        manual = torch.stack([model.backbone(to_input(dihedral(crops, code))) for code in range(8)]).mean(0)
    torch.testing.assert_close(logits, manual, atol=1e-5, rtol=1e-5)
    plain, _ = forward_logits(model, crops)
    assert not torch.allclose(plain, logits)
    assert predict(model, crops, tta=True)["A"].probs.shape == (10, 3)


@pytest.mark.slow  # real training
def test_a_mask_channel_model_trains_saves_and_loads_with_its_crop_spec(tmp_path):
    rng = np.random.default_rng(0)
    set_a, set_b = LabelSet("A", ("a0", "a1", "a2")), LabelSet("B", ("b0", "b1"))
    records = []
    for index in range(3):
        image, instance_map, classes = disk_image(rng)
        records.append(ImageRecord(image, instance_map, {"A": classes}, "dsA", f"a{index}"))
        image, instance_map, classes = disk_image(rng)
        records.append(ImageRecord(image, instance_map, {"B": {k: min(v, 1) for k, v in classes.items()}}, "dsB", f"b{index}"))
    spec = CropSpec(32, True, 1.5)
    table = table_from_arrays(records, [set_a, set_b], cache_dir=tmp_path / "cache", crop_size=spec)
    assert table.crops.shape[1:] == (32, 32, 4)
    # The cache is keyed by the spec: a plain RGB table of the same images is cut again, not reused.
    assert table_from_arrays(records, [set_a, set_b], cache_dir=tmp_path / "cache", crop_size=32).channels == 3
    config = TrainConfig(backbone_kwargs={"width": 4}, batch_size=16, samples_per_epoch=None, crop_size=32,
                         crop_mask=True, crop_context=1.5, crop_context_view=0, stain_jitter=0.05,
                         epochs={"sparse": 1, "correlation": 1, "completion": 1}, correlation_views=1)
    result = train_all(table, config=config, out_dir=tmp_path / "run")
    loaded = load_checkpoint(tmp_path / "run" / "model.pt")
    assert loaded.model.crop_spec == spec
    assert loaded.raw["crop"]["mask_channel"] is True and loaded.raw["crop"]["context"] == 1.5
    before = predict(result.model, table.crops)["A"].probs
    np.testing.assert_allclose(predict(loaded.model, table.crops)["A"].probs, before, atol=1e-6)
    assert evaluate(loaded.model, table, tta=True)["A"]["n"] > 0
    # A table cut without the mask channel is refused with a message that says why.
    with pytest.raises(ValueError, match="4 channels"):
        train_all(table_from_arrays(records, [set_a, set_b], crop_size=32), config=config, init_checkpoint=loaded)


def test_checkpoints_from_before_the_crop_spec_still_load(tmp_path):
    table, label_sets = two_set_table(images_per_set=1, crop_size=64)
    model = CrossTrainedModel(label_sets, "small", {"width": 4})
    path = save_checkpoint(tmp_path / "old.pt", model, "sparse", 0, True, TrainConfig())
    state = torch.load(path, weights_only=True)
    del state["architecture"]["crop"]
    state["crop"] = {"size": 64}
    for key in ("crop_mask", "crop_context", "stain_jitter", "stain_normalisation", "crop_context_view",
                "context_view_dropout"):
        del state["config"][key]
    torch.save(state, path)
    loaded = load_checkpoint(path)
    assert loaded.model.crop_spec == CropSpec(64, False, 1.0)
    # Its config says so too (a resumed training cuts the crops it trained on), not today's default view.
    assert loaded.config.crop_spec == loaded.model.crop_spec
    assert predict(loaded.model, table.crops)["A"].labels.shape == (len(table),)


def test_weight_average_is_an_exponential_moving_average_of_the_weights():
    from mlcore.train import weight_average

    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    averaged = weight_average(module, 0.5)
    averaged.update_parameters(module)            # the first update takes the weights as they are
    start = module[0].weight.detach().clone()
    with torch.no_grad():
        module[0].weight.add_(2.0)
    averaged.update_parameters(module)
    torch.testing.assert_close(averaged.module[0].weight, start + 1.0)        # 0.5 * old + 0.5 * new
    assert weight_average(module, 0.0) is None


def _first_batchnorm_input_mean(backbone: torch.nn.Module, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean of what the backbone's first BatchNorm receives on ``crops``, and that layer."""
    from mlcore.predict import to_input

    norm = next(m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    backbone.eval()
    with torch.no_grad():
        backbone(to_input(torch.as_tensor(crops), next(backbone.parameters()).device))  # CPU or GPU, as trained
    handle.remove()
    return seen[0], norm


@pytest.mark.slow  # real training
def test_training_with_a_weight_average_ends_each_stage_on_the_average_with_its_own_batchnorm_statistics():
    table, _ = two_set_table(images_per_set=2)
    # No augmentation that changes a channel's mean (colour and stain jitter, the view dropout's blanked wider
    # views): the statistics are compared with what the plain training crops give.
    base = dict(backbone_kwargs={"width": 4}, batch_size=16, samples_per_epoch=None, correlation_views=1,
                jitter=0.0, stain_jitter=0.0, context_view_dropout=0.0,
                epochs={"sparse": 3, "correlation": 1, "completion": 1})
    plain = train_all(table, config=TrainConfig(**base), validate_epochs=False)
    averaged = train_all(table, config=TrainConfig(**base, ema_decay=0.9), validate_epochs=False)
    assert all(np.isfinite(r["loss"]) for r in averaged.history)
    # Same seed, same draws: only the averaging differs, and it moves the weights.
    first = next(iter(plain.model.backbone.parameters()))
    assert not torch.allclose(first, next(iter(averaged.model.backbone.parameters())))
    assert set(averaged.metrics) == {"A", "B"}
    # The averaged network's BatchNorm statistics are its own: the running mean is what its first
    # BatchNorm receives on the training crops (an average of the statistics along the way was not).
    received, norm = _first_batchnorm_input_mean(averaged.model.backbone, table.crops)
    scale = norm.running_var.sqrt()
    assert ((received - norm.running_mean).abs() / scale).max() < 0.05


def _one_crop_at_a_time(image, mask, size, mask_channel, context):
    """The cutting rule written plainly, a crop at a time: the reference the batched cutting must equal."""
    import cv2

    from mlcore.crops import crop_windows, reflect_101
    from mlcore.geometry import instance_geometry

    geometry = instance_geometry(mask)
    top_left, side = crop_windows(geometry.bboxes, max(size, int(round(size * context))))
    crops = []
    for (y, x), span, instance_id in zip(top_left, side, geometry.ids):
        rows = reflect_101(y + np.arange(span), mask.shape[0])[:, None]
        cols = reflect_101(x + np.arange(span), mask.shape[1])[None, :]
        window = image[rows, cols]
        if mask_channel:
            window = np.dstack([window, (mask[rows, cols] == instance_id).astype(np.uint8) * 255])
        if span != size:
            window = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
        crops.append(window.reshape(size, size, -1))
    return np.stack(crops)


@pytest.mark.parametrize("mask_channel, context", [(False, 1.0), (True, 1.0), (False, 1.5), (True, 1.5), (True, 2.0)])
def test_batched_cutting_equals_cutting_one_crop_at_a_time(mask_channel, context):
    from mlcore.synthetic import generate_tile

    # More nuclei than one block of the batched cutting, some at the border, some larger than the window.
    image, mask, _ = generate_tile(np.random.default_rng(4), (300, 420), 400, n_classes=3)
    mask[5:90, 300:390] = mask.max() + 1
    crops, geometry = cut_crops(image, mask, 48, mask_channel=mask_channel, context=context)
    assert len(geometry.ids) > 256
    np.testing.assert_array_equal(crops, _one_crop_at_a_time(image, mask, 48, mask_channel, context))


def _shrunk_by_block_means(image: np.ndarray, factor: int) -> np.ndarray:
    """The image mirrored up to a multiple of ``factor`` and shrunk by averaging ``factor x factor`` blocks."""
    height, width = image.shape[:2]
    grown = image[reflect_101(np.arange(height + -height % factor), height)][
        :, reflect_101(np.arange(width + -width % factor), width)].astype(float)
    blocks = grown.reshape(grown.shape[0] // factor, factor, grown.shape[1] // factor, factor, 3)
    return blocks.mean(axis=(1, 3))


@pytest.mark.parametrize("factor", [2, 3])
def test_context_view_adds_the_image_shrunk_around_the_same_centre(factor):
    # Odd sizes, so the image is mirrored up to a multiple of the factor before it is shrunk.
    image = np.random.default_rng(1).integers(0, 256, (301, 257, 3)).astype(np.uint8)
    mask = np.zeros((301, 257), np.int32)
    mask[140:150, 120:131] = 1       # inside, centre (145, 125)
    mask[2:8, 250:256] = 2           # at the corner: its wider view is mirrored
    spec = CropSpec(32, mask_channel=True, context_view=factor)
    assert spec.channels == 7 and spec.window == 32 * factor
    crops, geometry = spec.cut(image, mask)
    assert crops.shape == (2, 32, 32, 7)
    plain, _ = cut_crops(image, mask, 32, mask_channel=True)
    np.testing.assert_array_equal(crops[..., :3], plain[..., :3])    # the crop's own colours, unchanged
    np.testing.assert_array_equal(crops[..., 6], plain[..., 3])      # the mask, last
    shrunk = _shrunk_by_block_means(image, factor)
    for row, (y0, x0, y1, x1) in enumerate(geometry.bboxes.tolist()):
        top, left = (y0 + y1) // 2 // factor - 16, (x0 + x1) // 2 // factor - 16
        rows = reflect_101(top + np.arange(32), shrunk.shape[0])
        cols = reflect_101(left + np.arange(32), shrunk.shape[1])
        expected = shrunk[rows[:, None], cols[None, :]]
        np.testing.assert_allclose(crops[row, :, :, 3:6].astype(float), expected, atol=1.0)
    # The wider view is the tissue around the nucleus: the nucleus (1) is at its centre, 1/factor as wide.
    assert not np.array_equal(crops[0, :, :, 3:6], crops[0, :, :, :3])


def test_context_view_of_a_nucleus_wider_than_its_window_shows_the_whole_nucleus():
    image = np.full((400, 400, 3), 200, np.uint8)
    mask = np.zeros((400, 400), np.int32)
    mask[100:260, 120:230] = 1       # 160 px tall: wider than the 2 x 48 = 96 px of the wider view
    image[mask == 1] = 40
    crops, _ = CropSpec(48, context_view=2).cut(image, mask)
    assert crops.shape == (1, 48, 48, 6)
    # Its window is as wide as it (80 shrunk pixels), resized to 48: dark over 110 / 160 of the width.
    dark = crops[0, :, :, 3] < 120
    assert dark[24].mean() == pytest.approx(110 / 160, abs=0.05) and dark[:, 24].all()


def test_augment_jitters_both_views_of_a_crop_alike_and_never_the_mask():
    image, mask = two_touching_nuclei()
    crops, _ = cut_crops(image, mask, mask_channel=True)
    # A wider view equal to the crop's own: whatever the jitter, both must come out equal.
    twin = torch.from_numpy(np.concatenate([crops[..., :3], crops[..., :3], crops[..., 3:]], axis=3))
    out = augment(twin, torch.Generator().manual_seed(5), jitter=0.3, stain=0.1)
    assert out.shape == (2, 7, 64, 64)
    torch.testing.assert_close(out[:, 3:6], out[:, :3])
    assert set(torch.unique(out[:, 6]).tolist()) == {-1.0, 1.0}
    # The crop's own view is jittered as it is without a wider view: the same draws, the same pixels.
    single = augment(torch.from_numpy(crops), torch.Generator().manual_seed(5), jitter=0.3, stain=0.1)
    torch.testing.assert_close(out[:, :3], single[:, :3])
    torch.testing.assert_close(out[:, 6], single[:, 3])
    assert not any(torch.allclose(out[:, :3], to_input(dihedral(twin[..., :3], code))[:, :3]) for code in range(8))


def test_view_dropout_blanks_the_wider_view_of_some_crops_and_changes_nothing_else():
    generator = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (64, 16, 16, 7), generator=generator, dtype=torch.uint8)
    plain = augment(crops, torch.Generator().manual_seed(5), jitter=0.2, stain=0.1)
    dropped = augment(crops, torch.Generator().manual_seed(5), jitter=0.2, stain=0.1, view_dropout=0.5)
    blank = (dropped[:, 3:6] == 0).flatten(1).all(dim=1)
    assert 16 <= int(blank.sum()) <= 48                  # about half of 64
    torch.testing.assert_close(dropped[~blank], plain[~blank])
    # The crop's own view and the mask are never touched: the draw comes after every other one.
    torch.testing.assert_close(dropped[:, :3], plain[:, :3])
    torch.testing.assert_close(dropped[:, 6], plain[:, 6])
    # Without a wider view there is nothing to blank, and no draw either.
    torch.testing.assert_close(augment(crops[..., :3], torch.Generator().manual_seed(5), view_dropout=0.5),
                               augment(crops[..., :3], torch.Generator().manual_seed(5)))
    assert TrainConfig.from_dict({"augment": {"context_view_dropout": 0.5}}).context_view_dropout == 0.5
    with pytest.raises(ConfigError, match="augment.context_view_dropout"):
        TrainConfig.from_dict({"augment": {"context_view_dropout": 1.0}})


def test_view_dropout_trains_the_backbone_in_stages_1_and_3_but_not_stage_2s_inputs(tmp_path, monkeypatch):
    import mlcore.stages

    seen = []

    def recording(*args, **kwargs):
        seen.append((inspect.stack()[1].function, args[5] if len(args) > 5 else kwargs.get("view_dropout", 0.0)))
        return augment(*args, **kwargs)

    monkeypatch.setattr(mlcore.stages, "augment", recording)
    table, _ = two_set_table(images_per_set=1, crop_size=CropSpec(32, context_view=2))
    config = TrainConfig(backbone_kwargs={"width": 4}, batch_size=16, samples_per_epoch=None, crop_size=32,
                         crop_context_view=2, epochs={"sparse": 1, "correlation": 1, "completion": 1},
                         correlation_views=1)
    assert config.context_view_dropout == 0.5            # the default, with a context view
    train_all(table, config=config)
    assert {value for caller, value in seen if caller == "training_images"} == {0.5}
    assert {value for caller, value in seen if caller != "training_images"} == {0.0}
    assert {caller for caller, _ in seen} == {"training_images", "frozen_logits"}


def test_context_view_is_configured_checked_described_and_carried_by_checkpoints(tmp_path):
    config = TrainConfig.from_dict({"crop": {"size": 32, "context_view": 2}})
    spec = config.crop_spec
    assert spec == CropSpec(32, context_view=2) and spec.channels == 6
    assert spec.describe()["context_view"] == 2 and "context_view" not in CropSpec(32).describe()
    for bad in (1, 5, 2.0, True):
        with pytest.raises(ConfigError, match="crop.context_view"):
            TrainConfig.from_dict({"crop": {"context_view": bad}})
    with pytest.raises(ValueError, match="context_view"):
        CropSpec(32, context_view=7)
    label_sets = [LabelSet("A", ("a0", "a1"))]
    model = CrossTrainedModel(label_sets, "small", {"width": 4}, spec)
    path = save_checkpoint(tmp_path / "view.pt", model, "sparse", 0, True, config)
    loaded = load_checkpoint(path)
    assert loaded.model.crop_spec == spec and loaded.config.crop_context_view == 2
    image, mask = two_touching_nuclei()
    crops, _ = loaded.model.crop_spec.cut(image, mask)
    assert predict(loaded.model, crops)["A"].probs.shape == (2, 2)
