"""The slide viewer's API: Deep Zoom descriptor and tiles, nuclei by region, density, and who may call them."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from django.test import Client
from PIL import Image as PILImage

from mlcore.slides import open_slide
from tests.webapp.slide_world import ALPHA_CLASSES, BETA_CLASSES, build_slide_world
from webapp.datasets import slides
from webapp.datasets.models import Image, Nucleus
from webapp.projects.models import Role
from webapp.projects.operations import do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.DATA_DIR = tmp_path / "data"  # the tile cache: this test's own
    slides.forget_open_slides()
    return build_slide_world(owner)


@pytest.fixture
def api(api_client_for, owner):
    return api_client_for(owner)


def dz_level_count(world) -> int:
    return slides.deep_zoom(world.image).generator.level_count


# ------------------------------------------------------------------------------------------ deep zoom

def test_dzi_describes_the_slide(world, api):
    response = api.get(f"/api/images/{world.image.pk}/slide.dzi")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    size = root.find("{*}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (world.pixels.shape[1], world.pixels.shape[0])
    assert (root.get("TileSize"), root.get("Overlap"), root.get("Format")) == ("254", "1", "jpeg")


def test_a_tile_is_the_slide_region_it_covers(world, api, settings):
    generator = slides.deep_zoom(world.image).generator
    top = generator.level_count - 1
    (x, y), slide_level, (w, h) = generator.get_tile_coordinates(top, (1, 1))
    response = api.get(f"/api/images/{world.image.pk}/slide_files/{top}/1_1.jpeg")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    tile = np.asarray(PILImage.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    with open_slide(world.path) as slide:
        expected = slide.read_region(slide_level, x, y, w, h).astype(int)
    assert tile.shape == expected.shape == (256, 256, 3)  # 254 + one pixel of overlap on each side
    assert np.abs(tile - expected).mean() < 4  # JPEG at quality 80
    # Level 0 pixels too: the tile starts one pixel before column 254.
    assert (x, y) == (253, 253)
    assert np.abs(tile - world.pixels[253:253 + h, 253:253 + w].astype(int)).mean() < 4
    assert "private" in response["Cache-Control"] and "max-age" in response["Cache-Control"]

    # Cached as a file; the second answer is the same bytes, and a known ETag answers 304.
    cached = list((Path(settings.DATA_DIR) / slides.TILE_CACHE_DIR / str(world.image.pk)).rglob("1_1.jpeg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    again = api.get(f"/api/images/{world.image.pk}/slide_files/{top}/1_1.jpeg")
    assert again.content == response.content and again["ETag"] == response["ETag"]
    assert api.get(f"/api/images/{world.image.pk}/slide_files/{top}/1_1.jpeg",
                   HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_a_zoomed_out_tile_shows_the_whole_slide(world, api):
    # The lowest levels hold the whole slide in one tile of at most 254 px.
    response = api.get(f"/api/images/{world.image.pk}/slide_files/7/0_0.jpeg")
    tile = PILImage.open(io.BytesIO(response.content))
    height, width = world.pixels.shape[:2]
    assert tile.size == (width // 8, height // 8)  # level 7 of 0-10 is an eighth of 1024 x 768


def test_tiles_outside_the_pyramid_are_404_with_a_detail(world, api):
    levels = dz_level_count(world)
    response = api.get(f"/api/images/{world.image.pk}/slide_files/{levels}/0_0.jpeg")
    assert response.status_code == 404 and f"levels 0 to {levels - 1}" in response.json()["detail"]
    response = api.get(f"/api/images/{world.image.pk}/slide_files/{levels - 1}/40_0.jpeg")
    assert response.status_code == 404 and "No tile (40, 0)" in response.json()["detail"]


def test_a_tile_image_has_no_deep_zoom(world, api):
    world.image.slide_file = ""
    world.image.save(update_fields=["slide_file"])
    response = api.get(f"/api/images/{world.image.pk}/slide.dzi", HTTP_ACCEPT="application/json")
    assert response.status_code == 404 and "not a whole-slide image" in response.json()["detail"]


def test_a_missing_slide_file_is_a_404_naming_the_image_not_the_path(world, api):
    world.path.unlink()
    response = api.get(f"/api/images/{world.image.pk}/slide.dzi", HTTP_ACCEPT="application/json")
    detail = response.json()["detail"]
    assert response.status_code == 404 and "slide-1.tif" in detail and str(world.path.parent) not in detail


def test_slide_path_stays_inside_its_root(world, settings, tmp_path):
    assert slides.slide_path(world.image) == world.path.resolve()
    outside = tmp_path / "outside.tif"
    outside.write_bytes(b"x")
    for bad in ("../outside.tif", str(outside), "slides/../../outside.tif"):
        world.image.slide_file = bad
        with pytest.raises(slides.SlidePathError) as refused:
            slides.slide_path(world.image)
        assert str(tmp_path) not in str(refused.value)
    link = Path(settings.MEDIA_ROOT) / "slides" / "link.tif"
    link.symlink_to(outside)
    world.image.slide_file = "slides/link.tif"
    with pytest.raises(slides.SlidePathError, match="outside"):
        slides.slide_path(world.image)
    world.image.slide_file, world.image.slide_root = "x.tif", "slides"
    settings.SLIDES_ROOT = None
    with pytest.raises(slides.SlidePathError, match="SLIDES_ROOT"):
        slides.slide_path(world.image)
    settings.SLIDES_ROOT = tmp_path / "share"
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "x.tif").write_bytes(b"x")
    assert slides.slide_path(world.image) == (tmp_path / "share" / "x.tif").resolve()


def test_the_tile_cache_keeps_under_its_cap(world, api, settings):
    settings.SLIDE_TILE_CACHE_BYTES = 40_000
    top = dz_level_count(world) - 1
    for col in range(4):
        for row in range(3):
            assert api.get(f"/api/images/{world.image.pk}/slide_files/{top}/{col}_{row}.jpeg").status_code == 200
    assert slides.tile_cache.size() > 40_000
    removed = slides.tile_cache.prune()
    assert removed > 0 and 0 < slides.tile_cache.size() <= 40_000 * 0.8
    slides.remove_cached_tiles(world.image.pk)
    assert slides.tile_cache.size() == 0


# ------------------------------------------------------------------------------------------ region

def nuclei_in(image, box):
    x0, y0, x1, y1 = box
    return set(Nucleus.objects.filter(image=image, x0__lt=x1, x1__gt=x0, y0__lt=y1, y1__gt=y0)
               .values_list("id", flat=True))


@pytest.mark.parametrize("box", [(300, 200, 700, 500), (0, 0, 64, 64), (880, 600, 1024, 768), (0, 0, 1024, 768)])
def test_region_returns_exactly_the_nuclei_meeting_the_box(world, api, box):
    response = api.get(f"/api/images/{world.image.pk}/nuclei/", dict(zip(("x0", "y0", "x1", "y1"), box)))
    assert response.status_code == 200
    data = response.json()
    expected = nuclei_in(world.image, box)
    assert {n["id"] for n in data["nuclei"]} == expected and data["count"] == len(expected) > 0
    assert data["truncated"] is False and data["box"] == list(box)
    for n in data["nuclei"]:
        x0, y0, x1, y1 = n["bbox"]
        assert x0 < box[2] and x1 > box[0] and y0 < box[3] and y1 > box[1]
        assert n["outline"]  # as stored (a sliver cut by a tile border may have two points)


def test_region_gives_every_label_sets_class_for_the_source(world, api):
    box = (0, 0, 512, 384)
    data = api.get(f"/api/images/{world.image.pk}/nuclei/", {"x0": 0, "y0": 0, "x1": 512, "y1": 384}).json()
    alpha, beta = str(world.alpha.pk), str(world.beta.pk)
    assert {ls["name"] for ls in data["label_sets"]} == {"alpha-types", "beta-types"}
    assert len(data["nuclei"]) == len(nuclei_in(world.image, box))
    for n in data["nuclei"]:
        truth = world.truth[n["id"]]
        name, color = ALPHA_CLASSES[truth]
        assert n["classes"][alpha] == {"index": truth, "name": name, "color": color}
        if n["id"] in world.beta_reviews:
            index = world.beta_reviews[n["id"]]
            assert n["classes"][beta] == {"index": index, "name": BETA_CLASSES[index][0], "color": BETA_CLASSES[index][1]}
            assert n["labels"][beta]["source"] == "review"
        else:
            assert beta not in n["classes"]
        assert n["labels"][alpha] == {"class": truth, "source": "ground_truth", "ground_truth": truth, "review": None}

    # From the review source only the reviewed nuclei have a class, only in beta; one label set if asked.
    data = api.get(f"/api/images/{world.image.pk}/nuclei/",
                   {"x0": 0, "y0": 0, "x1": 512, "y1": 384, "source": "review", "label_set": "beta-types"}).json()
    assert data["source"] == "review" and data["label_set"] == world.beta.pk
    for n in data["nuclei"]:
        assert set(n["classes"]) == ({beta} if n["id"] in world.beta_reviews else set())
        assert set(n["labels"]) >= {alpha}  # the hover still has every label set


def test_region_is_capped_and_says_so(world, api):
    params = {"x0": 0, "y0": 0, "x1": 1024, "y1": 768}
    total = world.image.nucleus_count
    data = api.get(f"/api/images/{world.image.pk}/nuclei/", {**params, "limit": 7}).json()
    assert data["count"] == 7 and data["truncated"] is True and data["limit"] == 7
    ys = [n["bbox"][1] for n in data["nuclei"]]
    assert ys == sorted(ys)  # the first ones from the top
    data = api.get(f"/api/images/{world.image.pk}/nuclei/", params).json()
    assert data["count"] == total and data["truncated"] is False and data["limit"] == 5000


def test_region_refuses_bad_boxes(world, api):
    url = f"/api/images/{world.image.pk}/nuclei/"
    assert "x1" in api.get(url, {"x0": 0, "y0": 0}).json()["errors"]
    assert "x0" in api.get(url, {"x0": "a", "y0": 0, "x1": 5, "y1": 5}).json()["errors"]
    assert api.get(url, {"x0": 2000, "y0": 0, "x1": 3000, "y1": 5}).status_code == 400
    assert api.get(url, {"x0": 0, "y0": 0, "x1": 5, "y1": 5, "source": "nope"}).status_code == 400
    assert api.get(url, {"x0": 0, "y0": 0, "x1": 5, "y1": 5, "limit": 6000}).status_code == 400
    assert api.get(url, {"x0": 0, "y0": 0, "x1": 5, "y1": 5, "label_set": "nope"}).status_code == 400


def test_a_slide_without_a_box_gets_its_first_nuclei_not_all(world, api):
    data = api.get(f"/api/images/{world.image.pk}/nuclei/").json()
    assert data["box"] == [0, 0, 1024, 768] and data["count"] == world.image.nucleus_count


# ------------------------------------------------------------------------------------------ density

def test_density_counts_sum_to_the_nuclei(world, api):
    data = api.get(f"/api/images/{world.image.pk}/density/").json()
    assert data["cell"] == 64 and (data["cols"], data["rows"]) == (16, 12) and data["origin"] == [0, 0]
    assert len(data["counts"]) == 16 * 12
    assert sum(data["counts"]) == data["total"] == world.image.nucleus_count
    assert data["max"] == max(data["counts"])
    # Each nucleus counts in the cell of its centroid.
    data = api.get(f"/api/images/{world.image.pk}/density/", {"cell": 256}).json()
    expected = [0] * (4 * 3)
    for cx, cy in Nucleus.objects.filter(image=world.image).values_list("centroid_x", "centroid_y"):
        expected[int(cy // 256) * 4 + int(cx // 256)] += 1
    assert (data["cols"], data["rows"]) == (4, 3) and data["counts"] == expected


def test_density_in_a_box(world, api):
    data = api.get(f"/api/images/{world.image.pk}/density/",
                   {"cell": 64, "x0": 256, "y0": 0, "x1": 512, "y1": 256}).json()
    inside = Nucleus.objects.filter(image=world.image, centroid_x__gte=256, centroid_x__lt=512,
                                    centroid_y__gte=0, centroid_y__lt=256).count()
    assert data["total"] == sum(data["counts"]) == inside > 0
    assert data["origin"] == [4, 0] and (data["cols"], data["rows"]) == (4, 4)
    assert api.get(f"/api/images/{world.image.pk}/density/", {"cell": 4}).status_code == 400


# ------------------------------------------------------------------------------------------ access

def slide_urls(image_id: int) -> list[str]:
    return [f"/api/images/{image_id}/slide.dzi", f"/api/images/{image_id}/slide_files/10/0_0.jpeg",
            f"/api/images/{image_id}/nuclei/?x0=0&y0=0&x1=100&y1=100", f"/api/images/{image_id}/density/"]


def test_members_may_view_a_slide_and_outsiders_are_told_nothing(world, make_user, api_client_for, owner):
    viewer, outsider = make_user("viewer"), make_user("outsider")
    do_set_membership(world.project, viewer, Role.VIEWER, actor=owner)
    for url in slide_urls(world.image.pk):
        for user in (owner, viewer):
            assert api_client_for(user).get(url).status_code == 200, url
        refused = api_client_for(outsider).get(url, HTTP_ACCEPT="application/json")
        assert refused.status_code == 404 and refused.json()["detail"], url
        anonymous = api_client_for(None).get(url, HTTP_ACCEPT="application/json")
        assert anonymous.status_code in (401, 403), url


def test_the_slide_page_and_links(world, make_user, owner):
    client = Client()
    client.force_login(owner)
    page = client.get(f"/images/{world.image.pk}/slide/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/api/images/{world.image.pk}/slide.dzi" in html and "openseadragon.min.js" in html
    assert "<script>" not in html and "style=" not in html
    # The tile viewer of a slide sends to the slide viewer, keeping the choice of label set.
    redirect = client.get(f"/projects/{world.project.pk}/images/{world.image.pk}/?label_set=3")
    assert redirect.status_code == 302 and redirect["Location"] == f"/images/{world.image.pk}/slide/?label_set=3"
    # The dataset page links the slide viewer.
    listing = client.get(f"/projects/{world.project.pk}/datasets/{world.dataset.pk}/").content.decode()
    assert f'href="/images/{world.image.pk}/slide/"' in listing
    outsider = Client()
    outsider.force_login(make_user("outsider"))
    assert outsider.get(f"/images/{world.image.pk}/slide/").status_code == 404


def test_the_slide_page_of_a_tile_image_sends_to_the_image_viewer(world, owner):
    Image.objects.filter(pk=world.image.pk).update(slide_file="")
    client = Client()
    client.force_login(owner)
    response = client.get(f"/images/{world.image.pk}/slide/")
    assert response.status_code == 302 and response["Location"] == f"/projects/{world.project.pk}/images/{world.image.pk}/"


def test_a_density_grid_is_bounded_whatever_its_box_and_only_the_whole_slides_is_cached(world, api):
    """A viewer's box over a whole 100,000 x 80,000 slide at 16 px cells asked for 31 million cells: 2.9 GB in the
    web process and 62 MB left in Redis (which the job queue shares), a new key for every box."""
    from django.core.cache import cache

    from webapp.datasets.slide_queries import DENSITY_MAX_GRID

    Image.objects.filter(pk=world.image.pk).update(width=100_000, height=80_000)
    url = f"/api/images/{world.image.pk}/density/"
    refused = api.get(url, {"cell": 16, "x0": 0, "y0": 0, "x1": 100_000, "y1": 79_999})
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("cell: 16 px cells make a grid of 6,250 x 5,000 over this box, over "
                                        f"{DENSITY_MAX_GRID:,} cells: use cells of 128 px or more, or a smaller box")
    assert api.get(url, {"cell": 16}).status_code == 400   # the whole slide, no box: the same bound
    key = f"slide-density:{world.image.pk}:{world.image.nucleus_count}:128"
    cache.delete(key)
    boxed = api.get(url, {"cell": 128, "x0": 0, "y0": 0, "x1": 100_000, "y1": 79_999})
    assert boxed.status_code == 200 and boxed.json()["cols"] * boxed.json()["rows"] <= DENSITY_MAX_GRID
    assert cache.get(key) is None   # a box's grid is not kept
    whole = api.get(url, {"cell": 128})
    assert whole.status_code == 200 and whole.json()["total"] == world.image.nucleus_count
    assert cache.get(key) == whole.content.decode()
