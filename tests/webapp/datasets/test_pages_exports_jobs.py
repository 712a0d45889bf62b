"""The pages link the exports (every label set, every source), and job pages say where a job belongs."""

import re

import pytest

from tests.webapp.viewer_project import add_predictions
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def options(html: str, form_id: str, name: str) -> list[str]:
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S).group(0)
    select = re.search(rf'<select name="{name}">(.*?)</select>', form, re.S).group(1)
    return re.findall(r'<option value="([^"]*)"', select)


def test_dataset_page_exports_coco_and_geojson_in_every_label_set_and_from_predictions(client, viewer_project,
                                                                                         member):
    vp = viewer_project
    client.force_login(member)
    url = f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/"
    html = client.get(url).content.decode()
    assert options(html, "dataset-export", "label_set") == ["alpha-types", "beta-types"]
    assert 'value="alpha-types" selected' in html  # the dataset's own label set first chosen
    assert options(html, "dataset-export", "source") == ["current", "ground_truth", "review"]
    assert f'action="/api/datasets/{vp.alpha.pk}/export/detections.geojson"' in html
    assert f'formaction="/api/datasets/{vp.alpha.pk}/export/coco.zip"' in html

    add_predictions(vp)  # the prediction source is offered once there are predictions
    html = client.get(url).content.decode()
    assert options(html, "dataset-export", "source") == ["current", "ground_truth", "review", "prediction"]


def test_viewer_links_the_images_detections_and_its_predictions(client, viewer_project, member):
    vp = viewer_project
    client.force_login(member)
    url = f"/projects/{vp.project.pk}/images/{vp.image.pk}/"
    base = f"/api/datasets/{vp.alpha.pk}/export/detections.geojson?image={vp.image.name}&amp;label_set="
    html = client.get(url).content.decode()
    assert f'href="{base}alpha-types"' in html and f'href="{base}beta-types"' in html
    assert "source=prediction" not in html
    add_predictions(vp)
    html = client.get(url).content.decode()
    assert f'href="{base}beta-types&amp;source=prediction"' in html


def test_project_page_exports_geojson_and_shows_the_upload_layouts(client, viewer_project, owner):
    vp = viewer_project
    client.force_login(owner)
    html = client.get(f"/projects/{vp.project.pk}/").content.decode()
    assert f'action="/api/projects/{vp.project.pk}/export/detections.geojson"' in html
    assert options(html, "project-export", "label_set") == ["alpha-types", "beta-types"]
    assert f'href="/api/projects/{vp.project.pk}/export/merged.csv?bom=yes"' in html
    assert re.search(r'<select name="format" required>\s*<option value="auto">', html)  # auto is the default
    for format in ("seed", "hovernet", "coco", "geojson", "pannuke"):
        assert f'<div data-layout="{format}" hidden>' in html
        assert f'href="/api/formats/{format}/example.zip"' in html
    assert "masks/tile_0000.npy" in html and "Labels/tile_0000.mat" in html


def test_job_page_has_breadcrumb_project_link_and_parameters(client, viewer_project, owner, member):
    vp = viewer_project
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=vp.project, created_by=owner,
                             params={"name": "tiles", "format": "auto", "label_set": None, "labelled": True,
                                     "provenance": "", "staging": "staging/abc123", "archive": True})
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=vp.project, created_by=owner,
                                  params={"options": {"epochs": 2, "stages": [1, 2]}, "reason": "manual"})
    client.force_login(member)
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    crumbs = re.search(r'<nav class="crumbs" aria-label="breadcrumbs">(.*?)</nav>', html, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', crumbs) == ["/", f"/projects/{vp.project.pk}/"]
    assert "Colon merge" in crumbs and f"Job {job.pk}" in crumbs
    parameters = dict(re.findall(r'<tr><th scope="row">(.*?)</th><td>(.*?)</td></tr>', html))
    assert parameters == {"name": "tiles", "format": "auto", "label set": "—", "labelled": "yes",
                          "provenance": "—", "archive": "yes"}
    assert "staging/abc123" not in html  # a server folder is not shown
    html = client.get(f"/jobs/{training.pk}/").content.decode()
    parameters = dict(re.findall(r'<tr><th scope="row">(.*?)</th><td>(.*?)</td></tr>', html))
    assert parameters == {"options": "epochs: 2, stages: 1, 2", "reason": "manual"}


def test_home_recent_jobs_have_a_project_column(client, viewer_project, owner):
    vp = viewer_project
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=vp.project, created_by=owner)
    client.force_login(owner)
    html = client.get("/").content.decode()
    table = re.search(r'<section class="card" id="jobs">.*?</section>', html, re.S).group(0)
    assert "<th>Project</th>" in table
    row = re.search(rf'<tr><td><a href="/jobs/{job.pk}/">.*?</tr>', table, re.S).group(0)
    assert f'<td data-column="project"><a href="/projects/{vp.project.pk}/">Colon merge</a></td>' in row
    # The project page's own table needs no project column.
    project_html = client.get(f"/projects/{vp.project.pk}/").content.decode()
    assert "<th>Project</th>" not in project_html
