"""Review over a slide's nuclei: the queue hands them out, the item shows the nucleus at native resolution
read from the slide with its neighbours (a band of the region index, never the whole slide), and links to
the slide viewer opened on it; a decision is stored like a tile's."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.webapp.slide_world import build_slide_world
from webapp.datasets import slides
from webapp.datasets.models import CurrentLabel, LabelSource, Nucleus

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    slides.forget_open_slides()
    return build_slide_world(owner, tiles_x=6, tiles_y=4)  # 1536 x 1024 px


def meets(nucleus: Nucleus, box) -> bool:
    x0, y0, x1, y1 = box
    return nucleus.x1 > x0 and nucleus.x0 < x1 and nucleus.y1 > y0 and nucleus.y0 < y1


def test_a_slide_nucleus_is_reviewed_in_its_slide(world, owner, api_client_for, client):
    browser = client
    client = api_client_for(owner)
    unreviewed = {n.pk for n in Nucleus.objects.filter(image=world.image)} - set(world.beta_reviews)
    response = client.get(f"/api/projects/{world.project.pk}/review/next/",
                          {"label_set": world.beta.name, "strategy": "random"})
    assert response.status_code == 200, response.content
    item = response.json()
    nucleus = Nucleus.objects.get(pk=item["nucleus"]["id"])
    assert nucleus.pk in unreviewed and nucleus.image_id == world.image.pk

    # Neighbours: exactly the other nuclei meeting the region.
    region = item["region"]["bbox"]
    expected = {n.pk for n in Nucleus.objects.filter(image=world.image) if meets(n, region)} - {nucleus.pk}
    assert {n["id"] for n in item["neighbours"]} == expected and expected

    # The close-up and the zoomed-out context are the slide's own pixels.
    for view in ("region", "context"):
        x0, y0, x1, y1 = item[view]["bbox"]
        png = client.get(item[view]["url"])
        assert png.status_code == 200 and png["Content-Type"] == "image/png"
        pixels = np.asarray(PILImage.open(io.BytesIO(png.content)).convert("RGB"))
        if view == "region":  # native resolution
            assert np.array_equal(pixels, world.pixels[y0:y1, x0:x1])
        else:  # zoomed out: the same tissue, resampled
            expected = PILImage.fromarray(world.pixels[y0:y1, x0:x1]).resize(pixels.shape[1::-1], PILImage.BILINEAR)
            assert np.abs(pixels.astype(int) - np.asarray(expected, int)).mean() < 12
    assert item["context"]["bbox"][2] - item["context"]["bbox"][0] > region[2] - region[0]

    # "Open in the viewer" opens the slide viewer on the nucleus.
    assert item["image"]["viewer_url"] == (f"/images/{world.image.pk}/slide/?x={round(nucleus.centroid_x)}"
                                           f"&y={round(nucleus.centroid_y)}")
    browser.force_login(owner)
    page = browser.get(item["image"]["viewer_url"])
    assert page.status_code == 200 and b"slide" in page.content

    # A decision is stored as for a tile's nucleus.
    saved = client.post(f"/api/nuclei/{nucleus.pk}/labels/",
                        {"label_set": world.beta.name, "class_name": "inflammatory", "version": item["version"]},
                        format="json")
    assert saved.status_code == 201, saved.content
    current = CurrentLabel.objects.get(nucleus=nucleus, label_set=world.beta)
    assert current.class_index == 1 and current.source == LabelSource.REVIEW
