"""Inference on one image + instance mask: crops cut in one vectorised pass, one batched forward,
and the outputs the CLI writes (per label set class arrays and overlays, one JSON per image)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import orjson
import torch

from mlcore.crops import CropSpec
from mlcore.geometry import InstanceGeometry
from mlcore.model import CrossTrainedModel
from mlcore.predict import LabelSetPrediction, predict
from mlcore.readers._common import load_npy, read_label_image, read_rgb
from mlcore.stain import StainEstimate, estimate_stain, tissue_mask
from mlcore.types import DataError, file_part


@dataclass
class ImageInference:
    geometry: InstanceGeometry                     # ids, boxes, centroids (rows = predictions' rows)
    predictions: dict[str, LabelSetPrediction]
    tta: bool = False                              # classified with test-time augmentation (8 views per crop)


def infer_image(model: CrossTrainedModel, image: np.ndarray, instance_map: np.ndarray, batch_size: int = 512,
                device: str | torch.device | None = None, tta: bool = False,
                should_stop: Callable[[], bool] | None = None) -> ImageInference:
    """Classify every instance of ``instance_map`` in every label set of the model (``tta``: the mean
    over the 8 symmetries of each crop; ``should_stop()``, asked before every batch, raises
    :class:`mlcore.types.Cancelled` when it returns True)."""
    crops, geometry = model.crop_spec.cut(image, instance_map)
    return ImageInference(geometry, predict(model, crops, batch_size, device, tta, should_stop), tta)


@dataclass
class TileInference:
    """One image of :func:`infer_tiles`: its pixels, instance map and predictions, or the ``error`` that made it
    unreadable (then ``image``, ``instance_map`` and ``result`` are None). :func:`infer_and_write` fills in
    ``outputs``, the files it wrote for the image."""

    image_path: Path
    mask_path: Path
    image: np.ndarray | None
    instance_map: np.ndarray | None
    result: ImageInference | None
    error: DataError | None = None
    outputs: list[Path] = field(default_factory=list)


def infer_tiles(model: CrossTrainedModel, pairs, *, batch_size: int = 512, device: str | torch.device | None = None,
                tta: bool = False, read_ahead: bool = True):
    """Classify many (image path, mask path) pairs, yielding one :class:`TileInference` each, in order.

    With ``read_ahead`` the next image is read, and its crops cut, in a second thread while this one runs the
    forward of the current one: the forward waits on nothing but the first image. An unreadable image or
    mask is yielded with its ``error`` and does not stop the others.
    """

    def prepare(pair):
        image_path, mask_path = pair
        try:
            image = read_rgb(image_path)
            instance_map = read_mask(mask_path, image.shape[:2])
        except DataError as exc:
            return None, None, None, exc
        return image, instance_map, model.crop_spec.cut(image, instance_map), None

    pairs = [(Path(image), Path(mask)) for image, mask in pairs]
    prepared = (_prepared_one_ahead(pairs, prepare) if read_ahead
                else ((pair, *prepare(pair)) for pair in pairs))
    for (image_path, mask_path), image, instance_map, cut, error in prepared:
        if error is not None:
            yield TileInference(image_path, mask_path, None, None, None, error)
            continue
        crops, geometry = cut
        result = ImageInference(geometry, predict(model, crops, batch_size, device, tta), tta)
        yield TileInference(image_path, mask_path, image, instance_map, result)


def infer_and_write(model: CrossTrainedModel, pairs, out_dir: str | Path, *, stems: list[str] | None = None,
                    names: list[str] | None = None, overlays: bool | list[str] = True, overlay_compression: int = 0,
                    batch_size: int = 512, device: str | torch.device | None = None, tta: bool = False,
                    read_ahead: bool = True, write_behind: bool = True):
    """:func:`infer_tiles`, with each image's outputs written by :func:`write_outputs` into ``out_dir`` (named
    after ``stems``, default the images' stems), yielding each :class:`TileInference` in order once its
    ``outputs`` are on disk; unreadable images are yielded with their ``error`` and nothing written.

    With ``write_behind`` one image's outputs are written in a second thread while the next is classified
    (``benchmarks/infer_speed.py --tiles``: 3-10% more tiles a second on a 2-core AMD EPYC, no gain on a 2-core
    Intel Xeon, where the forward pass keeps both cores busy): an image is yielded after
    the next one's forward. Only one image's outputs are in memory waiting at a time; a write's error is
    raised here, at that image.
    """
    pairs = [(Path(image), Path(mask)) for image, mask in pairs]
    stems = [image.stem for image, _ in pairs] if stems is None else list(stems)
    if len(stems) != len(pairs):
        raise ValueError(f"{len(stems)} stems for {len(pairs)} images")

    def write(tile: TileInference, stem: str) -> list[Path]:
        return write_outputs(out_dir, stem, tile.image, tile.instance_map, tile.result, model, names,
                             image_path=str(tile.image_path), overlays=overlays,
                             overlay_compression=overlay_compression)

    tiles = infer_tiles(model, pairs, batch_size=batch_size, device=device, tta=tta, read_ahead=read_ahead)
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None  # (tile, its write in the writer thread)
        for tile, stem in zip(tiles, stems):
            finished = None
            if pending is not None:  # the next image is classified: the writer should be done with this one
                finished, writing = pending
                finished.outputs = writing.result()
                pending = None
            if tile.error is None:
                if write_behind:
                    pending = (tile, writer.submit(write, tile, stem))
                else:
                    tile.outputs = write(tile, stem)
            if finished is not None:
                yield finished
            if pending is None:  # written in turn, or unreadable
                yield tile
        if pending is not None:
            tile, writing = pending
            tile.outputs = writing.result()
            yield tile


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """An instance map from ``.npy`` (H x W integers) or a label image (PNG/TIFF: 8/16-bit grey
    values are ids; an RGB label image gets one id per distinct colour, black = background)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mask file not found")
    mask = load_npy(path, mask=True) if path.suffix.lower() == ".npy" else read_label_image(path)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise DataError(path, f"instance map must be 2-D, got shape {mask.shape}")
    if mask.dtype.kind not in "iu":
        if mask.dtype.kind == "f" and np.all(np.mod(mask, 1) == 0):
            mask = mask.astype(np.int64)
        else:
            raise DataError(path, f"instance map must hold integer ids, got {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise DataError(path, "instance map has negative ids")
    if mask.size and int(mask.max()) > mask.size:
        # Crops and outlines are sized by the largest id; the outputs name the mask's own ids, so they
        # cannot be renumbered here as an import does.
        raise DataError(path, f"instance id {int(mask.max())} is larger than the mask's pixel count ({mask.size}); "
                              "number the instances 1..N")
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {shape[1]}x{shape[0]}")
    return mask.astype(np.int32, copy=False)


def _rounded(values: np.ndarray, decimals: int) -> list:
    # float64 first: a rounded float32 prints as 0.149399995803833 instead of 0.1494.
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def inference_json(result: ImageInference, model: CrossTrainedModel, names: list[str], image_path: str = "",
                   decimals: int = 3) -> dict:
    """Per instance: id, centroid (x, y), bbox, and per label set the class, both branches'
    probabilities (the final probabilities are their mean) and the branches' disagreement (the
    other uncertainty scores follow from the probabilities; ``predict`` returns them all)."""
    geometry = result.geometry
    label_sets = {s.name: s for s in model.label_sets}
    file_parts = label_set_file_parts(model)
    columns = []  # per label set: (name, class names per row, indices, base, mlp, disagreement)
    for name in names:
        prediction = result.predictions[name]
        classes = label_sets[name].classes
        indices = prediction.labels.tolist()
        mlp = _rounded(prediction.mlp_probs, decimals) if prediction.mlp_probs is not None else [None] * len(indices)
        columns.append((name, [classes[i] for i in indices], indices, _rounded(prediction.base_probs, decimals), mlp,
                        _rounded(prediction.uncertainty["disagreement"], decimals)))
    centroids = np.round(geometry.centroids, 2).tolist()
    boxes = geometry.bboxes[:, [1, 0, 3, 2]].tolist()  # x0, y0, x1, y1
    instances = [
        {"id": instance_id, "centroid": centroids[row], "bbox": boxes[row],
         "labels": {name: {"class": class_names[row], "index": indices[row], "base_probs": base[row],
                           "mlp_probs": mlp[row], "disagreement": disagreement[row]}
                    for name, class_names, indices, base, mlp, disagreement in columns}}
        for row, instance_id in enumerate(geometry.ids.tolist())]
    return {
        "image": image_path,
        "label_sets": [{"name": n, "classes": list(label_sets[n].classes), "file_part": file_parts[n],
                        "colors": [list(c) for c in label_sets[n].colors]} for n in names],
        "final_rule": "argmax of the mean of base and correlation (MLP) probabilities",
        "test_time_augmentation": result.tta,
        "disagreement": "Jensen-Shannon divergence between base and MLP probabilities, in bits",
        "uses_correlation": bool(model.use_correlation) and model.has_correlation_heads,
        "instances": instances,
    }


def label_set_file_parts(model: CrossTrainedModel) -> dict[str, str]:
    """The part of the output file names that stands for each label set: its name where that is plain,
    else ``set<k>`` (k = its position in the model, from 1); positions for all if that would repeat one."""
    names = [s.name for s in model.label_sets]
    parts = {name: file_part(name, f"set{k}") for k, name in enumerate(names, start=1)}
    if len(set(parts.values())) < len(parts):
        parts = {name: f"set{k}" for k, name in enumerate(names, start=1)}
    return parts


def write_outputs(out_dir: str | Path, stem: str, image: np.ndarray, instance_map: np.ndarray,
                  result: ImageInference, model: CrossTrainedModel, names: list[str] | None = None,
                  image_path: str = "", overlays: bool | list[str] = True, overlay_compression: int = 0) -> list[Path]:
    """``<stem>_<set>.npy`` (N x 2: id, class), ``<stem>_<set>_overlay.png`` and ``<stem>.json``.

    ``overlays``: True draws a preview for every label set written, False for none, a list for the label sets
    it names (each one of ``names``).

    ``<set>`` is the label set's name, or ``set<k>`` where the name is not a plain file name (see
    :func:`label_set_file_parts`; the JSON gives each set's ``file_part``); a stem that is not plain is
    ``image``.

    Overlays are previews, and a full-resolution PNG is the one cost here that can exceed the
    classification itself: zlib level 1 takes 30-50 ms per 1000 x 1000 tile on one core, storing
    (level 0) 2-3 ms for twice the file size, plus writing its 3.4 MB. Level 0 is the default; pass
    1-9 for smaller files.
    """
    from mlcore.overlay import InstanceOutlines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_sets = {s.name: s for s in model.label_sets}
    names = list(names) if names else list(label_sets)
    for name in names:
        if name not in label_sets:
            raise ValueError(f"unknown label set {name!r} (the model has: {', '.join(label_sets)})")
    drawn = names if overlays is True else list(overlays or [])
    for name in drawn:
        if name not in names:
            raise ValueError(f"an overlay of label set {name!r}, which is not written (written: {', '.join(names)})")
    written = []
    ids = result.geometry.ids
    stem = file_part(stem, "image")
    parts = label_set_file_parts(model)

    for name in names:
        labels = result.predictions[name].labels
        path = out_dir / f"{stem}_{parts[name]}.npy"
        np.save(path, np.stack([ids, labels], axis=1).astype(np.int64))
        written.append(path)
    path = out_dir / f"{stem}.json"
    # orjson: the stdlib encoder spends ~40 ms on the ~40,000 floats of a 1,000-nucleus tile.
    path.write_bytes(orjson.dumps(inference_json(result, model, names, image_path)))
    written.append(path)
    if not drawn:
        return written
    # At level 0 (stored) no filter makes the file smaller, so none is spent; when compressing, the "up"
    # filter gives the smallest files at level 1 for the same time.
    png_filter = cv2.IMWRITE_PNG_FILTER_UP if overlay_compression else cv2.IMWRITE_PNG_FILTER_NONE
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(overlay_compression), cv2.IMWRITE_PNG_FILTER, png_filter]
    # The outline pixels are the same for every label set: found once, then recoloured per set in one buffer.
    pictures = InstanceOutlines(instance_map).draw_each(
        image, [(ids, result.predictions[name].labels, label_sets[name]) for name in drawn], bgr=True)
    # One after the other: writing a 3.4 MB PNG is mostly the kernel copying it into fresh pages, and
    # two threads were slower than one (46 against 37 ms for four 1000 x 1000 overlays on 2 cores).
    for name, picture in zip(drawn, pictures):
        path = out_dir / f"{stem}_{parts[name]}_overlay.png"
        encoded, png = cv2.imencode(".png", picture, params)
        if not encoded:
            raise OSError(f"{path}: could not encode the overlay")
        path.write_bytes(png)  # the encoder's buffer as it is, in one call (imwrite writes small pieces)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------- whole slides

SLIDE_REGION_SIZE = 1024  # model pixels: the side of one slide region read per batch (plus the crops' margin)


@dataclass
class SlideBatchInference:
    """Predictions for one batch of a slide's nuclei: rows of ``predictions`` follow ``nuclei``;
    ``indices`` are the nuclei's positions in the stream given to :func:`infer_slide`, and ``region`` the
    level-0 box (x, y, width, height) read for them."""

    indices: np.ndarray
    nuclei: list
    predictions: dict[str, LabelSetPrediction]
    region: tuple[int, int, int, int]


def _spatial_groups(entries: list, cell: float, batch_size: int) -> list[list]:
    """(index, nucleus) pairs grouped by the grid cell of their bbox centre, cells in row-major order, each
    group split to at most ``batch_size``: one slide region per group."""
    def key(entry):
        x0, y0, x1, y1 = entry[1].bbox
        return int((y0 + y1) / 2 // cell), int((x0 + x1) / 2 // cell), x0
    entries = sorted(entries, key=key)
    groups, current, current_cell = [], [], None
    for entry in entries:
        cell_key = key(entry)[:2]
        if current and (cell_key != current_cell or len(current) >= batch_size):
            groups.append(current)
            current = []
        current.append(entry)
        current_cell = cell_key
    if current:
        groups.append(current)
    return groups


def slide_stain_estimate(slide, scale: float, regions: int = 16, size: int = 512) -> StainEstimate | None:
    """One stain estimate for a whole slide (mlcore.stain: a slide is one source): ``regions`` windows of
    ``size`` model pixels, read at the model's scale (``scale`` slide pixels per model pixel) where the
    slide's thumbnail shows tissue, spread evenly over it in reading order."""
    thumbnail = slide.thumbnail(256)
    ys, xs = np.nonzero(tissue_mask(thumbnail))
    if len(ys) == 0:
        return None
    info = slide.info
    fx, fy = info.width / thumbnail.shape[1], info.height / thumbnail.shape[0]
    side = size * scale
    width, height = max(1, int(min(side, info.width))), max(1, int(min(side, info.height)))

    def windows():
        for index in np.unique(np.linspace(0, len(ys) - 1, regions).astype(np.int64)):
            x0 = int(np.clip((xs[index] + 0.5) * fx - side / 2, 0, info.width - width))
            y0 = int(np.clip((ys[index] + 0.5) * fy - side / 2, 0, info.height - height))
            yield slide.read_scaled(x0, y0, width, height, scale)

    return estimate_stain(windows())


def _slide_batch_inputs(spec: CropSpec, slide, group: list, scale: float, stain: StainEstimate | None = None
                        ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The crops of one group of nuclei: the slide region that holds all their windows, read at the model's
    scale (``scale`` slide pixels per model pixel), their outlines rasterised into an instance map, and
    ``spec.cut`` (a model's crop_spec) with their stored boxes (``stain``: the slide's estimate, for a model
    that normalises stains). At the slide's edges the cutter mirrors the region, as :func:`infer_image`
    mirrors a tile's edges."""
    boxes = np.array([nucleus.bbox for _, nucleus in group], np.float64)  # x0, y0, x1, y1 at level 0
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / scale
    half = np.maximum(extent, spec.window) * scale / 2 + 2 * scale + 1  # level-0 pixels, one spare model pixel
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    info = slide.info
    # A model with a wider view shrinks the region by its factor: start the region on a multiple of it, as a
    # tile starts at 0, so that a slide at the model's scale is shrunk on the same grid as its tiles are.
    step = max(1, int(round((spec.context_view or 1) * scale)))
    x0 = max(0, int(np.floor((centre_x - half).min())) // step * step)
    y0 = max(0, int(np.floor((centre_y - half).min())) // step * step)
    x1 = min(info.width, int(np.ceil((centre_x + half).max())))
    y1 = min(info.height, int(np.ceil((centre_y + half).max())))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    image = slide.read_scaled(x0, y0, x1 - x0, y1 - y0, scale)
    height, width = image.shape[:2]
    # Level-0 coordinates -> region pixels at the model's scale (pixel centres map to pixel centres).
    to_model = np.array([x0, y0], np.float64)
    labels = np.zeros((height, width), np.int32)
    bboxes = np.empty((len(group), 4), np.int64)
    shift = 4
    for row, (_, nucleus) in enumerate(group):
        outline = (np.asarray(nucleus.outline, np.float64).reshape(-1, 2) - to_model + 0.5) / scale - 0.5
        cv2.fillPoly(labels, [np.round(outline * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)], row + 1,
                     lineType=cv2.LINE_8, shift=shift)
        bx0, by0, bx1, by1 = nucleus.bbox
        bboxes[row] = (np.floor((by0 - y0) / scale), np.floor((bx0 - x0) / scale),
                       np.ceil((by1 - y0) / scale), np.ceil((bx1 - x0) / scale))
    bboxes[:, 0::2] = bboxes[:, 0::2].clip(0, height)
    bboxes[:, 1::2] = bboxes[:, 1::2].clip(0, width)
    bboxes[:, 2] = np.maximum(bboxes[:, 2], bboxes[:, 0] + 1)
    bboxes[:, 3] = np.maximum(bboxes[:, 3], bboxes[:, 1] + 1)
    centroids = np.array([nucleus.centroid for _, nucleus in group], np.float64)
    geometry = InstanceGeometry(ids=np.arange(1, len(group) + 1, dtype=np.int64), bboxes=bboxes,
                                centroids=(centroids - to_model) / scale,
                                areas=np.array([nucleus.area for _, nucleus in group], np.int64))
    crops, _ = spec.cut(image, labels, geometry, stain=stain)
    return crops, (x0, y0, x1 - x0, y1 - y0)


def infer_slide(model: CrossTrainedModel, slide, nuclei, *, batch_size: int = 512,
                device: str | torch.device | None = None, tta: bool = False, progress=None,
                chunk_size: int | None = None, region_size: int = SLIDE_REGION_SIZE, read_ahead: bool = False):
    """Classify a slide's nuclei, streamed: yields one :class:`SlideBatchInference` per batch.

    ``slide`` is an open :class:`mlcore.slides.Slide`; ``nuclei`` an iterable of
    :class:`mlcore.slide_nuclei.SlideNucleus` (a generator over a GeoJSON or the database), read
    ``chunk_size`` at a time (default 8 batches). A chunk is grouped by cells of ``region_size`` model
    pixels; each group (at most ``batch_size`` nuclei) gets one region read from the slide at the model's
    scale (``scale_to_model(slide MPP, model.mpp)``: a 20x slide is upsampled for a 40x model), its nuclei's
    outlines rasterised and crops cut by ``model.crop_spec`` around their stored boxes. The forward runs on
    full batches of ``batch_size`` crops, across groups. Memory holds a chunk of nuclei, a batch of crops
    and two regions, whatever the slide's size; a stream in spatial order (as the database's region index
    gives, or a QuPath export) makes full regions. One :class:`SlideBatchInference` per group.

    Reading and cutting the next region overlap the forward of the current one, in a second thread. With
    ``read_ahead`` that thread also consumes ``nuclei`` (parsing a GeoJSON overlaps the forward too); leave
    it off for an iterable that must stay in the caller's thread, such as a Django queryset (database
    connections are per thread).

    ``progress(dict(nuclei=done, batches=k, region=(x, y, w, h)))`` is called after each batch.
    """
    from itertools import islice

    from mlcore.slides import scale_to_model

    model = getattr(model, "module", model)
    scale = scale_to_model(slide.info.mpp, getattr(model, "mpp", None))
    chunk_size = chunk_size or batch_size * 8
    cell = region_size * scale
    stain = slide_stain_estimate(slide, scale) if model.crop_spec.stain_normalisation != "none" else None
    stream = enumerate(nuclei)

    def groups():
        while True:
            chunk = list(islice(stream, chunk_size))
            if not chunk:
                return
            yield from _spatial_groups(chunk, cell, batch_size)

    done = batches = 0
    def prepare(group):
        return _slide_batch_inputs(model.crop_spec, slide, group, scale, stain)

    if read_ahead:
        prepared = _in_a_thread(((group, *prepare(group)) for group in groups()), depth=2)
    else:
        prepared = _prepared_one_ahead(groups(), prepare)
    for group, region, predictions in _forward_in_fixed_batches(model, prepared, batch_size, device, tta):
        done += len(group)
        batches += 1
        if progress:
            progress({"nuclei": done, "batches": batches, "region": region})
        yield SlideBatchInference(indices=np.array([index for index, _ in group], np.int64),
                                  nuclei=[nucleus for _, nucleus in group], predictions=predictions, region=region)


def slide_crops_cache_prefix(cache_key: str) -> str:
    """The start of the names of a slide's entries in the crop cache (:func:`slide_crops`): ``crops-*`` as the
    tiles' entries, so that the orphan sweep removes a killed writer's ``.crops-*`` partial file, and a hash of
    the slide's key, so that it can remove the entries of slides that are gone."""
    import hashlib

    return f"crops-slide-{hashlib.sha256(cache_key.encode()).hexdigest()[:16]}-"


def slide_crops(spec: CropSpec, slide, nuclei: list, *, model_mpp: float | None = None, batch_size: int = 512,
                region_size: int = SLIDE_REGION_SIZE, cache_dir: str | Path | None = None, cache_key: str = "",
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The crops of ``nuclei`` (:class:`mlcore.slide_nuclei.SlideNucleus`, in their order) cut from ``slide`` as
    :func:`infer_slide` cuts them for a model of ``spec`` and ``model_mpp``: the same regions at the model's
    scale, the same mirrored edges and the slide's own stain estimate. So that a model trains on a slide's
    nuclei as it will see them when it classifies the slide.

    With ``cache_dir`` and ``cache_key`` (the slide's identity: its checksum, and whatever else tells apart
    the users of the slide that take their own nuclei of it, such as the web app's image row) the crops are
    kept there, keyed by the key, ``spec``, the scale and the nuclei's outlines and boxes: a retraining of the
    same nuclei reads no region again. One entry per key: the nuclei a training takes change with every
    review, and a slide's entry can be a gigabyte, so a new one replaces the key's older ones. ``progress(done, total)``
    after each region; ``should_stop()`` is asked as often and ends the cutting with
    :class:`mlcore.types.Cancelled`."""
    import hashlib
    import os

    from mlcore.crops import CROP_ALGORITHM_VERSION
    from mlcore.slides import DEFAULT_MODEL_MPP, scale_to_model
    from mlcore.types import Cancelled

    scale = scale_to_model(slide.info.mpp, model_mpp or DEFAULT_MODEL_MPP)
    cached = None
    if cache_dir is not None and cache_key:
        digest = hashlib.sha256(f"slide crops v{CROP_ALGORITHM_VERSION} {scale!r} "
                                f"{sorted(spec.describe().items())} {region_size} {batch_size}".encode())
        for nucleus in nuclei:
            digest.update(np.asarray(nucleus.bbox, np.int64).tobytes())
            digest.update(np.ascontiguousarray(nucleus.outline, np.int32).tobytes())
        slide_prefix = slide_crops_cache_prefix(cache_key)
        cached = Path(cache_dir) / f"{slide_prefix}{digest.hexdigest()[:32]}.npy"
        if cached.is_file():
            crops = np.load(cached)
            if crops.shape == (len(nuclei), spec.size, spec.size, spec.channels):
                if progress:
                    progress(len(nuclei), len(nuclei))
                return crops
    crops = np.zeros((len(nuclei), spec.size, spec.size, spec.channels), np.uint8)
    stain = slide_stain_estimate(slide, scale) if spec.stain_normalisation != "none" else None
    done = 0
    for group in _spatial_groups(list(enumerate(nuclei)), region_size * scale, batch_size):
        if should_stop and should_stop():
            raise Cancelled()
        crops[[index for index, _ in group]] = _slide_batch_inputs(spec, slide, group, scale, stain)[0]
        done += len(group)
        if progress:
            progress(done, len(nuclei))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.stem}.{os.getpid()}.npy")  # renamed whole: no reader sees half a file
        np.save(partial, crops)
        os.replace(partial, cached)
        for older in cached.parent.glob(f"{slide_prefix}*.npy"):
            if older != cached:
                older.unlink(missing_ok=True)
    return crops


def _prepared_one_ahead(groups, prepare):
    """(group, *prepare(group)) for each group, the next one prepared in a second thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for group in groups:
            future = pool.submit(prepare, group)
            if pending is not None:
                yield (pending[0], *pending[1].result())
            pending = (group, future)
        if pending is not None:
            yield (pending[0], *pending[1].result())


def _forward_in_fixed_batches(model: CrossTrainedModel, prepared, batch_size: int, device, tta: bool):
    """(group, region, predictions) per prepared group, the forward run on exactly ``batch_size`` crops at a
    time across groups (the last batch of the stream aside). Regions hold any number of nuclei, and every
    new batch size costs PyTorch's CPU backend new kernels and buffers that it keeps: a thousand batch
    sizes grew the process by a gigabyte. Full batches are faster too."""
    from collections import deque

    from mlcore.predict import forward_logits, predictions_from_logits

    waiting: deque = deque()  # [group, region, crops, logits parts, heads parts, crops forwarded]
    queued = 0

    def forward(count: int):
        nonlocal queued
        pieces, takers = [], []
        need = count
        for entry in waiting:
            left = len(entry[2]) - entry[5]
            if left <= 0:
                continue
            take = min(left, need)
            pieces.append(entry[2][entry[5]:entry[5] + take])
            takers.append((entry, take))
            need -= take
            if need == 0:
                break
        logits, heads = forward_logits(model, np.concatenate(pieces) if len(pieces) > 1 else pieces[0],
                                       batch_size, device, tta)
        start = 0
        for entry, take in takers:
            entry[3].append(logits[start:start + take])
            entry[4].append([h[start:start + take] for h in heads])
            entry[5] += take
            start += take
        queued -= count

    def finished():
        while waiting and waiting[0][5] == len(waiting[0][2]):
            group, region, _, logit_parts, head_parts, _ = waiting.popleft()
            logits = torch.cat(logit_parts) if logit_parts else torch.zeros((0, model.num_outputs))
            heads = [torch.cat([part[d] for part in head_parts]) for d in range(len(head_parts[0]))] \
                if head_parts and head_parts[0] else []
            yield group, region, predictions_from_logits(model, logits, heads)

    for group, crops, region in prepared:
        waiting.append([group, region, crops, [], [], 0])
        queued += len(crops)
        while queued >= batch_size:
            forward(batch_size)
            yield from finished()
    if queued:
        forward(queued)
    yield from finished()


def _in_a_thread(iterator, depth: int):
    """The items of ``iterator``, produced in a second thread at most ``depth`` ahead; its exceptions are
    raised here, and closing this generator stops the thread."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((end, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            items.put((end, exc))

    thread = threading.Thread(target=produce, name="infer-slide-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.05)
