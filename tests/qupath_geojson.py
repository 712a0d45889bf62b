"""QuPath's rules for a GeoJSON file it imports as objects, as a checker for the export tests.

QuPath (File > Import objects, or drag and drop) reads a FeatureCollection whose Features carry a
geometry and ``properties``: ``objectType`` ("detection" or "annotation"), ``classification``
``{"name": str, "color": [r, g, b]}`` (an RGB int array) and ``measurements``, an object mapping a
measurement name to a number. GeoJSON itself (RFC 7946) wants every linear ring closed, with at least
four positions, and following the right-hand rule: an outer ring counter-clockwise, its holes clockwise (in the
coordinates as written). A nucleus is a Polygon, or a MultiPolygon for one in several pieces (each of its
polygons checked as a Polygon is).
"""

from __future__ import annotations

import math
import numbers


def check_qupath_feature_collection(collection, object_type: str = "detection") -> list[str]:
    """Every way ``collection`` breaks QuPath's import rules; an empty list when it follows them."""
    problems = []
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        return ["not a FeatureCollection"]
    features = collection.get("features")
    if not isinstance(features, list):
        return ["features is not a list"]
    for position, feature in enumerate(features):
        where = f"feature {position}"
        if feature.get("type") != "Feature":
            problems.append(f"{where}: type is not Feature")
        geometry = feature.get("geometry") if isinstance(feature.get("geometry"), dict) else {}
        coordinates = geometry.get("coordinates")
        if geometry.get("type") == "Polygon":
            problems += polygon_problems(coordinates, where)
        elif geometry.get("type") == "MultiPolygon":
            if not isinstance(coordinates, list) or not coordinates:
                problems.append(f"{where}: a MultiPolygon without polygons")
            else:
                for number, polygon in enumerate(coordinates):
                    problems += polygon_problems(polygon, f"{where}, polygon {number}")
        else:
            problems.append(f"{where}: geometry is not a Polygon or a MultiPolygon")
        properties = feature.get("properties")
        if not isinstance(properties, dict):
            problems.append(f"{where}: no properties")
            continue
        if properties.get("objectType") != object_type:
            problems.append(f"{where}: objectType is {properties.get('objectType')!r}, not {object_type!r}")
        if "classification" in properties:
            classification = properties["classification"]
            if not (isinstance(classification, dict) and isinstance(classification.get("name"), str)
                    and classification["name"]):
                problems.append(f"{where}: classification has no name")
            color = classification.get("color") if isinstance(classification, dict) else None
            if not (isinstance(color, list) and len(color) == 3
                    and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
                problems.append(f"{where}: classification color is not [r, g, b] integers 0..255: {color!r}")
        measurements = properties.get("measurements", {})
        if not isinstance(measurements, dict) or not all(
                isinstance(k, str) and isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                for k, v in measurements.items()):
            problems.append(f"{where}: measurements is not an object of name -> finite number")
    return problems


def polygon_problems(polygon, where: str) -> list[str]:
    """How the rings of one polygon (a Polygon's coordinates, or one polygon of a MultiPolygon's) break GeoJSON's
    rules: each ring closed, of four positions or more, each position two finite numbers; the outer ring
    counter-clockwise and every hole clockwise, as written (RFC 7946, 3.1.6)."""
    if not isinstance(polygon, list) or not polygon:
        return [f"{where}: a polygon without rings"]
    problems = []
    for number, ring in enumerate(polygon):
        what = "the outer ring" if number == 0 else f"hole {number}"
        if not isinstance(ring, list) or len(ring) < 4:
            problems.append(f"{where}: {what} has fewer than four positions")
        elif not all(isinstance(p, list) and len(p) == 2
                     and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in p)
                     for p in ring):
            problems.append(f"{where}: {what} has a position that is not two finite numbers")
        elif ring[0] != ring[-1]:
            problems.append(f"{where}: {what} is not closed")
        elif number == 0 and signed_ring_area(ring) <= 0:
            problems.append(f"{where}: {what} does not run counter-clockwise")
        elif number > 0 and signed_ring_area(ring) >= 0:
            problems.append(f"{where}: {what} does not run clockwise")
    return problems


def signed_ring_area(ring) -> float:
    """The shoelace area of a closed ring: positive counter-clockwise in the coordinates as written."""
    return sum(ring[i][0] * ring[i + 1][1] - ring[i + 1][0] * ring[i][1] for i in range(len(ring) - 1)) / 2


def covered_area(geometry) -> float:
    """The area a Polygon or MultiPolygon covers (outer rings less their holes): for a shape along its pixels'
    edges, its pixel count."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return sum(abs(signed_ring_area(polygon[0])) - sum(abs(signed_ring_area(hole)) for hole in polygon[1:])
               for polygon in polygons)
