"""What an upload in each reader format looks like: a short folder tree and a tiny example archive.

The example archives are generated on demand from synthetic tiles with the same writers as the exports
(:func:`mlcore.writers.write_dataset`), so they are always in the layout the readers expect; nothing is
read from real data.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from mlcore.readers import FORMATS
from mlcore.readers.pannuke import PANNUKE_CLASSES
from mlcore.synthetic import generate_nucleus_dataset
from mlcore.writers import write_dataset

# A short tree per format, as the readers' docstrings describe it (one example image "tile_0000").
LAYOUTS: dict[str, str] = {
    "seed": (
        "my-dataset.zip\n"
        "├── images/tile_0000.png      H&E image (png or jpg)\n"
        "├── masks/tile_0000.npy       H x W instance ids, 0 = background\n"
        "├── types/tile_0000.npy       N x 2: instance id, class index\n"
        "└── classes.json              {\"classes\": [names], \"colors\": [[r, g, b], ...]}"),
    "hovernet": (
        "my-dataset.zip\n"
        "├── Images/tile_0000.png      H&E image (png or jpg)\n"
        "├── Labels/tile_0000.mat      inst_map, inst_type (class + 1, 0 = none)\n"
        "└── type_info.json            {\"1\": [name, [r, g, b]], ...}, \"0\" = nolabel"),
    "coco": (
        "my-dataset.zip\n"
        "├── annotations.json          COCO instances: images, annotations, categories\n"
        "└── images/tile_0000.png      the images file_name names"),
    "geojson": (
        "my-dataset.zip\n"
        "├── tile_0000.png             H&E image (png or jpg; or in images/)\n"
        "└── tile_0000.geojson         QuPath FeatureCollection, classification.name per nucleus"),
    "pannuke": (
        "my-dataset.zip\n"
        "├── images.npy                N x H x W x 3 images\n"
        "└── masks.npy                 N x H x W x (classes + 1) instance ids, last = background"),
}
# What a layout's tree does not show.
LAYOUT_NOTES: dict[str, str] = {
    "seed": "A mask may be a label image instead (masks/tile_0000.png or .tif: one id or colour per nucleus), as "
            "cellpose (tile_0000_cp_masks.png) or StarDist save them: tiles segmented there upload unlabelled "
            "(uncheck Labelled, no types/), for the model to classify and reviewers to correct.",
    "hovernet": "HoVer-Net's own inference output reads too, to review and correct what it predicted: its output "
                "folder (mat/ and json/) with the tiles added as Images/ and its type_info.json; where a tile has "
                "both, the .mat is read.",
}

EXAMPLE_CLASSES = ("tumour", "lymphocyte", "stroma")


def write_example_zip(format: str, target, n_images: int = 2, nuclei_per_image: int = 6,
                      size: tuple[int, int] = (64, 64)) -> None:
    """Write a tiny dataset in ``format`` as a zip to ``target`` (a path or a binary file object).

    The files sit in a top folder ``example-<format>/``, as archives made by zipping a folder do (the
    importer steps into a single top folder).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r} (allowed: {', '.join(FORMATS)})")
    # PanNuke arrays carry no class names: the reader takes PanNuke's five, one mask channel each.
    classes = PANNUKE_CLASSES if format == "pannuke" else EXAMPLE_CLASSES
    # A seed per format: the examples differ, so that one project can import them all (an import refuses
    # an image the project already holds).
    dataset = generate_nucleus_dataset(n_images, nuclei_per_image, classes, seed=7 + FORMATS.index(format), size=size,
                                       name=f"example-{format}")
    with tempfile.TemporaryDirectory() as folder:
        root = write_dataset(dataset, format, Path(folder) / f"example-{format}")
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, str(path.relative_to(root.parent)))


def example_zip_bytes(format: str) -> bytes:
    buffer = io.BytesIO()
    write_example_zip(format, buffer)
    return buffer.getvalue()
