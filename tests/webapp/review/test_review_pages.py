"""The review pages (queue, gallery, agreement, nucleus) and the PNG crops behind them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from webapp.datasets.importing import load_rgb
from webapp.datasets.models import Image, Nucleus

pytestmark = pytest.mark.django_db


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "image/png"
    return np.asarray(PILImage.open(io.BytesIO(response.content)).convert("RGB"))


def test_region_crop_is_the_image_region_for_members_only(rp, users, api_client_for):
    image = Image.objects.filter(project=rp.project).order_by("id").first()
    client = api_client_for(users["viewer"])
    pixels = png(client.get(f"/api/images/{image.pk}/region.png?x0=10&y0=20&x1=74&y1=52"))
    assert pixels.shape == (32, 64, 3)
    assert np.array_equal(pixels, load_rgb(image)[20:52, 10:74])
    doubled = png(client.get(f"/api/images/{image.pk}/region.png?x0=10&y0=20&x1=74&y1=52&scale=2"))
    assert doubled.shape == (64, 128, 3)
    # Clipped to the image; no region means the whole image.
    clipped = png(client.get(f"/api/images/{image.pk}/region.png?x0=-20&y0=-5&x1=40&y1=9999"))
    assert clipped.shape == (image.height, 40, 3)
    assert png(client.get(f"/api/images/{image.pk}/region.png")).shape == (image.height, image.width, 3)
    response = client.get(f"/api/images/{image.pk}/region.png")
    assert "private" in response["Cache-Control"]
    # Errors are JSON with a detail, even when the client asks for a PNG.
    for query in ("x0=50&x1=40", "x0=abc", "scale=100", "scale=x"):
        bad = client.get(f"/api/images/{image.pk}/region.png?{query}", HTTP_ACCEPT="image/png")
        assert bad.status_code == 400, query
        assert "detail" in bad.json()
    assert api_client_for(users["outsider"]).get(f"/api/images/{image.pk}/region.png").status_code == 404
    assert api_client_for(None).get(f"/api/images/{image.pk}/region.png").status_code in (401, 403)


def test_region_of_a_missing_file_is_404(rp, users, api_client_for, settings):
    from pathlib import Path

    image = Image.objects.filter(project=rp.project).order_by("id").last()
    (Path(settings.MEDIA_ROOT) / image.file).unlink()
    response = api_client_for(users["viewer"]).get(f"/api/images/{image.pk}/region.png")
    assert response.status_code == 404 and "missing" in response.json()["detail"]


def test_review_page_renders_class_keys_and_options(rp, users, client):
    client.force_login(users["reviewer"])
    response = client.get(f"/projects/{rp.project.pk}/review/?label_set=breast&strategy=margin")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="review"' in html and 'data-label-set="breast"' in html and 'data-strategy="margin"' in html
    for position, name in enumerate(["neoplastic", "connective", "dead"], start=1):
        assert f'data-class-name="{name}"' in html and f"<kbd>{position}</kbd>" in html
    assert "js/review.js" in html and "Accept" in html and "Skip" in html and "Undo" in html
    assert "has no trained model" not in html
    # Its empty state says which nuclei the order serves, and where the others are.
    assert (f"The “margin” order serves the nuclei model v{rp.version.number} predicted in breast; nuclei "
            "without a prediction") in html
    assert 'href="?label_set=breast&amp;strategy=random">random order</a>' in html
    # Defaults: the first label set, entropy.
    html = client.get(f"/projects/{rp.project.pk}/review/").content.decode()
    assert 'data-label-set="colon"' in html and 'data-strategy="entropy"' in html
    assert client.get(f"/projects/{rp.project.pk}/review/?label_set=nope").status_code == 404


def test_review_page_without_predictions_serves_random_order_or_offers_it(rp, users, client):
    rp.version.is_active = False
    rp.version.save()
    client.force_login(users["reviewer"])
    # No order chosen: the unlabelled nuclei in random order, said so (entropy would serve nothing).
    html = client.get(f"/projects/{rp.project.pk}/review/?label_set=breast").content.decode()
    assert 'data-strategy="random"' in html and 'id="random-fallback"' in html
    # An order that needs predictions, chosen: kept, with the way to random order.
    html = client.get(f"/projects/{rp.project.pk}/review/?label_set=breast&strategy=entropy").content.decode()
    assert 'data-strategy="entropy"' in html and "has no trained model" in html and "strategy=random" in html


def test_page_roles(rp, users, client):
    nucleus = Nucleus.objects.filter(image__project=rp.project).first()
    pages = {
        f"/projects/{rp.project.pk}/review/": "reviewer",
        f"/projects/{rp.project.pk}/review/gallery/": "reviewer",
        f"/projects/{rp.project.pk}/review/agreement/": "viewer",
        f"/projects/{rp.project.pk}/nuclei/{nucleus.pk}/": "viewer",
    }
    for url, needed in pages.items():
        client.force_login(users["outsider"])
        assert client.get(url).status_code == 404, url
        client.force_login(users["viewer"])
        assert client.get(url).status_code == (200 if needed == "viewer" else 403), url
        client.force_login(users["reviewer"])
        assert client.get(url).status_code == 200, url
    client.logout()
    assert client.get(f"/projects/{rp.project.pk}/review/").status_code == 302


def test_gallery_page(rp, users, client):
    client.force_login(users["reviewer"])
    html = client.get(f"/projects/{rp.project.pk}/review/gallery/?label_set=breast&class_name=dead").content.decode()
    assert 'id="gallery"' in html and 'data-class-name="dead"' in html and 'id="gallery-classes"' in html
    assert 'id="no-predictions"' not in html


def test_an_empty_gallery_says_the_model_has_no_predictions_for_the_label_set(rp, users, client):
    """It said "No unreviewed nuclei ... with these filters", as if the label set were all reviewed."""
    from webapp.datasets.models import LabelSet

    LabelSet.objects.create(project=rp.project, name="uploaded later")
    client.force_login(users["reviewer"])
    html = client.get(f"/projects/{rp.project.pk}/review/gallery/?label_set=uploaded+later").content.decode()
    assert 'id="no-predictions"' in html and "has no predictions for uploaded later" in html
    assert f"/projects/{rp.project.pk}/review/?label_set=uploaded%20later&amp;strategy=random" in html


def test_nucleus_page(rp, users, client):
    client.force_login(users["reviewer"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.breast).first()
    html = client.get(f"/projects/{rp.project.pk}/nuclei/{nucleus.pk}/").content.decode()
    assert f"/api/images/{nucleus.image_id}/region.png?" in html
    assert 'data-label-set="colon"' in html and 'data-label-set="breast"' in html
    assert 'data-label-id="' in html  # the ground-truth row of its history


def test_openapi_schema_lists_the_review_endpoints(users, client):
    client.force_login(users["owner"])
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    for path in ("/api/projects/{project_id}/review/next/", "/api/nuclei/{nucleus_id}/labels/",
                 "/api/nuclei/{nucleus_id}/labels/undo/", "/api/images/{image_id}/region.png",
                 "/api/projects/{project_id}/review/agreement/"):
        assert path in paths, path


def test_the_review_page_says_a_prediction_is_at_work(rp, users, client):
    """During a prediction the queue read "empty" over nuclei the prediction had not reached yet, with no word why."""
    from webapp.jobs.models import Job

    client.force_login(users["reviewer"])
    url = f"/projects/{rp.project.pk}/review/?label_set=breast&strategy=entropy"
    assert 'data-role="predicting"' not in client.get(url).content.decode()
    job = Job.objects.create(kind=Job.Kind.PREDICT, project=rp.project, created_by=users["owner"],
                             state=Job.State.RUNNING)
    html = client.get(url).content.decode()
    assert 'data-role="predicting"' in html and f'href="/jobs/{job.pk}/">job {job.pk}</a>' in html
