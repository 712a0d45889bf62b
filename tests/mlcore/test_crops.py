import numpy as np
import pytest

from mlcore.crops import crop_windows, cut_crops, reflect_101
from mlcore.geometry import instance_geometry


def coordinate_image(height, width):
    """Pixel (y, x) holds (y, x, 7) so a crop reveals where each of its pixels came from."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.arange(height)[:, None]
    image[:, :, 1] = np.arange(width)[None, :]
    image[:, :, 2] = 7
    return image


def test_geometry_boxes_centroids_and_ids():
    mask = np.zeros((50, 60), np.int32)
    mask[10:20, 30:34] = 5
    mask[0:3, 0:2] = 2
    geometry = instance_geometry(mask)
    assert geometry.ids.tolist() == [2, 5]
    assert geometry.bboxes.tolist() == [[0, 0, 3, 2], [10, 30, 20, 34]]
    np.testing.assert_allclose(geometry.centroids, [[0.5, 1.0], [31.5, 14.5]])
    assert geometry.areas.tolist() == [6, 40]


def test_crop_is_64_and_centred_on_the_bounding_box():
    image = coordinate_image(200, 220)
    mask = np.zeros((200, 220), np.int32)
    mask[100:110, 120:131] = 1           # bbox centre y = 105, x = 125 (pixel grid)
    crops, geometry = cut_crops(image, mask)
    assert crops.shape == (1, 64, 64, 3) and crops.dtype == np.uint8
    rows, cols = crops[0, :, 0, 0].astype(int), crops[0, 0, :, 1].astype(int)
    assert rows.tolist() == list(range(105 - 32, 105 + 32))
    assert cols.tolist() == list(range(125 - 32, 125 + 32))
    # the whole nucleus is inside its crop, neighbouring tissue included
    assert rows[0] < 100 and rows[-1] >= 109 and cols[0] < 120 and cols[-1] >= 130


def test_border_is_mirror_padded_without_repeating_the_edge():
    image = coordinate_image(100, 100)
    mask = np.zeros((100, 100), np.int32)
    mask[0:4, 0:4] = 1                     # top-left corner: centre (2, 2), window starts at -30
    crops, _ = cut_crops(image, mask)
    rows = crops[0, :, 0, 0].astype(int)
    assert rows[:31].tolist() == list(range(30, -1, -1))[:31]  # -30..-1 -> 30..1, then 0..
    assert rows[30:33].tolist() == [0, 1, 2]
    assert rows.tolist() == reflect_101(np.arange(-30, 34), 100).tolist()
    assert rows[29] == 1 and rows[31] == 1  # BORDER_REFLECT_101: 1 0 1, not 0 0
    assert (crops[0, :, :, 2] == 7).all()   # no black fill anywhere


def test_reflect_handles_offsets_larger_than_the_image():
    assert reflect_101(np.array([-5, -1, 0, 3, 4, 7, 9]), 4).tolist() == [1, 1, 0, 3, 2, 1, 3]


def test_large_nucleus_is_a_square_of_its_extent_resized_to_64():
    image = np.zeros((300, 300, 3), np.uint8)
    image[:, 150:] = 255                    # left half black, right half white
    mask = np.zeros((300, 300), np.int32)
    mask[100:200, 110:190] = 1              # 100 x 80: larger than 64
    top_left, side = crop_windows(instance_geometry(mask).bboxes)
    assert side.tolist() == [100] and top_left.tolist() == [[100, 100]]
    crops, _ = cut_crops(image, mask)
    assert crops.shape == (1, 64, 64, 3)
    # window x 100..199 -> the black/white edge at x = 150 falls in the middle of the resized crop
    assert crops[0, :, :30].max() == 0 and crops[0, :, 34:].min() == 255


def test_many_nuclei_one_call_rows_in_id_order():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    mask = np.zeros((256, 256), np.int32)
    for instance_id, (y, x) in enumerate([(10, 10), (128, 128), (250, 5), (30, 200)], start=3):
        mask[y:y + 5, x:x + 5] = instance_id
    crops, geometry = cut_crops(image, mask)
    assert geometry.ids.tolist() == [3, 4, 5, 6]
    # the centre pixel of each crop is the nucleus's bbox centre pixel
    for row, (y0, x0, y1, x1) in enumerate(geometry.bboxes):
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        assert (crops[row, 32, 32] == image[cy, cx]).all()


def test_empty_mask_and_bad_input():
    crops, geometry = cut_crops(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.int32))
    assert crops.shape == (0, 64, 64, 3) and geometry.ids.size == 0
    with pytest.raises(ValueError):
        cut_crops(np.zeros((10, 10, 3), np.uint8), np.zeros((11, 10), np.int32))
