import pytest


@pytest.mark.django_db
def test_openapi_schema_and_docs(client, owner):
    client.force_login(owner)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    body = schema.json()
    assert body["openapi"].startswith("3.")
    assert "/api/health/" in body["paths"] and "/api/jobs/{id}/" in body["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html.lower()
    # Docs assets come from the sidecar package, never from a CDN (the product runs offline).
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html


@pytest.mark.django_db
def test_no_schema_component_is_described_by_a_mixin(client, owner):
    # Every request body without a docstring of its own read "A serializer mixin: ``to_internal_value`` refuses
    # keys ..." on /api/docs, the docstring of webapp.core.known_fields.KnownFieldsOnly.
    client.force_login(owner)
    components = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["components"]
    described = {name: schema["description"] for name, schema in components["schemas"].items()
                 if "description" in schema}
    assert "TrainStartRequest" in components["schemas"]
    assert not [name for name, text in described.items() if "mixin" in text or "to_internal_value" in text]
