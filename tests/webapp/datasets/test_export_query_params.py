"""An export or the review queue asked with a query parameter it does not read is a 400 naming it: a script's
``sources=prediction`` exported the current labels (ground truth) under a file name that looked right, and
``labelset=`` handed out nuclei of the first label set. The pages' own links and forms still go through."""

import pytest

pytestmark = pytest.mark.django_db


def refused(response, name: str) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"unknown query parameter(s) ['{name}']; allowed: ")


def test_exports_refuse_a_parameter_they_do_not_read(api_client_for, viewer_project, member):
    vp, client = viewer_project, api_client_for(member)
    refused(client.get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip?label_set=alpha-types&sources=prediction"),
            "sources")
    refused(client.get(f"/api/projects/{vp.project.pk}/export/detections.geojson?labelset=alpha-types"), "labelset")
    refused(client.get(f"/api/images/{vp.image.pk}/export/types.npy?source=review&label=alpha-types"), "label")
    refused(client.get(f"/api/projects/{vp.project.pk}/export/merged.csv?excel=yes"), "excel")


def test_the_dataset_pages_export_form_still_exports(api_client_for, viewer_project, member):
    # One form, two buttons: its COCO outline choice goes to the GeoJSON export too.
    vp, client = viewer_project, api_client_for(member)
    fields = "label_set=alpha-types&source=current&segmentation=polygon"
    assert client.get(f"/api/datasets/{vp.alpha.pk}/export/detections.geojson?{fields}").status_code == 200
    assert client.get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip?{fields}").status_code == 200
    assert client.get(f"/api/projects/{vp.project.pk}/export/merged.csv?bom=yes").status_code == 200


def test_the_review_queue_refuses_a_misspelt_label_set(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    refused(client.get(f"/api/projects/{rp.project.pk}/review/next/?labelset=breast"), "labelset")
    assert client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast&strategy=margin&exclude=1"
                      "&include_labelled=1").status_code in (200, 204)
