"""What the schema fuzzing found, pinned down one by one (issue 13, "API fuzzing in CI")."""

from __future__ import annotations

import pytest

from django.utils import timezone

from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion


@pytest.fixture
def owner_api(owner, api_client_for):
    return api_client_for(owner)


@pytest.fixture
def project(owner):
    return do_create_project("fuzzed", actor=owner)


@pytest.fixture
def version(project, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                       data_snapshot_at=timezone.now(), is_active=True, label_sets=[])


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/projects/x1/", "/api/projects/%10/members/", "/api/projects/1.5/datasets/"])
def test_a_project_id_that_is_not_a_number_is_no_project(owner_api, path):
    response = owner_api.get(path)
    assert response.status_code == 404  # was 500: the id went into an integer lookup
    assert response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/projects/99999999999999999999999/", "/api/jobs/99999999999999999999999/",
                                  "/api/projects/99999999999999999999999/review/undo/",
                                  "/api/nuclei/99999999999999999999999/labels/"])
def test_an_id_beyond_64_bits_is_no_object(owner_api, path):
    response = owner_api.get(path)
    assert response.status_code == 404  # was 500 on SQLite: OverflowError binding the number
    assert "ids are at most" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["label_set=%00", "strategy=a%00b", "x%00=1"])
def test_a_nul_character_in_the_query_string_is_a_400_with_a_detail(project, owner_api, query):
    response = owner_api.get(f"/api/projects/{project.pk}/review/next/?{query}")
    assert response.status_code == 400  # was 500: PostgreSQL refuses text with NUL
    assert "NUL" in response.json()["detail"]


@pytest.mark.django_db
def test_a_nul_character_on_a_page_is_a_plain_400(project, client, owner):
    client.force_login(owner)
    response = client.get(f"/projects/{project.pk}/?tab=%00")
    assert response.status_code == 400


@pytest.mark.django_db
def test_a_missing_checkpoint_file_is_a_404_with_a_detail(version, owner_api):
    response = owner_api.get(f"/api/projects/{version.project_id}/versions/1/checkpoint/")
    assert response.status_code == 404  # was 500: FileNotFoundError
    assert "checkpoint file of version 1 is missing" in response.json()["detail"]
    assert "/" not in response.json()["detail"].split("missing")[0]  # no server path


@pytest.mark.django_db
def test_a_checkpoint_is_served_as_octet_stream(version, owner_api, settings):
    (settings.MEDIA_ROOT / "models").mkdir()
    (settings.MEDIA_ROOT / version.checkpoint_file).write_bytes(b"weights")
    response = owner_api.get(f"/api/projects/{version.project_id}/versions/1/checkpoint/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"  # was guessed from ".pt"
    assert b"".join(response.streaming_content) == b"weights"


@pytest.mark.django_db
def test_an_export_error_asked_for_as_a_file_is_labelled_json(owner_api):
    response = owner_api.get("/api/datasets/999999/export/coco.zip?format=file")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"  # was "*/*"
    assert response.json()["detail"]


@pytest.mark.django_db
def test_list_actions_answer_what_the_schema_says(project, owner_api, client, owner):
    client.force_login(owner)
    schema = client.get("/api/schema/?format=json").json()
    members = schema["paths"]["/api/projects/{id}/members/"]["get"]["responses"]["200"]
    datasets = schema["paths"]["/api/projects/{id}/datasets/"]["get"]["responses"]["200"]
    for documented in (members, datasets):
        assert documented["content"]["application/json"]["schema"]["type"] == "array"  # was a paginated object
    assert isinstance(owner_api.get(f"/api/projects/{project.pk}/members/").json(), list)
    detail = schema["components"]["schemas"]["ProjectDetail"]["properties"]["label_sets"]["items"]
    assert detail == {"$ref": "#/components/schemas/ProjectLabelSet"}  # was the review API's "LabelSet"
    assert schema["components"]["schemas"]["ModelVersion"]["properties"]["parent"].get("nullable") is True
    accepted = schema["paths"]["/api/projects/{project_id}/train/"]["post"]["responses"]["202"]
    assert accepted["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobAccepted"}


@pytest.mark.django_db
def test_every_operation_documents_its_json_errors_and_path_converters(client, owner):
    client.force_login(owner)
    schema = client.get("/api/schema/?format=json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for code in ("400", "401", "403", "404", "409", "429", "503"):
                assert code in operation["responses"], (method, path, code)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["schema"]["type"] == "integer":
                    assert parameter["schema"]["minimum"] == 0, (path, parameter["name"])


@pytest.mark.django_db
def test_a_gallery_page_past_any_real_offset_is_a_400(project, owner_api, version):
    from webapp.datasets.models import LabelSet

    LabelSet.objects.create(project=project, name="colon")
    response = owner_api.get(f"/api/projects/{project.pk}/review/gallery/?page=1582369852089901776896")
    assert response.status_code == 400  # was 500: OFFSET out of the 64-bit range
    assert "page" in response.json()["detail"]


def test_an_infinite_region_coordinate_is_a_validation_error():
    from rest_framework.exceptions import ValidationError

    from webapp.review.api import _int_param

    with pytest.raises(ValidationError, match="x0"):
        _int_param({"x0": "inf"}, "x0", 0)  # was OverflowError: a 500 on /api/images/{id}/region.png
    assert _int_param({"x0": "12.7"}, "x0", 0) == 12


@pytest.mark.django_db
def test_json_nested_too_deeply_is_a_400_everywhere(project, owner_api):
    """'[' * 100000 made Python's json module raise RecursionError, which DRF's parser let through: a 500 and a
    logged traceback per request, from any logged-in user."""
    from tests.conftest import ROOT

    body = "[" * 100_000 + "]" * 100_000
    for method, url in (("post", "/api/projects/"), ("put", "/api/review/keys/"),
                        ("patch", f"/api/projects/{project.pk}/"), ("post", f"/api/projects/{project.pk}/datasets/"),
                        ("post", f"/api/projects/{project.pk}/slides/")):
        response = getattr(owner_api, method)(url, data=body, content_type="application/json")
        assert response.status_code in (400, 415), (method, url, response.status_code)
        if response.status_code == 400:
            assert "nested too deeply" in response.json()["detail"], (method, url)
    # Every view reads JSON through that parser: none names DRF's own.
    direct = [str(path.relative_to(ROOT)) for path in (ROOT / "webapp").rglob("*.py")
              if "rest_framework.parsers import" in path.read_text() and "JSONParser" in
              next(line for line in path.read_text().splitlines() if "rest_framework.parsers import" in line)]
    assert not direct, direct
