"""Readers check sizes from headers before they allocate (the memory-capped imports are in
tests/webapp/datasets/test_memory_bombs.py); here, the header parsing and the limits themselves."""

import json

import numpy as np
import pytest
import scipy.io

from mlcore import limits
from mlcore.infer import read_mask
from mlcore.readers import read_dataset
from mlcore.readers._common import load_json, load_npy
from mlcore.readers.hovernet import load_mat, mat_headers
from mlcore.types import DataError


@pytest.mark.parametrize("compressed", [False, True])
def test_mat_headers_agree_with_scipy(tmp_path, compressed):
    path = tmp_path / "labels.mat"
    scipy.io.savemat(path, {"inst_map": np.zeros((30, 40), np.int32), "inst_type": np.ones((5, 1)),
                            "flag": np.array([[True]]), "meta": {"a": 1}}, do_compression=compressed)
    assert mat_headers(path) == [(n, tuple(s), c) for n, s, c in scipy.io.whosmat(path)]


def test_mat_inst_map_over_the_pixel_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "labels.mat"
    scipy.io.savemat(path, {"inst_map": np.zeros((30, 40), np.int32)}, do_compression=True)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 1000)
    # A limit below a tenth of a megapixel reads as its count ("0.0 megapixels" said nothing).
    with pytest.raises(DataError, match=r"labels.mat: inst_map too large: 40x30 \(1,200 pixels\) is over the limit "
                                        r"MAX_IMAGE_PIXELS \(1,000 pixels\)$"):
        load_mat(path, ("inst_map",))


def test_mat_cell_variable_is_refused(tmp_path):
    path = tmp_path / "labels.mat"
    scipy.io.savemat(path, {"inst_map": np.array([[np.zeros(3)]], dtype=object)})
    with pytest.raises(DataError, match="inst_map' is a MATLAB cell"):
        load_mat(path, ("inst_map",))


def test_npy_header_larger_than_the_file_is_refused(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.zeros((10, 10), np.int32))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"header declares shape \(10, 10\)"):
        load_npy(path, mask=True)


def test_npy_array_over_the_byte_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "types.npy"
    np.save(path, np.zeros((100, 2), np.int64))
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 1000)
    with pytest.raises(DataError, match="MAX_ARRAY_BYTES"):
        load_npy(path)


def test_json_over_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": ["a"] * 100}))
    monkeypatch.setattr(limits, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError, match="MAX_JSON_BYTES"):
        load_json(path)


def test_image_over_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    from mlcore.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "d", format="seed", n_images=1)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="images/.*too large.*MAX_IMAGE_PIXELS"):
        read_dataset("seed", root)


def test_sparse_ids_are_renumbered_and_dense_ids_kept(tmp_path):
    from mlcore.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "d", format="seed", n_images=1)
    mask_path = next((root / "masks").glob("*.npy"))
    dense = np.load(mask_path)
    assert read_dataset("seed", root).images[0].instance_map.max() == dense.max()  # kept as they are
    types_path = root / "types" / mask_path.name
    types = np.load(types_path)
    shift = 2**31 - 1 - int(dense.max())  # the largest id becomes 2**31 - 1
    np.save(mask_path, np.where(dense > 0, dense.astype(np.int64) + shift, 0))
    np.save(types_path, np.stack([types[:, 0].astype(np.int64) + shift, types[:, 1]], axis=1))
    image = read_dataset("seed", root).images[0]
    ids, ranks = np.unique(dense, return_inverse=True)  # the same instances, numbered 1..N in id order
    assert ids[0] == 0 and np.array_equal(image.instance_map, ranks.reshape(dense.shape))
    rank_of = {int(i): r for r, i in enumerate(ids)}
    assert image.classes == {rank_of[int(i)]: int(c) for i, c in types if c >= 0}


def test_inference_mask_with_an_id_above_its_pixel_count_is_refused(tmp_path):
    path = tmp_path / "mask.npy"
    mask = np.zeros((8, 8), np.int64)
    mask[2:4, 2:4] = 2**31 - 1
    np.save(path, mask)
    with pytest.raises(DataError, match="number the instances 1..N"):
        read_mask(path)


def test_an_image_over_the_pixel_limit_is_refused_once_and_without_the_servers_path(tmp_path, monkeypatch):
    """The size refusal (a ValueError) was caught again as a corrupt image: "corrupt image: /server/path/x.png:
    image too large ..."."""
    import numpy as np
    from PIL import Image as PILImage

    from mlcore import limits
    from mlcore.readers._common import image_size, read_rgb
    from mlcore.types import DataError

    path = tmp_path / "big.png"
    PILImage.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 100)
    for read in (read_rgb, image_size):
        with pytest.raises(DataError) as refused:
            read(path)
        assert refused.value.problem.startswith("image too large: 20x20 (400 pixels)"), refused.value.problem
        assert str(tmp_path) not in refused.value.problem
