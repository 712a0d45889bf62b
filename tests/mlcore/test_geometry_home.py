"""mlcore.geometry is the one home of instance geometry; the writers are registered per reader format."""

import numpy as np

from mlcore.geometry import instance_geometry, nucleus_geometry
from mlcore.readers import FORMATS
from mlcore.writers import _WRITERS, geometry_and_outlines, nucleus_outlines


def test_boxes_are_row_first_and_the_records_name_the_same_box():
    instance_map = np.zeros((10, 20), np.int32)
    instance_map[2:5, 7:15] = 3   # rows 2..4, columns 7..14
    instance_map[6:9, 1:2] = 8
    geometry = instance_geometry(instance_map)
    assert geometry.ids.tolist() == [3, 8]
    assert geometry.bboxes.tolist() == [[2, 7, 5, 15], [6, 1, 9, 2]]  # y0, x0, y1, x1
    records = nucleus_geometry(instance_map)
    assert records[["x0", "y0", "x1", "y1"]].tolist() == [(7, 2, 15, 5), (1, 6, 2, 9)]
    assert records["area"].tolist() == [24, 3]
    assert records[["cx", "cy"]].tolist() == [(10.5, 3.0), (1.0, 7.0)]


def test_geometry_and_outlines_equal_the_separate_functions():
    rng = np.random.default_rng(3)
    instance_map = np.zeros((64, 64), np.int32)
    for instance_id in range(1, 30):
        y, x = rng.integers(0, 60, 2)
        instance_map[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = instance_id
    geometry, outlines = geometry_and_outlines(instance_map)
    assert geometry.tobytes() == nucleus_geometry(instance_map).tobytes()
    assert outlines == list(nucleus_outlines(instance_map).values())


def test_every_reader_format_has_a_writer():
    assert tuple(_WRITERS) == FORMATS
