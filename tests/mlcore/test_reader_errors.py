"""Every malformed input gives a DataError that names the file and says what is wrong."""

import json
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mlcore.readers import read_dataset, read_rgb
from mlcore.synthetic import generate_nucleus_dataset
from mlcore.types import DataError
from mlcore.writers import save_rgb, write_dataset


def _raises(path, pattern, call):
    """Assert that ``call`` raises DataError whose message names ``path`` and matches ``pattern``."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(pattern, message), message
    assert info.value.path is not None
    return info.value


@pytest.fixture
def seed_root(tmp_path):
    dataset = generate_nucleus_dataset(n_images=1, nuclei_per_image=6, seed=2, size=(40, 50))
    root = write_dataset(dataset, "seed", tmp_path / "seed")
    return root, dataset.images[0].name


def test_unknown_format_names_the_allowed_ones(tmp_path):
    _raises(tmp_path, r"unknown dataset format 'tiff'.*seed, hovernet, coco, geojson, pannuke",
            lambda: read_dataset("tiff", tmp_path))


def test_missing_dataset_folder(tmp_path):
    _raises(tmp_path / "nope", "no such file or folder", lambda: read_dataset("seed", tmp_path / "nope"))


def test_mask_and_image_sizes_differ(seed_root):
    root, stem = seed_root
    np.save(root / "masks" / f"{stem}.npy", np.zeros((40, 49), np.int32))
    _raises(root / "masks" / f"{stem}.npy", r"mask size 49x40 differs from image size 50x40",
            lambda: read_dataset("seed", root))


def test_type_refers_to_an_instance_not_in_the_mask(seed_root):
    root, stem = seed_root
    np.save(root / "types" / f"{stem}.npy", np.array([[1, 0], [99, 1]]))
    _raises(root / "types" / f"{stem}.npy", r"instance\(s\) not in the mask: 99", lambda: read_dataset("seed", root))


def test_class_index_outside_the_label_set(seed_root):
    root, stem = seed_root
    np.save(root / "types" / f"{stem}.npy", np.array([[1, 3]]))
    _raises(root / "types" / f"{stem}.npy", r"class index outside the label set.*valid 0\.\.2\): 3",
            lambda: read_dataset("seed", root))


def test_types_table_of_the_wrong_shape_and_repeated_ids(seed_root):
    root, stem = seed_root
    path = root / "types" / f"{stem}.npy"
    np.save(path, np.array([[1, 0, 0]]))
    _raises(path, r"N x 2 array", lambda: read_dataset("seed", root))
    np.save(path, np.array([[1, 0], [1, 1]]))
    _raises(path, r"listed twice.*1", lambda: read_dataset("seed", root))
    np.save(path, np.array([[1.5, 0]]))
    _raises(path, r"non-integer", lambda: read_dataset("seed", root))


def test_mask_not_an_array_or_not_two_dimensional(seed_root):
    root, stem = seed_root
    path = root / "masks" / f"{stem}.npy"
    path.write_bytes(b"not numpy")
    _raises(path, r"not a readable NumPy", lambda: read_dataset("seed", root))
    np.save(path, np.zeros((40, 50, 2), np.int32))
    _raises(path, r"2-D", lambda: read_dataset("seed", root))
    np.save(path, np.full((40, 50), -1, np.int32))
    _raises(path, r"negative", lambda: read_dataset("seed", root))


def test_missing_mask_types_and_classes(seed_root):
    root, stem = seed_root
    (root / "types" / f"{stem}.npy").unlink()
    _raises(root / "types" / f"{stem}.npy", "file not found", lambda: read_dataset("seed", root))
    (root / "masks" / f"{stem}.npy").unlink()
    _raises(root / "masks" / f"{stem}.npy", "file not found", lambda: read_dataset("seed", root, labelled=False))
    (root / "classes.json").unlink()
    _raises(root / "classes.json", r"classes.json not found, so no class names \(read with labelled=False", lambda: read_dataset("seed", root))


def test_mask_without_its_image(seed_root):
    root, stem = seed_root
    (root / "images" / f"{stem}.png").unlink()
    _raises(root / "masks" / f"{stem}.npy", "mask without an image", lambda: read_dataset("seed", root))


def test_bad_classes_json(seed_root):
    root, _ = seed_root
    (root / "classes.json").write_text("{not json")
    _raises(root / "classes.json", "not valid JSON", lambda: read_dataset("seed", root))
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "a", "b"]}))
    _raises(root / "classes.json", "repeats a class name", lambda: read_dataset("seed", root))
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    _raises(root / "classes.json", r"2 class names given.*defines 3 classes",
            lambda: read_dataset("seed", root, class_names=["x", "y"]))


def test_not_an_image_corrupt_image_and_decompression_bomb(tmp_path, monkeypatch):
    text = tmp_path / "text.png"
    text.write_text("hello")
    _raises(text, "not an image", lambda: read_rgb(text))
    truncated = tmp_path / "truncated.png"
    save_rgb(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated.write_bytes((tmp_path / "good.png").read_bytes()[:300])
    _raises(truncated, "corrupt image", lambda: read_rgb(truncated))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _raises(tmp_path / "good.png", "too large", lambda: read_rgb(tmp_path / "good.png"))  # 4096 px > 2 x limit
    save_rgb(tmp_path / "warn.png", np.zeros((30, 50, 3), np.uint8))  # 1500 px: Pillow would only warn
    _raises(tmp_path / "warn.png", "too large", lambda: read_rgb(tmp_path / "warn.png"))
    _raises(tmp_path / "missing.png", "image file not found", lambda: read_rgb(tmp_path / "missing.png"))


def test_not_an_image_inside_a_dataset(seed_root):
    root, stem = seed_root
    (root / "images" / f"{stem}.png").write_bytes(b"\x00" * 100)
    _raises(root / "images" / f"{stem}.png", "not an image", lambda: read_dataset("seed", root))


# --------------------------------------------------------------------------------------------- HoVer-Net

@pytest.fixture
def hovernet_root(tmp_path):
    dataset = generate_nucleus_dataset(n_images=1, nuclei_per_image=6, seed=2, size=(40, 50))
    return write_dataset(dataset, "hovernet", tmp_path / "hv"), dataset.images[0].name


def test_hovernet_v73_mat_says_h5py_is_missing(hovernet_root):
    root, stem = hovernet_root
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
    (root / "Labels" / f"{stem}.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    _raises(root / "Labels" / f"{stem}.mat", r"v7\.3.*h5py is not installed", lambda: read_dataset("hovernet", root))


def test_hovernet_corrupt_mat_and_missing_variables(hovernet_root):
    root, stem = hovernet_root
    path = root / "Labels" / f"{stem}.mat"
    path.write_bytes(b"garbage" * 20)
    _raises(path, "not a readable MATLAB", lambda: read_dataset("hovernet", root))
    scipy.io.savemat(path, {"something": np.zeros(3)})
    _raises(path, r"no 'inst_map' variable \(found: something\)", lambda: read_dataset("hovernet", root))
    scipy.io.savemat(path, {"inst_map": np.zeros((40, 50), np.int32)})
    _raises(path, r"no 'inst_type' or 'type_map'", lambda: read_dataset("hovernet", root))


def test_hovernet_class_outside_the_label_set_and_short_inst_type(hovernet_root):
    root, stem = hovernet_root
    path = root / "Labels" / f"{stem}.mat"
    inst_map = np.zeros((40, 50), np.int32)
    inst_map[1:4, 1:4], inst_map[10:15, 10:15] = 1, 2
    scipy.io.savemat(path, {"inst_map": inst_map, "inst_type": np.array([[1], [7]])})
    _raises(path, r"class id\(s\) \[7\] outside the label set", lambda: read_dataset("hovernet", root))
    scipy.io.savemat(path, {"inst_map": inst_map, "inst_type": np.array([[1]])})
    _raises(path, r"inst_type lists 1 instances but the mask has instance id 2", lambda: read_dataset("hovernet", root))


def test_hovernet_missing_image_and_type_info(hovernet_root):
    root, stem = hovernet_root
    (root / "type_info.json").unlink()
    _raises(root / "type_info.json", r"type_info.json not found, so no class names \(read with labelled=False", lambda: read_dataset("hovernet", root))
    (root / "Images" / f"{stem}.png").unlink()
    _raises(root / "Labels" / f"{stem}.mat", "no image for these labels",
            lambda: read_dataset("hovernet", root, labelled=False))


def test_hovernet_bad_type_info(hovernet_root):
    root, _ = hovernet_root
    (root / "type_info.json").write_text(json.dumps({"0": ["nolabel", [0, 0, 0]], "2": ["b", [1, 2, 3]]}))
    _raises(root / "type_info.json", "without gaps", lambda: read_dataset("hovernet", root))
    (root / "type_info.json").write_text(json.dumps({"1": ["a", "red"]}))
    _raises(root / "type_info.json", "invalid colour", lambda: read_dataset("hovernet", root))


# -------------------------------------------------------------------------------------------------- COCO

@pytest.fixture
def coco_root(tmp_path):
    save_rgb(tmp_path / "images" / "a.png", np.zeros((10, 12, 3), np.uint8))
    return tmp_path


def _write_coco(root, annotations, images=None, categories=None):
    content = {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "height": 10,
                                                              "width": 12}],
               "annotations": annotations,
               "categories": categories if categories is not None else [{"id": 1, "name": "n"}]}
    (root / "annotations.json").write_text(json.dumps(content))
    return root / "annotations.json"


SQUARE = [[1.5, 1.5, 4.5, 1.5, 4.5, 4.5, 1.5, 4.5]]


def test_coco_unknown_category(coco_root):
    path = _write_coco(coco_root, [{"id": 5, "image_id": 1, "category_id": 9, "segmentation": SQUARE}])
    _raises(path, r"annotation 5 of image a\.png: unknown category_id 9", lambda: read_dataset("coco", coco_root))


def test_coco_rle_of_the_wrong_size_or_length(coco_root):
    path = _write_coco(coco_root, [{"id": 1, "image_id": 1, "category_id": 1,
                                    "segmentation": {"counts": [120], "size": [12, 10]}}])
    _raises(path, r"RLE size \[12, 10\] differs from the image size \[10, 12\]", lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": {"counts": [100, 5], "size": [10, 12]}}])
    _raises(path, r"RLE runs cover 105 pixels, not 10x12", lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": {"counts": "0" + chr(200), "size": [10, 12]}}])
    _raises(path, r"invalid character", lambda: read_dataset("coco", coco_root))


def test_coco_malformed_polygons_and_segmentation(coco_root):
    path = _write_coco(coco_root, [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3]]}])
    _raises(path, "flat list of x, y numbers", lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": "oops"}])
    _raises(path, "segmentation must be polygons or RLE", lambda: read_dataset("coco", coco_root))



def test_a_polygon_of_more_vertices_than_any_outline_is_refused_before_it_is_filled(coco_root):
    """A few MB of random points in one ring held an import's worker for hours (filling a self-crossing ring
    slows steeply with its vertices); a real outline has tens to hundreds."""
    rng = np.random.default_rng(0)
    crossing = (rng.random(2 * 5000) * 10).round(2).tolist()
    path = _write_coco(coco_root, [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [crossing]}])
    _raises(path, r"annotation 7 of image a\.png: a polygon ring of 5,000 vertices; at most 4,096 are read",
            lambda: read_dataset("coco", coco_root))
    # The most allowed still reads (a ring of 4,096 points on a circle).
    angle = np.linspace(0, 2 * np.pi, 4096, endpoint=False)
    ring = np.stack([6 + 4 * np.cos(angle), 5 + 4 * np.sin(angle)], axis=1).ravel().round(3).tolist()
    _write_coco(coco_root, [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [ring]}])
    assert read_dataset("coco", coco_root).images[0].instance_map.max() == 1

def test_coco_bad_json_and_structure(coco_root):
    path = coco_root / "annotations.json"
    path.write_text("[1, 2")
    _raises(path, "not valid JSON", lambda: read_dataset("coco", coco_root))
    path.write_text(json.dumps({"annotations": []}))
    _raises(path, r'no "images" list', lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [], categories=[])
    _raises(path, r'no "categories"', lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [{"id": 3, "image_id": 42, "category_id": 1, "segmentation": SQUARE}])
    _raises(path, r"annotation 3 refers to image id 42", lambda: read_dataset("coco", coco_root))


def test_coco_missing_image_wrong_size_and_escape(coco_root):
    _write_coco(coco_root, [], images=[{"id": 1, "file_name": "b.png"}])
    _raises(coco_root / "images" / "b.png", "image file not found", lambda: read_dataset("coco", coco_root))
    _write_coco(coco_root, [], images=[{"id": 1, "file_name": "a.png", "height": 11, "width": 12}])
    _raises(coco_root / "images" / "a.png", r"image size 12x10 differs from the size 12x11",
            lambda: read_dataset("coco", coco_root))
    path = _write_coco(coco_root, [], images=[{"id": 1, "file_name": "../../etc/passwd"}])
    _raises(path, "outside the dataset folder", lambda: read_dataset("coco", coco_root))


# ----------------------------------------------------------------------------------------------- GeoJSON

@pytest.fixture
def geojson_root(tmp_path):
    save_rgb(tmp_path / "a.png", np.zeros((10, 10, 3), np.uint8))
    return tmp_path


def _feature(geometry, name="n"):
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}


def test_geojson_unknown_class_and_unsupported_geometry(geojson_root):
    path = geojson_root / "a.geojson"
    polygon = {"type": "Polygon", "coordinates": [[[1, 1], [5, 1], [5, 5], [1, 1]]]}
    path.write_text(json.dumps([_feature(polygon, "mystery")]))
    _raises(path, r"feature #0: unknown class 'mystery' \(label set: a, b\)",
            lambda: read_dataset("geojson", geojson_root, class_names=["a", "b"]))
    path.write_text(json.dumps([_feature({"type": "Point", "coordinates": [3, 3]})]))
    _raises(path, r"geometry type 'Point' is not supported", lambda: read_dataset("geojson", geojson_root))
    path.write_text(json.dumps([_feature({"type": "Polygon", "coordinates": [[1, 2, 3]]})]))
    _raises(path, r"malformed Polygon coordinates", lambda: read_dataset("geojson", geojson_root))
    path.write_text(json.dumps({"type": "Topology"}))
    _raises(path, r"not GeoJSON features", lambda: read_dataset("geojson", geojson_root))


def test_geojson_missing_annotations_or_image(geojson_root):
    _raises(geojson_root / "a.png", r"no annotation file a\.geojson", lambda: read_dataset("geojson", geojson_root))
    (geojson_root / "a.geojson").write_text("[]")
    (geojson_root / "b.geojson").write_text("[]")
    _raises(geojson_root / "b.geojson", "annotations without an image", lambda: read_dataset("geojson", geojson_root))


# ----------------------------------------------------------------------------------------------- PanNuke

def test_pannuke_shapes_must_agree(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((2, 8, 8, 3), np.uint8))
    np.save(tmp_path / "masks.npy", np.zeros((3, 8, 8, 6)))
    _raises(tmp_path / "masks.npy", r"masks shape \(3, 8, 8\) \(N, H, W\) differs from images shape \(2, 8, 8\)",
            lambda: read_dataset("pannuke", tmp_path))
    np.save(tmp_path / "images.npy", np.zeros((3, 8, 8), np.uint8))
    _raises(tmp_path / "images.npy", r"N x H x W x 3", lambda: read_dataset("pannuke", tmp_path))
    (tmp_path / "images.npy").unlink()
    _raises(tmp_path / "images.npy", "file not found", lambda: read_dataset("pannuke", tmp_path))


def test_pannuke_bad_values(tmp_path):
    np.save(tmp_path / "images.npy", np.full((1, 8, 8, 3), 300.0))
    np.save(tmp_path / "masks.npy", np.zeros((1, 8, 8, 6)))
    _raises(tmp_path / "images.npy", r"image 0: pixel values outside 0\.\.255", lambda: read_dataset("pannuke", tmp_path))
    np.save(tmp_path / "images.npy", np.zeros((1, 8, 8, 3)))
    masks = np.zeros((1, 8, 8, 6))
    masks[0, 0, 0, 2] = 0.5
    np.save(tmp_path / "masks.npy", masks)
    _raises(tmp_path / "masks.npy", r"image 0, channel 2.*non-integer", lambda: read_dataset("pannuke", tmp_path))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_pixels_are_pillows_whichever_decoder_reads_them(tmp_path, mode):
    # Plain 8-bit RGB PNGs take the faster OpenCV decoder; the pixels must be Pillow's exactly.
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    image.save(tmp_path / "x.png")
    expected = np.asarray(image.convert("RGBA").convert("RGB") if mode in ("RGBA", "P") else image.convert("RGB"))
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.png"), expected)


def test_corrupt_png_names_the_file_whichever_decoder_tries_first(tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[:len(data) // 2])
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    (tmp_path / "damaged.png").write_bytes(bytes(damaged))
    for name in ("truncated.png", "damaged.png"):
        with pytest.raises(DataError, match=rf"{name}: corrupt image"):
            read_rgb(tmp_path / name)


@pytest.mark.parametrize("format", ["coco", "geojson"])
def test_files_without_classes_say_how_to_read_masks_only(tmp_path, format):
    """A COCO file with no categories (this app's export of an unlabelled dataset) and GeoJSON without a
    classification name the file; read with labelled=False they are nuclei without classes."""
    from mlcore.types import NoClassNames
    from mlcore.writers import write_coco, write_geojson

    instance_map = np.zeros((32, 32), np.int32)
    instance_map[4:12, 4:12] = 1
    image_path = tmp_path / "images" / "t.png" if format == "coco" else tmp_path / "t.png"
    save_rgb(image_path, np.full((32, 32, 3), 200, np.uint8))
    if format == "coco":
        write_coco(tmp_path / "annotations.json", [("t.png", instance_map, {})], None)
        named = "annotations.json"
    else:
        write_geojson(tmp_path / "t.geojson", instance_map, {}, None)
        named = "t.geojson"
    with pytest.raises(NoClassNames, match="read with labelled=False for masks only") as refused:
        read_dataset(format, tmp_path)
    assert refused.value.path.endswith(named)
    unlabelled = read_dataset(format, tmp_path, labelled=False)
    assert unlabelled.label_set is None and unlabelled.images[0].instance_map.max() == 1
