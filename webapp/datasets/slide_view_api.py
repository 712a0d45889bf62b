"""API of the slide viewer (thin views): Deep Zoom descriptor and tiles, nuclei by region, density.

Members of the image's project (viewers and up) only; everyone else gets 404, like every image route.
Tiles are cached as files (:class:`webapp.datasets.slides.TileCache`) and carry an ETag; the browser
keeps them (``private``: they are a project's pixels, never for a shared proxy).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError

from mlcore.types import quoted

from . import queries, slide_queries, slides
from .viewer_api import FileAPIView, _source

TILE_MAX_AGE = 86400


def _slide_image_for(request, image_id: int):
    project, image = queries.get_image_for(request.user, image_id)
    if not image.is_slide:
        raise NotFound(f"Image {quoted(image.name)} is not a whole-slide image: it has no Deep Zoom tiles "
                       "(the image viewer shows it).")
    return project, image


def _slide_unavailable(exc: slides.SlidePathError) -> NotFound:
    return NotFound(str(exc))  # names the image, never the server path


class SlideDziView(FileAPIView):
    """The slide's Deep Zoom descriptor (DZI XML): tile size 254, overlap 1, JPEG tiles."""

    @extend_schema(operation_id="image_slide_dzi", tags=["images"],
                   responses={(200, "application/xml"): OpenApiTypes.STR})
    def get(self, request, image_id: int):
        _, image = _slide_image_for(request, image_id)
        try:
            xml = slides.dzi_xml(image)
        except slides.SlidePathError as exc:
            raise _slide_unavailable(exc) from None
        response = HttpResponse(xml, content_type="application/xml")
        response["Cache-Control"] = "private, max-age=300"
        return response


class SlideTileView(FileAPIView):
    """One Deep Zoom tile (JPEG). 404 with a detail for a level or tile outside the pyramid."""

    @extend_schema(operation_id="image_slide_tile", tags=["images"],
                   responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    def get(self, request, image_id: int, level: int, col: int, row: int):
        _, image = _slide_image_for(request, image_id)
        try:
            found = slides.tile_bytes(image, level, col, row)
        except slides.SlidePathError as exc:
            raise _slide_unavailable(exc) from None
        if found is None:
            generator = slides.deep_zoom(image).generator
            if not 0 <= level < generator.level_count:
                raise NotFound(f"No Deep Zoom level {level}: this slide has levels 0 to {generator.level_count - 1}.")
            cols, rows = generator.level_tiles[level]
            raise NotFound(f"No tile ({col}, {row}) at level {level}: it has {cols} x {rows} tiles "
                           f"(columns 0 to {cols - 1}, rows 0 to {rows - 1}).")
        content, etag = found
        if etag in (request.headers.get("If-None-Match") or ""):
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(content, content_type="image/jpeg")
        response["ETag"] = etag
        response["Cache-Control"] = f"private, max-age={TILE_MAX_AGE}"
        return response


def _int_param(params, name: str, default: int | None = None, low: int | None = None, high: int | None = None) -> int:
    value = params.get(name)
    if value in (None, ""):
        if default is None:
            raise ValidationError({name: "required"})
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationError({name: f"must be an integer, got {value!r}"}) from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValidationError({name: f"must be between {low} and {high}, got {number}"})
    return number


def _box(params, image) -> tuple[int, int, int, int] | None:
    """The level-0 box x0, y0, x1, y1 (x1, y1 exclusive) clipped to the image; None when none is given."""
    names = ("x0", "y0", "x1", "y1")
    given = [name for name in names if params.get(name) not in (None, "")]
    if not given:
        return None
    if len(given) < 4:
        missing = ", ".join(name for name in names if name not in given)
        raise ValidationError({missing.split(",")[0]: f"a box needs x0, y0, x1 and y1; missing {missing}"})
    x0, y0, x1, y1 = (_int_param(params, name) for name in names)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(image.width, x1), min(image.height, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValidationError({"x1": f"the box is empty inside the {image.width} x {image.height} image"})
    return x0, y0, x1, y1


REGION_PARAMETERS = [OpenApiParameter(name, int, description="level-0 box (x1, y1 exclusive)")
                     for name in ("x0", "y0", "x1", "y1")]


def region_response(request, project, image) -> HttpResponse:
    """The nuclei of ``image`` in the box of the query (``api-image-nuclei`` with x0..y1, or any slide)."""
    params = request.query_params
    box = _box(params, image) or (0, 0, image.width, image.height)
    label_set = queries.get_label_set(project, params.get("label_set"))
    limit = _int_param(params, "limit", slide_queries.REGION_LIMIT, 1, slide_queries.REGION_LIMIT)
    content = slide_queries.region_nuclei_json(project, image, box, _source(request), label_set, limit)
    return HttpResponse(content, content_type="application/json")


class ImageDensityView(FileAPIView):
    """Nuclei per grid cell (by centroid) for the zoomed-out heatmap: ``cell`` level-0 pixels a side
    (default: a power of two giving at most 256 cells along the longer side), optionally in a box."""

    # Before, none was declared, and the FileAPIView refused the view's own cell and box as unknown.
    query_parameters = [OpenApiParameter("cell", int, description="cell side in level-0 pixels (16-65536)"),
                        *REGION_PARAMETERS]

    @extend_schema(operation_id="image_density", tags=["images"], parameters=query_parameters,
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, image_id: int):
        _, image = queries.get_image_for(request.user, image_id)
        params = request.query_params
        cell = _int_param(params, "cell", slide_queries.default_cell(image), 16, 65536)
        box = _box(params, image)
        area = box or (0, 0, image.width, image.height)
        _, _, cols, rows = slide_queries.density_grid(cell, area)
        if cols * rows > slide_queries.DENSITY_MAX_GRID:
            raise ValidationError({"cell": f"{cell} px cells make a grid of {cols:,} x {rows:,} over this "
                                           f"{'box' if box else 'image'}, over {slide_queries.DENSITY_MAX_GRID:,} "
                                           f"cells: use cells of {slide_queries.smallest_density_cell(area)} px "
                                           "or more, or a smaller box"})
        return HttpResponse(slide_queries.density_json(image, cell, box), content_type="application/json")

