"""GeoJSON rings as RFC 7946 asks: outer rings counter-clockwise, holes clockwise, in the coordinates as written
(the tiles' exact shapes ran the other way round from the slides' outlines QuPath gave, in one export)."""

import numpy as np

from mlcore.writers import exact_geometries
from tests.qupath_geojson import signed_ring_area


def test_outer_rings_run_counter_clockwise_and_holes_clockwise():
    mask = np.zeros((10, 10), np.int32)
    mask[2:6, 3:8] = 1
    mask[3, 4] = 0          # a hole
    mask[7:9, 0:2] = 2
    mask[8, 5] = 2          # a second piece: a MultiPolygon
    shapes = exact_geometries(mask)
    assert shapes[1]["type"] == "Polygon" and [signed_ring_area(r) for r in shapes[1]["coordinates"]] == [20.0, -1.0]
    assert shapes[2]["type"] == "MultiPolygon"
    assert [[signed_ring_area(r) for r in polygon] for polygon in shapes[2]["coordinates"]] == [[4.0], [1.0]]
    assert all(ring[0] == ring[-1] for polygon in [shapes[1]["coordinates"], *shapes[2]["coordinates"]]
               for ring in polygon)


def test_a_stored_outline_is_written_counter_clockwise_whichever_way_it_ran():
    """outline_feature writes the stored outline where there is no mask (a slide's nuclei, a tile whose mask is
    unreadable): OpenCV traces it clockwise as written, QuPath may give either."""
    from mlcore.writers import nucleus_outlines, outline_feature

    mask = np.zeros((10, 10), np.int32)
    mask[2:7, 3:8] = 1
    outline = nucleus_outlines(mask)[1]
    for ring in (outline, outline[::-1]):
        written = outline_feature(ring)["geometry"]["coordinates"][0]
        assert written[0] == written[-1] and signed_ring_area(written) == 16.0   # centre to centre, 4 x 4
    box = outline_feature([[4, 4], [4, 4]], box=[4, 4, 5, 5])["geometry"]["coordinates"][0]
    assert signed_ring_area(box) == 1.0

