"""Read-only queries of the slide viewer: the nuclei in a box of a slide, and nucleus density per grid cell.

A slide holds 10^5-10^6 nuclei, so nothing here reads a whole image's nuclei. The box query is a range
on the (image, y0, x0) index (``nucleus_region``): ``y0`` from the box's top minus the tallest nucleus
of the image (a nucleus starting above the box may still reach into it) to the box's bottom, then
``x0``/``x1``/``y1`` filter the rows of that band. Labels come from :func:`queries.image_labels` for
those nuclei only, in the same shape as the tile viewer's (so the page's hover reuses it).
"""

from __future__ import annotations

import json
import math

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, Max, Q, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Floor

from . import prediction_source, queries
from .models import Image, Nucleus

REGION_LIMIT = 5000        # nuclei per answer; beyond, ``truncated`` and the page asks to zoom in
DENSITY_MAX_CELLS = 256    # default grid: at most this many cells along the slide's longer side
DENSITY_MIN_CELL = 64      # level-0 pixels (16 um at 0.25 um/px: finer cells hold 0-2 nuclei, noise)
CACHE_SECONDS = 600


def tallest_nucleus(image: Image) -> int:
    """The largest bounding-box height of the image's nuclei (the band margin of a box query).

    One pass over the image's nuclei, then cached: a slide's nuclei are imported once; the key holds the
    nucleus count, so a re-import that changes it is seen."""
    key = f"slide-tallest:{image.pk}:{image.nucleus_count}"
    value = cache.get(key)
    if value is None:
        value = (Nucleus.objects.filter(image_id=image.pk).order_by()
                 .aggregate(h=Max(F("y1") - F("y0")))["h"]) or 0
        cache.set(key, value, CACHE_SECONDS)
    return int(value)


def box_filter(image: Image, box: tuple[int, int, int, int], prefix: str = "") -> Q:
    """The nuclei of ``image`` whose bounding box meets ``box`` (x0, y0, x1, y1; x1, y1 exclusive), as a
    range on the region index: y0 from the box's top less the tallest nucleus, to its bottom."""
    x0, y0, x1, y1 = box
    margin = tallest_nucleus(image)
    return Q(**{f"{prefix}image_id": image.pk, f"{prefix}y0__gte": y0 - margin, f"{prefix}y0__lt": y1,
                f"{prefix}y1__gt": y0, f"{prefix}x0__lt": x1, f"{prefix}x1__gt": x0})


def nucleus_ids(ids: list[int]) -> Q:
    """``Q(nucleus_id__in=ids)`` for thousands of ids. On PostgreSQL as one array parameter
    (``IN (SELECT unnest(%s))``): Django prepares an ``__in`` list value by value (about 0.1 s for 4,000
    ids), and a join on the box instead lets the planner hash the whole label table (0.18 s at 550,000
    labels), where this takes the (nucleus, label set) index, a few milliseconds."""
    if connection.vendor == "postgresql":
        return Q(nucleus_id__in=RawSQL("SELECT unnest(%s::bigint[])", [list(ids)]))
    return Q(nucleus_id__in=ids)


def region_rows(image: Image, box: tuple[int, int, int, int], limit: int) -> list[tuple]:
    """Up to ``limit`` + 1 nuclei whose bounding box meets ``box``, in (y0, x0) order: ``(id, instance_id,
    x0, y0, x1, y1, cx, cy, area, outline JSON text)``."""
    rows = (Nucleus.objects.filter(box_filter(image, box))
            .order_by("y0", "x0")
            .annotate(outline_text=Cast("outline", TextField()))
            .values_list("id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area",
                         "outline_text")[:limit + 1])
    return queries._fetch(rows)


_SOURCE_SLOT = {"current": 0, "ground_truth": 2, "review": 3, "prediction": 4}


def region_nuclei_json(project, image: Image, box: tuple[int, int, int, int], source: str = "current",
                       label_set=None, limit: int = REGION_LIMIT) -> str:
    """The viewport's nuclei as JSON text.

    ``nuclei[]``: ``id``, ``instance_id``, ``bbox`` [x0, y0, x1, y1], ``centroid``, ``area``, ``outline``
    (level-0 pixel-centre coordinates, as stored), ``classes`` ``{label_set_id: {"index", "name",
    "color"}}``: the class from ``source`` in every label set (only ``label_set`` when given; a label set
    without a class from that source is left out), and ``labels``: every label set's labels from every
    source, exactly as :func:`queries.image_nuclei_json` gives them (for the hover). ``truncated``: more
    than ``limit`` nuclei meet the box; the first ``limit`` in (y0, x0) order are given.
    """
    label_sets = queries.label_sets_of(project)
    version = prediction_source.active_version(project)
    rows = region_rows(image, box, limit)
    truncated = len(rows) > limit
    rows = rows[:limit]
    labels = queries.image_labels(image.pk, project, version, nucleus_ids([row[0] for row in rows])) if rows else {}
    labels_json = queries._LabelsJson()
    slot = _SOURCE_SLOT[source]
    shown = [info for info in label_sets if label_set is None or info.id == label_set.id]
    fragments = {(info.id, c["index"]): f'"{info.id}":' + json.dumps(
                     {"index": c["index"], "name": c["name"], "color": c["color"]}, separators=(",", ":"))
                 for info in shown for c in info.classes}
    shown_ids = {info.id for info in shown}

    def classes(per_set: dict[int, list] | None) -> str:
        if not per_set:
            return "{}"
        parts = [fragments.get((ls_id, entry[slot])) for ls_id, entry in sorted(per_set.items())
                 if ls_id in shown_ids and entry[slot] is not None]
        return "{" + ",".join(p for p in parts if p) + "}"

    get = labels.get
    parts = [f'{{"id":{pk},"instance_id":{instance_id},"bbox":[{nx0},{ny0},{nx1},{ny1}],'
             f'"centroid":[{cx:.2f},{cy:.2f}],"area":{area},"outline":{outline or "[]"},'
             f'"classes":{classes(per_set := get(pk))},'
             f'"labels":{labels_json(per_set) if per_set else "{}"}}}'
             for pk, instance_id, nx0, ny0, nx1, ny1, cx, cy, area, outline in rows]
    head = json.JSONEncoder(separators=(",", ":")).encode({
        "image": {"id": image.pk, "width": image.width, "height": image.height},
        "box": list(box),
        "source": source,
        "label_set": label_set.id if label_set is not None else None,
        "label_sets": [info.as_dict() for info in label_sets],
        "model_version": {"id": version.pk, "number": version.number} if version else None,
        "unlabelled_color": queries.UNLABELLED_COLOR,
        "limit": limit,
        "count": len(parts),
        "truncated": truncated,
    })
    return f'{head[:-1]},"nuclei":[{",".join(parts)}]}}'


def default_cell(image: Image) -> int:
    """The smallest power of two (at least DENSITY_MIN_CELL) that keeps the grid within DENSITY_MAX_CELLS."""
    longest = max(image.width, image.height, 1)
    cell = DENSITY_MIN_CELL
    while math.ceil(longest / cell) > DENSITY_MAX_CELLS:
        cell *= 2
    return cell


# The most cells one density answer may hold, whatever its box: a dense grid of int64 counts and its JSON text
# (about 2 MB here). A box over a whole 100,000-pixel slide at 16 px cells was 31 million cells: 2.9 GB in the
# web process and 62 MB cached in Redis per request.
DENSITY_MAX_GRID = 1024 * 1024


def density_grid(cell: int, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """(col0, row0, cols, rows) of the cells of side ``cell`` that meet ``box``, the grid starting at (0, 0)."""
    x0, y0, x1, y1 = box
    col0, row0 = x0 // cell, y0 // cell
    return col0, row0, math.ceil(x1 / cell) - col0, math.ceil(y1 / cell) - row0


def smallest_density_cell(box: tuple[int, int, int, int]) -> int:
    """The smallest power-of-two cell (from DENSITY_MIN_CELL) whose grid over ``box`` stays within
    DENSITY_MAX_GRID cells."""
    cell = DENSITY_MIN_CELL
    while math.prod(density_grid(cell, box)[2:]) > DENSITY_MAX_GRID:
        cell *= 2
    return cell


def density_json(image: Image, cell: int, box: tuple[int, int, int, int] | None = None) -> str:
    """Nuclei per grid cell of ``cell`` level-0 pixels, by centroid, as JSON text: one GROUP BY on the floor
    of the centroid over the cell size. The grid starts at (0, 0) whatever the box, so cells line up
    between answers; the answer covers the cells that meet the box, ``origin`` [col, row] of the first,
    ``cols`` x ``rows`` of them, ``counts`` row-major (``counts[row * cols + col]``, a nucleus in the cell
    of its centroid), ``total`` and ``max``. Cached as text for CACHE_SECONDS (the key holds the image's
    nucleus count): a slide's grid is one full pass over its nuclei."""
    import numpy as np

    # Only the whole image's grid is cached (what the viewer asks for): a key per box let any member fill Redis,
    # which the job queue shares.
    whole = box is None or box == (0, 0, image.width, image.height)
    box = box or (0, 0, image.width, image.height)
    key = f"slide-density:{image.pk}:{image.nucleus_count}:{cell}"
    found = cache.get(key) if whole else None
    if found is not None:
        return found
    x0, y0, x1, y1 = box
    col0, row0, cols, rows = density_grid(cell, box)
    if cols * rows > DENSITY_MAX_GRID:
        raise ValueError(f"{cols} x {rows} cells: over DENSITY_MAX_GRID")  # the view refuses such a request
    nuclei = Nucleus.objects.filter(image_id=image.pk)
    if box != (0, 0, image.width, image.height):
        nuclei = nuclei.filter(centroid_x__gte=x0, centroid_x__lt=x1, centroid_y__gte=y0, centroid_y__lt=y1)
    grouped = (nuclei.order_by()
               .annotate(col=Floor(F("centroid_x") / float(cell)), row=Floor(F("centroid_y") / float(cell)))
               .values_list("col", "row").annotate(n=Count("id")))
    grid = np.zeros(rows * cols, np.int64)
    for col, row, n in queries._fetch(grouped):
        c = min(max(int(col) - col0, 0), cols - 1)  # a centroid on the far edge stays in the last cell
        r = min(max(int(row) - row0, 0), rows - 1)
        grid[r * cols + c] += n
    head = json.dumps({"cell": cell, "box": list(box), "origin": [col0, row0], "cols": cols, "rows": rows,
                       "total": int(grid.sum()), "max": int(grid.max(initial=0))}, separators=(",", ":"))
    text = f'{head[:-1]},"counts":[{",".join(map(str, grid.tolist()))}]}}'
    if whole:
        cache.set(key, text, CACHE_SECONDS)
    return text
