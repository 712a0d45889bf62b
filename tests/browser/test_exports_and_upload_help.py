"""Exports and upload help as a user meets them in Chromium: a QuPath GeoJSON downloaded from the project
page and checked against QuPath's import rules and the database; the upload form's layout per format, its
example archive, and the format an "auto" import found."""

import io
import json
import zipfile

import pytest

from tests.browser.conftest import wait_until
from tests.qupath_geojson import check_qupath_feature_collection, covered_area
from tests.webapp.viewer_project import BETA_CLASSES, add_predictions, build_viewer_project, prediction_disagreement
from webapp.datasets import export
from webapp.datasets.models import LabelClass, Nucleus
from webapp.jobs.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_project_page_downloads_qupath_detections_of_the_predictions(logged_in_page, live_server, owner,
                                                                      media_root, tmp_path):
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=8, size=96)
    expected = add_predictions(vp)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{vp.project.pk}/")
    page.select_option("#project-export select[name=label_set]", "beta-types")
    page.select_option("#project-export select[name=source]", "prediction")
    with page.expect_download() as download_info:
        page.click("#project-export button[data-export=geojson]")
    download = download_info.value
    assert download.suggested_filename == "Colon_merge-beta-types-prediction.geojson"
    collection = json.loads(open(download.path(), "rb").read())

    assert check_qupath_feature_collection(collection, "detection") == []
    features = collection["features"]
    nuclei = {n.pk: n for n in Nucleus.objects.filter(image__project=vp.project)}
    assert sorted(f["properties"]["nucleus_id"] for f in features) == sorted(nuclei)
    colors = {c.name: [int(c.color[i:i + 2], 16) for i in (1, 3, 5)]
              for c in LabelClass.objects.filter(label_set=vp.beta_set)}
    predicted = 0
    for feature in features:
        pk = feature["properties"]["nucleus_id"]
        geometry = feature["geometry"]  # the nucleus's exact shape: its rings cover its pixels
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        assert all(ring[0] == ring[-1] for polygon in polygons for ring in polygon)
        assert covered_area(geometry) == nuclei[pk].area
        if (pk, vp.beta_set.pk) in expected:
            predicted += 1
            index, probability = expected[pk, vp.beta_set.pk]
            name = BETA_CLASSES[index]
            assert feature["properties"]["classification"] == {"name": name, "color": colors[name]}
            measurements = feature["properties"]["measurements"]
            assert measurements[export.MEASUREMENT_PROBABILITY] == pytest.approx(probability)
            assert measurements[export.MEASUREMENT_DISAGREEMENT] == pytest.approx(
                prediction_disagreement(nuclei[pk].instance_id))
        else:
            assert "classification" not in feature["properties"]
    assert predicted == vp.image.nucleus_count > 0


def layout_shown(page) -> list[str]:
    return page.eval_on_selector_all("#format-help [data-layout]",
                                     "els => els.filter(e => !e.hidden).map(e => e.dataset.layout)")


def test_upload_form_shows_the_layout_of_the_chosen_format_and_its_example(logged_in_page, live_server, owner,
                                                                          media_root):
    from webapp.projects.operations import do_create_project

    project = do_create_project("Uploads", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.input_value("#upload-form select[name=format]") == "auto"
    assert layout_shown(page) == ["auto"]
    assert "tells the format from the archive" in page.inner_text("#format-help")

    page.select_option("#upload-form select[name=format]", "hovernet")
    assert layout_shown(page) == ["hovernet"]
    tree = page.inner_text("#format-help [data-layout=hovernet] pre")
    assert "Labels/tile_0000.mat" in tree and "masks/" not in tree
    page.select_option("#upload-form select[name=format]", "seed")
    assert layout_shown(page) == ["seed"]
    assert "masks/tile_0000.npy" in page.inner_text("#format-help [data-layout=seed] pre")

    with page.expect_download() as download_info:
        page.click("#format-help [data-layout=seed] a[data-role=example]")
    download = download_info.value
    assert download.suggested_filename == "example-seed.zip"
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as archive:
        names = archive.namelist()
    assert "example-seed/masks/tile_0000.npy" in names and "example-seed/classes.json" in names

    # A finished "auto" import says which format it found.
    job = Job.objects.create(kind=Job.Kind.IMPORT, created_by=owner, project=project,
                             params={"name": "tiles", "format": "auto"})

    def answer(route):
        route.fulfill(status=202, content_type="application/json", body=json.dumps(
            {"job": {"id": job.pk, "url": f"{live_server.url}/api/jobs/{job.pk}/", "state": "queued"}}))

    page.route(f"**/api/projects/{project.pk}/datasets/", answer)
    page.select_option("#upload-form select[name=format]", "auto")
    page.fill("#upload-form input[name=name]", "tiles")
    page.set_input_files("#upload-form input[name=archive]",
                         files=[{"name": "tiles.zip", "mimeType": "application/zip", "buffer": b"PK\x05\x06" + bytes(18)}])
    page.click("#upload-form button[type=submit]")
    page.locator("#upload-job").wait_for(state="visible")
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED, progress={"percent": 100}, result={
        "dataset_id": 5, "dataset": "tiles", "images": 2, "nuclei": 12, "format": "coco", "format_detected": True,
        "left_out": {"covered": 2, "outside": 1}})
    line = page.locator("#upload-job [data-field=format]")
    line.wait_for(state="visible")
    assert line.inner_text() == "Format detected from the files: coco."
    # The annotations that kept no pixel are counted on the card (the job's log says why and where).
    assert "3 of the files' nuclei left out, as the log below says" in page.inner_text("#upload-job [data-field=done]")
    wait_until(page, "document.querySelector('#upload-form select[name=format]').value === 'auto'")
    assert layout_shown(page) == ["auto"]
