"""The OpenAPI schema says what the API answers and takes, so that a client generated from it works (found by a
helper calling every operation as a script author and checking each answer against /api/schema/): a member's
removal answers 200 with the members left (the schema said 204, no body); uploads are multipart with binary
files (the schema said URL strings, and JSON); file exports offered a ?format= they ignore; ``page`` takes
``last``; the job filters take comma-separated values."""

from __future__ import annotations

import pytest

from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client, owner):
    client.force_login(owner)
    return client.get("/api/schema/?format=json").json()


def test_a_members_removal_answers_what_the_schema_says(schema, owner, make_user, api_client_for):
    documented = schema["paths"]["/api/projects/{id}/members/{user_id}/"]["delete"]["responses"]
    assert "204" not in documented
    assert documented["200"]["content"]["application/json"]["schema"]["type"] == "array"
    project = do_create_project("members", actor=owner)
    leaving = make_user("leaving")
    do_set_membership(project, leaving, "viewer", actor=owner)
    response = api_client_for(owner).delete(f"/api/projects/{project.pk}/members/{leaving.pk}/")
    assert response.status_code == 200 and [m["username"] for m in response.json()] == ["owner"]


def test_uploads_are_multipart_with_binary_files(schema):
    components = schema["components"]["schemas"]
    for path, method, component, fields in (
            ("/api/projects/{id}/datasets/", "post", "DatasetUploadRequest", ("archive",)),
            ("/api/projects/{project_id}/infer/", "post", "InferRequest", ("image", "mask")),
            ("/api/projects/{project_id}/slides/", "post", "SlideRegisterRequest", ("slide", "detections"))):
        body = schema["paths"][path][method]["requestBody"]["content"]
        assert body["multipart/form-data"]["schema"] == {"$ref": f"#/components/schemas/{component}"}
        for field in fields:
            assert components[component]["properties"][field]["format"] == "binary", (component, field)
    assert "application/json" not in schema["paths"]["/api/projects/{id}/datasets/"]["post"]["requestBody"]["content"]
    files = components["DatasetUploadRequest"]["properties"]["files"]
    assert files["items"]["format"] == "binary"


def test_file_answers_offer_no_format_and_operation_ids_are_plain(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert "." not in operation["operationId"], (method, path)
            content = operation["responses"].get("200", {}).get("content", {})
            if content and "application/json" not in content:
                names = [parameter["name"] for parameter in operation.get("parameters", [])]
                assert "format" not in names, (method, path)


def test_pages_and_job_filters_are_described_as_taken(schema, owner, api_client_for):
    parameters = {parameter["name"]: parameter for parameter in schema["paths"]["/api/jobs/"]["get"]["parameters"]}
    assert {"type": "string", "enum": ["last"]} in parameters["page"]["schema"]["oneOf"]
    assert parameters["page_size"]["schema"]["maximum"] == 500
    assert parameters["state"]["schema"]["type"] == "array" and parameters["state"]["explode"] is False
    client = api_client_for(owner)
    assert client.get("/api/jobs/?page=last&state=queued,running").status_code == 200


def test_a_write_without_its_trailing_slash_is_a_404_naming_the_url(owner, api_client_for):
    """It was a 301: curl -L and browsers sent it again as a GET, which listed the projects and created none."""
    from webapp.projects.models import Project

    client = api_client_for(owner)
    response = client.post("/api/projects", {"name": "lost"}, format="json")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json()["detail"] == "/api/projects ends without '/': send the POST to /api/projects/"
    assert not Project.objects.exists()
    assert client.get("/api/projects").status_code == 301   # a read is redirected as before


def test_a_yes_or_no_parameter_that_is_neither_is_refused(rp, users, api_client_for):
    """counts=maybe and include_labelled=maybe were read as no."""
    client = api_client_for(users["reviewer"])
    base = f"/api/projects/{rp.project.pk}/review"
    for url, name in ((f"{base}/gallery/?label_set=breast&counts=maybe", "counts"),
                      (f"{base}/next/?label_set=breast&include_labelled=maybe", "include_labelled")):
        response = client.get(url)
        assert response.status_code == 400 and response.json()["detail"] == f"{name}: must be true or false, got 'maybe'"
    assert client.get(f"{base}/gallery/?label_set=breast&counts=1").status_code == 200
    assert client.get(f"{base}/next/?label_set=breast&include_labelled=false").status_code in (200, 204)
