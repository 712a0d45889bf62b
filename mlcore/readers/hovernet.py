"""HoVer-Net / CoNSeP ``.mat`` labels, and HoVer-Net's inference output (``.mat`` or ``.json``).

Layout::

    root/Labels/<stem>.mat     inst_map (H x W, ids 1..N), inst_type (N x 1: class of instance i+1,
                               numbered from 1, 0 = no label), optionally type_map and inst_centroid
    root/Images/<stem>.png|jpg
    root/type_info.json        {"<id>": [name, [r, g, b]]}, id 0 = "nolabel" (not a class)

HoVer-Net's ``run_infer.py tile`` writes ``mat/<stem>.mat`` (the same variables) and ``json/<stem>.json``
(``{"mag": ..., "nuc": {"<id>": {"contour": [[x, y], ...], "type": k, ...}}}``) in its output folder: a lab
that ran it on its tiles uploads that folder with the tiles as ``Images/`` to review and correct its
predictions. The labels may also be ``Labels/<stem>.json``. Where a stem has both, the ``.mat`` is read: its
instance map is exact, while a contour (the outer boundary pixels' centres, as ``cv2.findContours`` gives
them) loses an instance's holes. A contour is filled with the pixels whose centres lie inside or on it; one
left with no pixel (covered by later ones, outside the image) is left out and counted in the image's ``left_out``.

Without ``inst_type`` the class of an instance is the majority of ``type_map`` over its pixels. Without
``type_info.json`` the class names come from the ``class_names`` argument (class k+1 of the file is
``class_names[k]``).

Grouping: a name ``<prefix>_<tile>_<k>`` (CoNSeP patches ``train_18_011``) belongs to group
``<prefix>_<tile>``: patches cut from one tile overlap, so a split must keep them together.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import scipy.io

from mlcore.readers._common import (FormatSource, PaintedNuclei, as_instance_map, as_int_array, check_array_bytes,
                                    check_class_names, check_pixels, check_same_size, find_image, instance_ids,
                                    list_images, load_json, make_label_set, read_rgb, tile_group)
from mlcore.types import AnnotatedImage, DataError, LabelSet, NoClassNames


# (folder, pattern) of label files, in order of preference for a stem found in several.
LABEL_FILES = (("Labels", "*.mat"), ("mat", "*.mat"), ("Labels", "*.json"), ("json", "*.json"))


def label_files(root: Path) -> list[Path]:
    """The label file of each stem (see :data:`LABEL_FILES`), sorted by stem."""
    chosen: dict[str, Path] = {}
    for folder, pattern in LABEL_FILES:
        for path in sorted((root / folder).glob(pattern)) if (root / folder).is_dir() else ():
            chosen.setdefault(path.stem, path)
    return [chosen[stem] for stem in sorted(chosen)]


def open_source(root: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    labelled_files = label_files(root)
    if not labelled_files:
        raise DataError(root / "Labels", "HoVer-Net labels not found (expected Labels/<stem>.mat, or HoVer-Net's "
                                         "output folders mat/<stem>.mat or json/<stem>.json)")
    images_dir = root / "Images"
    if not images_dir.is_dir():
        raise DataError(images_dir, "HoVer-Net image folder not found (expected Images/<stem>.png or .jpg)")
    labelled_stems = {path.stem for path in labelled_files}
    orphans = [path for path in list_images(images_dir) if path.stem not in labelled_stems]
    if orphans:
        raise DataError(orphans[0], f"image without labels (no Labels/{orphans[0].stem}.mat, mat/{orphans[0].stem}.mat "
                                    f"or json/{orphans[0].stem}.json)")
    label_set = _label_set(root, class_names, label_set_name) if labelled else None

    def read_item(mat_path: Path) -> AnnotatedImage:
        return _read_image(images_dir, mat_path, label_set)

    return FormatSource(label_set, labelled_files, read_item, lambda mat_path: mat_path)


def _label_set(root: Path, class_names: list[str] | None, name: str) -> LabelSet:
    info_path = root / "type_info.json"
    if not info_path.is_file():
        if class_names is None:
            raise NoClassNames(info_path, "type_info.json not found, so no class names")
        return make_label_set(name, class_names, None, info_path)
    info = load_json(info_path)
    if not isinstance(info, dict):
        raise DataError(info_path, 'expected {"<id>": [name, [r, g, b]], ...}')
    entries: dict[int, tuple[str, object]] = {}
    for key, value in info.items():
        try:
            type_id = int(key)
        except ValueError:
            raise DataError(info_path, f"type id {key!r} is not an integer") from None
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            raise DataError(info_path, f"entry {key!r} must be [name, [r, g, b]], got {value!r}")
        entries[type_id] = (value[0], value[1])
    class_ids = sorted(i for i in entries if i != 0)  # 0 is HoVer-Net's "nolabel"
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise DataError(info_path, f"type ids must be 0 (no label) and 1..K without gaps, got {sorted(entries)}")
    check_class_names(class_names, len(class_ids), info_path, "type_info.json")
    names = class_names or [entries[i][0] for i in class_ids]
    return make_label_set(name, names, [entries[i][1] for i in class_ids], info_path)


# The variables the reader uses: a HoVer-Net .mat also holds inst_centroid and often large extras
# (e.g. per-pixel probability maps) that would be decoded for nothing.
MAT_VARIABLES = ("inst_map", "inst_type", "type_map")


# MATLAB classes of plain numeric arrays; anything else (cell, struct, sparse, char...) is refused before it
# is decoded, since its size cannot be told from the header.
_NUMERIC_CLASSES = {"double", "single", "logical", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                    "int64", "uint64"}
# Variables that are images (H x W): checked against MAX_IMAGE_PIXELS, the others against MAX_ARRAY_BYTES.
_IMAGE_VARIABLES = {"inst_map", "type_map"}


_MAT_CLASSES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 6: "double", 7: "single", 8: "int8",
                9: "uint8", 10: "int16", 11: "uint16", 12: "int32", 13: "uint32", 14: "int64", 15: "uint64",
                16: "function", 17: "opaque"}
_MI_COMPRESSED, _MI_MATRIX = 15, 14
_HEADER_BYTES = 4096  # array flags, dimensions and name of one variable: far less in any real file


def mat_headers(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, class) of every variable of a MATLAB v5 file, decompressing only each header.

    ``scipy.io.whosmat`` inflates 128 KiB of compressed input at a time, which is over 100 MB for a
    variable of zeros; here at most ``_HEADER_BYTES`` are inflated per variable. Other versions (v4 is
    never compressed; v7.3 is refused by loadmat) are left to scipy.
    """
    with open(path, "rb") as handle:
        head = handle.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI") or head[:4] == b"\0\0\0\0":
            return [(name, tuple(shape), mat_class) for name, shape, mat_class in scipy.io.whosmat(path)]
        order = "<" if head[126:128] == b"IM" else ">"
        if struct.unpack(order + "H", head[124:126])[0] == 0x0200:
            raise NotImplementedError("MATLAB v7.3")
        variables = []
        while len(tag := handle.read(8)) == 8:
            element_type, size = struct.unpack(order + "II", tag)
            start = handle.tell()
            if element_type == _MI_COMPRESSED:
                inflater, header = zlib.decompressobj(), b""
                while len(header) < _HEADER_BYTES and not inflater.eof:
                    data = inflater.unconsumed_tail or handle.read(min(65536, max(start + size - handle.tell(), 0)))
                    if not data:
                        break
                    header += inflater.decompress(data, _HEADER_BYTES - len(header))
            elif element_type == _MI_MATRIX:
                header = tag + handle.read(min(size, _HEADER_BYTES))
            else:
                raise ValueError(f"unexpected data element type {element_type} at byte {start - 8}")
            variables.append(_matrix_header(header, order))
            handle.seek(start + size)
    return variables


def _matrix_header(header: bytes, order: str) -> tuple[str, tuple[int, ...], str]:
    def element(position: int) -> tuple[int, bytes, int]:
        element_type, size = struct.unpack_from(order + "II", header, position)
        if element_type >> 16:  # small data element: size and type in one word, data in the next four bytes
            return element_type & 0xFFFF, header[position + 4:position + 4 + (element_type >> 16)], position + 8
        end = position + 8 + size
        if end > len(header):
            raise ValueError("variable header too long or truncated")
        return element_type, header[position + 8:end], end + (-size) % 8

    try:
        if struct.unpack_from(order + "I", header, 0)[0] != _MI_MATRIX:
            raise ValueError("expected a MATLAB array (miMATRIX)")
        _, flags, position = element(8)
        mat_class = _MAT_CLASSES.get(flags[0] if order == "<" else flags[3], "unknown")
        if struct.unpack_from(order + "I", flags, 0)[0] & 0x200:
            mat_class = "logical"
        _, dims, position = element(position)
        shape = struct.unpack(order + f"{len(dims) // 4}i", dims[:len(dims) // 4 * 4])
        _, name, _ = element(position)
    except struct.error:
        raise ValueError("truncated variable header") from None
    return name.decode("latin1"), tuple(shape), mat_class


def load_mat(path: Path, variable_names: tuple[str, ...] | None = None) -> dict:
    """The variables of a .mat file, each one's class and size checked from the headers before decoding."""
    try:
        headers = mat_headers(path)
        for name, shape, mat_class in headers:
            if variable_names is not None and name not in variable_names:
                continue
            if mat_class not in _NUMERIC_CLASSES:
                raise DataError(path, f"variable {name!r} is a MATLAB {mat_class}, not a numeric array")
            if any(n < 0 for n in shape):
                raise DataError(path, f"{name} has a negative dimension {tuple(shape)}")
            if name in _IMAGE_VARIABLES:
                if len(shape) != 2:
                    raise DataError(path, f"{name} must be a 2-D H x W array, got shape {tuple(shape)}")
                check_pixels(shape[0], shape[1], path, name)
            else:
                # Read as int64 (as_int_array), whatever the class on disk.
                check_array_bytes(int(np.prod(shape, dtype=object)) * 8, path, f"{name} of shape {tuple(shape)}")
        return scipy.io.loadmat(path, variable_names=variable_names)
    except DataError:
        raise
    except NotImplementedError:
        # scipy reads MATLAB files up to v7; v7.3 files are HDF5 and need h5py, which mlcore does not use.
        raise DataError(path, "MATLAB v7.3 (HDF5) .mat file: not supported because h5py is not installed; "
                              "re-save it as v7 (MATLAB: save(..., '-v7'); Python: scipy.io.savemat)") from None
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, EOFError, KeyError, IndexError,
            zlib.error) as exc:
        raise DataError(path, f"not a readable MATLAB .mat file: {exc}") from None


def _read_image(images_dir: Path, mat_path: Path, label_set: LabelSet | None) -> AnnotatedImage:
    stem = mat_path.stem
    image_path = find_image(images_dir, stem)
    if image_path is None:
        raise DataError(mat_path, f"no image for these labels (expected {images_dir / stem}.png or .jpg)")
    image = read_rgb(image_path)
    if mat_path.suffix == ".json":
        instance_map, classes, left_out = _read_json_labels(mat_path, *image.shape[:2], label_set)
        return AnnotatedImage(name=stem, image=image, instance_map=instance_map, classes=classes,
                              group=tile_group(stem), source_path=str(image_path), left_out=left_out)
    content = load_mat(mat_path, MAT_VARIABLES)
    if "inst_map" not in content:
        raise DataError(mat_path, f"no 'inst_map' variable (found: {_variables(mat_path)})")
    instance_map = as_instance_map(content["inst_map"], mat_path)
    check_same_size(image, instance_map, mat_path, image_path)
    classes = _classes(content, instance_map, label_set, mat_path) if label_set is not None else {}
    return AnnotatedImage(name=stem, image=image, instance_map=instance_map, classes=classes,
                          group=tile_group(stem), source_path=str(image_path))


def _read_json_labels(path: Path, height: int, width: int,
                      label_set: LabelSet | None) -> tuple[np.ndarray, dict[int, int], dict[str, int]]:
    """The instance map and classes of one HoVer-Net JSON (see the module's docstring), and the counts of the
    nuclei left out with no pixel, by reason. A later nucleus paints over an earlier one where they overlap, as
    in the GeoJSON reader; type 0 or null: no label."""
    content = load_json(path)
    nuclei = content.get("nuc") if isinstance(content, dict) else None
    if not isinstance(nuclei, dict):
        raise DataError(path, 'expected HoVer-Net\'s JSON: {"mag": ..., "nuc": {"<id>": {"contour": [[x, y], ...], '
                              '"type": k}, ...}}')
    painter = PaintedNuclei(height, width)
    classes: dict[int, int] = {}
    for position, (key, nucleus) in enumerate(nuclei.items()):
        where = f"nucleus {key!r}"
        contour = nucleus.get("contour") if isinstance(nucleus, dict) else None
        try:
            ring = np.asarray(contour, dtype=np.float64)
        except (TypeError, ValueError):
            ring = None
        if ring is None or ring.ndim != 2 or ring.shape[1] != 2 or not len(ring):
            raise DataError(path, f"{where}: 'contour' must be a list of [x, y] points")
        # HoVer-Net's points are the boundary pixels' indices; polygon_mask works in pixel-edge coordinates.
        if not painter.paint_rings(position + 1, [(ring + 0.5, [])], path, where):
            continue
        kind = nucleus.get("type")
        if label_set is None or kind is None or kind == 0:
            continue
        if isinstance(kind, bool) or not isinstance(kind, int) or not 0 < kind <= len(label_set):
            raise DataError(path, f"{where}: type {kind!r} outside the label set "
                                  f"(0 = no label, 1..{len(label_set)} = {list(label_set.classes)})")
        classes[position + 1] = kind - 1
    return painter.finish(classes)


def _variables(mat_path: Path) -> str:
    """The variables a .mat file holds, for error messages (read from its headers only)."""
    try:
        return ", ".join(name for name, _, _ in scipy.io.whosmat(mat_path)) or "none"
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, EOFError, KeyError, IndexError):
        return "unreadable"


def _classes(content: dict, instance_map: np.ndarray, label_set: LabelSet, mat_path: Path) -> dict[int, int]:
    ids = instance_ids(instance_map)
    if "inst_type" in content:
        types = as_int_array(content["inst_type"], mat_path, "inst_type").ravel()
        if ids.size and types.size < ids[-1]:
            raise DataError(mat_path, f"inst_type lists {types.size} instances but the mask has instance id "
                                      f"{ids[-1]} (inst_type row i is the class of instance i+1)")
        per_instance = types[ids - 1] if ids.size else types[:0]
    elif "type_map" in content:
        type_map = as_int_array(content["type_map"], mat_path, "type_map")
        if type_map.shape != instance_map.shape:
            raise DataError(mat_path, f"type_map shape {type_map.shape} differs from inst_map {instance_map.shape}")
        per_instance = _majority_type(instance_map, type_map, ids, mat_path, len(label_set))
    else:
        raise NoClassNames(mat_path, f"no 'inst_type' or 'type_map' variable, so no classes "
                                     f"(found: {_variables(mat_path)})")
    bad = np.unique(per_instance[(per_instance < 0) | (per_instance > len(label_set))])
    if bad.size:
        raise DataError(mat_path, f"class id(s) {bad.tolist()} outside the label set "
                                  f"(0 = no label, 1..{len(label_set)} = {list(label_set.classes)})")
    # File class k (from 1) is label-set index k-1; 0 means the instance has no label.
    return {int(i): int(t) - 1 for i, t in zip(ids, per_instance) if t > 0}


def _majority_type(instance_map: np.ndarray, type_map: np.ndarray, ids: np.ndarray, mat_path: Path,
                   n_classes: int) -> np.ndarray:
    if type_map.size and (type_map.min() < 0 or type_map.max() > n_classes):
        raise DataError(mat_path, f"type_map values outside 0..{n_classes}")
    width = n_classes + 1
    if instance_map.size and int(instance_map.max()) > instance_map.size:
        # Sparse ids: vote over their ranks, so that nothing is sized by the largest id.
        ranks = np.searchsorted(ids, instance_map.ravel()) + 1
        ranks[instance_map.ravel() == 0] = 0
        votes = np.bincount(ranks.astype(np.int64) * width + type_map.ravel(),
                            minlength=(ids.size + 1) * width).reshape(-1, width)
        return votes[1:].argmax(axis=1)
    votes = np.bincount(instance_map.ravel().astype(np.int64) * width + type_map.ravel(),
                        minlength=(int(instance_map.max()) + 1) * width).reshape(-1, width)
    return votes[ids].argmax(axis=1)
