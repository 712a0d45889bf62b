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


def test_the_qupath_checker_holds_each_polygon_of_a_multipolygon_to_the_rules_of_a_polygon():
    """tests.qupath_geojson checks the export tests' files: a MultiPolygon (a nucleus in pieces) was refused as
    "not a Polygon", so no export test could hold one; each of its polygons is now checked as a Polygon is."""
    import copy

    from tests.qupath_geojson import check_qupath_feature_collection

    mask = np.zeros((12, 12), np.int32)
    mask[1:6, 1:6] = 1
    mask[3, 3] = 0          # a hole in the first piece
    mask[8:11, 7:11] = 1    # a second piece
    geometry = exact_geometries(mask)[1]
    assert geometry["type"] == "MultiPolygon" and [len(p) for p in geometry["coordinates"]] == [2, 1]

    def problems(change=None):
        changed = copy.deepcopy(geometry)
        if change is not None:
            change(changed["coordinates"])
        feature = {"type": "Feature", "geometry": changed, "properties": {"objectType": "detection"}}
        return check_qupath_feature_collection({"type": "FeatureCollection", "features": [feature]})

    assert problems() == []
    assert problems(lambda c: c[1][0].reverse()) == ["feature 0, polygon 1: the outer ring does not run "
                                                     "counter-clockwise"]
    assert problems(lambda c: c[0][1].reverse()) == ["feature 0, polygon 0: hole 1 does not run clockwise"]
    assert problems(lambda c: c[1][0].pop()) == ["feature 0, polygon 1: the outer ring is not closed"]
    assert problems(lambda c: c[1][0].__setitem__(1, [1.0, float("nan")])) == [
        "feature 0, polygon 1: the outer ring has a position that is not two finite numbers"]
    assert problems(lambda c: c.append([])) == ["feature 0, polygon 2: a polygon without rings"]
    assert problems(lambda c: c.clear()) == ["feature 0: a MultiPolygon without polygons"]
    polygon = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": geometry["coordinates"][0][::-1]},
               "properties": {"objectType": "detection"}}   # hole and outer ring swapped
    assert check_qupath_feature_collection({"type": "FeatureCollection", "features": [polygon]}) == [
        "feature 0: the outer ring does not run counter-clockwise", "feature 0: hole 1 does not run clockwise"]
