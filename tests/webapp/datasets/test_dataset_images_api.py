"""A dataset and its images in the API: a script found no image ids for the per-image exports (the round-trip
audit read them from the database)."""

from __future__ import annotations

import pytest

from webapp.datasets.models import Image

pytestmark = pytest.mark.django_db


def test_a_viewer_lists_a_datasets_images_and_fetches_their_exports(rp, users, api_client_for):
    client = api_client_for(users["viewer"])
    base = f"/api/projects/{rp.project.pk}/datasets/{rp.colon.pk}/"
    shown = client.get(base)
    assert shown.status_code == 200 and shown.json()["name"] == "colon"
    listed = client.get(f"{base}images/?page_size=1")
    assert listed.status_code == 200, listed.content
    body = listed.json()
    expected = list(Image.objects.filter(dataset=rp.colon).order_by("name").values_list("pk", "name", "nucleus_count"))
    assert body["count"] == len(expected) and len(body["results"]) == 1 and body["next"]
    first = body["results"][0]
    assert (first["id"], first["name"], first["nucleus_count"]) == expected[0]
    assert first["urls"]["geojson"] == f"http://testserver/api/images/{first['id']}/export.geojson"
    geojson = client.get(first["urls"]["geojson"], {"label_set": "colon"})
    assert geojson.status_code == 200 and len(geojson.json()["features"]) == first["nucleus_count"]
    assert set(first["urls"]) == {"geojson", "types_npy", "viewer"}
    every = client.get(f"{base}images/?page_size=500").json()["results"]
    assert [(i["id"], i["name"], i["nucleus_count"]) for i in every] == expected


def test_outsiders_and_other_projects_datasets_are_not_found(rp, users, api_client_for, owner):
    from webapp.projects.operations import do_create_project

    base = f"/api/projects/{rp.project.pk}/datasets/{rp.colon.pk}/images/"
    assert api_client_for(users["outsider"]).get(base).status_code == 404
    other = do_create_project("other", actor=owner)
    assert api_client_for(owner).get(f"/api/projects/{other.pk}/datasets/{rp.colon.pk}/images/").status_code == 404


def test_a_filter_the_lists_do_not_read_is_a_400_naming_it(rp, users, api_client_for):
    """``images/?name=a.png`` listed every image and ``members/?role=admin`` every member, as if filtered."""
    client = api_client_for(users["viewer"])
    project = f"/api/projects/{rp.project.pk}"
    for url, allowed in ((f"{project}/datasets/{rp.colon.pk}/images/?name=a.png&page_size=1",
                          "allowed: ['page', 'page_size']"),
                         (f"{project}/members/?role=admin", "this endpoint reads none"),
                         (f"{project}/versions/?number=1", "this endpoint reads none")):
        response = client.get(url)
        assert response.status_code == 400, (url, response.content)
        unknown = url.split("?")[1].split("=")[0]
        assert response.json()["detail"] == f"unknown query parameter(s) ['{unknown}']; {allowed}"
    assert client.get(f"{project}/members/?format=json").status_code == 200   # DRF's own, taken everywhere
