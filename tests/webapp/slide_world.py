"""A small whole-slide image with its nuclei and labels, for the slide viewer's API and browser tests.

Synthetic H&E tiles (mlcore.synthetic) are stitched into one image, written as a pyramidal tiled TIFF
(mlcore.slides.write_pyramidal_tiff, 0.25 um/px) under MEDIA_ROOT, and registered as a slide Image of a
``slide`` dataset; the nuclei (outline, box, centroid from the stitched instance map, as an import stores
them) get ground truth in the dataset's label set, and some a review in a second label set.

The pixels and the files of a slide are made once per size in a test process (stitching and writing the TIFF
took 0.4 s of the 0.5 s a world took) and copied into each test's MEDIA_ROOT; the rows are the test's own.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from django.conf import settings

from mlcore.slides import write_pyramidal_tiff
from mlcore.synthetic import generate_tile
from mlcore.writers import geometry_and_outlines
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus
from webapp.projects.operations import do_create_project

ALPHA_CLASSES = [("tumour", "#e6194b"), ("lymphocyte", "#3cb44b"), ("stroma", "#4363d8")]
BETA_CLASSES = [("neoplastic", "#f58231"), ("inflammatory", "#911eb4")]


@dataclass
class SlideWorld:
    project: object
    dataset: Dataset
    image: Image
    alpha: LabelSet
    beta: LabelSet
    path: Path                    # the slide file
    pixels: np.ndarray            # level 0, RGB
    truth: dict = field(default_factory=dict)   # nucleus id -> alpha class index (ground truth)
    beta_reviews: dict = field(default_factory=dict)  # nucleus id -> beta class index (reviews)


def _label_set(project, name: str, classes) -> LabelSet:
    label_set = LabelSet.objects.create(project=project, name=name)
    LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=n, color=c)
                                    for i, (n, c) in enumerate(classes)])
    return label_set


def stitched_tissue(tiles_x: int, tiles_y: int, seed: int = 3, tile: int = 256, nuclei: int = 40):
    """RGB image, instance map (ids 1..N over the whole image) and {id: class} from synthetic tiles."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((tiles_y * tile, tiles_x * tile, 3), np.uint8)
    instances = np.zeros(rgb.shape[:2], np.int32)
    classes, offset = {}, 0
    for ty in range(tiles_y):
        for tx in range(tiles_x):
            image, instance_map, tile_classes = generate_tile(rng, (tile, tile), nuclei, len(ALPHA_CLASSES))
            window = (slice(ty * tile, (ty + 1) * tile), slice(tx * tile, (tx + 1) * tile))
            rgb[window] = image
            instances[window] = np.where(instance_map > 0, instance_map + offset, 0)
            classes.update({i + offset: c for i, c in tile_classes.items()})
            offset += int(instance_map.max(initial=0))
    return rgb, instances, classes


@dataclass(frozen=True)
class SlideFiles:
    folder: Path                  # slide-1.tif, preview.png, thumbnail.png
    pixels: np.ndarray            # level 0, RGB, read-only: every world of this size shares it
    classes: dict                 # instance id -> alpha class index
    geometry: list
    outlines: list


_store = tempfile.TemporaryDirectory(prefix="slide-worlds-")  # removed when the process ends


@functools.cache
def slide_files(tiles_x: int, tiles_y: int) -> SlideFiles:
    """The stitched tissue of ``tiles_x`` x ``tiles_y`` tiles, its files and its nuclei, made on the first call."""
    rgb, instances, classes = stitched_tissue(tiles_x, tiles_y)
    rgb.flags.writeable = False
    folder = Path(_store.name) / f"{tiles_x}x{tiles_y}"
    folder.mkdir()
    write_pyramidal_tiff(folder / "slide-1.tif", rgb, mpp=0.25, tile=256)
    preview = cv2.resize(rgb, (rgb.shape[1] // 4, rgb.shape[0] // 4), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "preview.png"), preview[..., ::-1])
    cv2.imwrite(str(folder / "thumbnail.png"), cv2.resize(preview, (192, 144))[..., ::-1])
    geometry, outlines = geometry_and_outlines(instances)
    return SlideFiles(folder, rgb, classes, geometry, outlines)


def build_slide_world(owner, name: str = "Slide project", tiles_x: int = 4, tiles_y: int = 3,
                      project=None, label_sets: tuple[LabelSet, LabelSet] | None = None) -> SlideWorld:
    """A new project (or ``project``, with two of its ``label_sets`` of at least 3 and 2 classes) with a slide
    of ``tiles_x`` x ``tiles_y`` synthetic 256-pixel tiles."""
    project = project or do_create_project(name, actor=owner, description="a whole-slide image")
    if label_sets:
        alpha, beta = label_sets
    else:
        alpha = _label_set(project, "alpha-types", ALPHA_CLASSES)
        beta = _label_set(project, "beta-types", BETA_CLASSES)
    made = slide_files(tiles_x, tiles_y)
    rgb, classes = made.pixels, made.classes
    media = Path(settings.MEDIA_ROOT)
    folder = media / "slides" / f"p{project.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("slide-1.tif", "preview.png", "thumbnail.png"):
        shutil.copyfile(made.folder / name, folder / name)
    path = folder / "slide-1.tif"
    dataset = Dataset.objects.create(project=project, name="slides", label_set=alpha, format=Dataset.Format.SLIDE,
                                     uploaded_by=owner, storage_dir=str(folder.relative_to(media)), image_count=1)
    geometry, outlines = made.geometry, made.outlines
    image = Image.objects.create(
        project=project, dataset=dataset, name="slide-1.tif", file=str((folder / "preview.png").relative_to(media)),
        thumbnail_file=str((folder / "thumbnail.png").relative_to(media)), mask_file="",
        width=rgb.shape[1], height=rgb.shape[0], checksum=f"slide-{project.pk}", group="slide-1",
        nucleus_count=len(geometry), slide_file=str(path.relative_to(media)), slide_root="media", mpp=0.25)
    nuclei = Nucleus.objects.bulk_create([
        Nucleus(image=image, instance_id=int(g["id"]), x0=int(g["x0"]), y0=int(g["y0"]), x1=int(g["x1"]),
                y1=int(g["y1"]), centroid_x=float(g["cx"]), centroid_y=float(g["cy"]), area=int(g["area"]),
                outline=outline)
        for g, outline in zip(geometry, outlines)])
    dataset.nucleus_count = len(nuclei)
    dataset.save(update_fields=["nucleus_count"])
    world = SlideWorld(project, dataset, image, alpha, beta, path, rgb)
    labels = [Label(nucleus=n, label_set=alpha, class_index=classes[n.instance_id], source=LabelSource.GROUND_TRUTH)
              for n in nuclei]
    Label.objects.bulk_create(labels)
    CurrentLabel.objects.bulk_create([CurrentLabel(nucleus_id=label.nucleus_id, label_set=alpha, label=label,
                                                   class_index=label.class_index, source=label.source)
                                      for label in labels])
    world.truth = {n.pk: classes[n.instance_id] for n in nuclei}
    # Every third nucleus is reviewed in the second taxonomy.
    reviews = [Label(nucleus=n, label_set=beta, class_index=n.instance_id % 2, source=LabelSource.REVIEW,
                     author=owner) for n in nuclei[::3]]
    Label.objects.bulk_create(reviews)
    CurrentLabel.objects.bulk_create([CurrentLabel(nucleus_id=label.nucleus_id, label_set=beta, label=label,
                                                   class_index=label.class_index, source=label.source)
                                      for label in reviews])
    world.beta_reviews = {label.nucleus_id: label.class_index for label in reviews}
    return world
