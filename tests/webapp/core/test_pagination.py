"""API lists come in pages: ``page_size`` is honoured up to a ceiling, malformed numbers are the caller's 400."""

import pytest

from webapp.core.pagination import MAX_PAGE_SIZE
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(owner, api_client_for):
    for name in ("a", "b", "c"):
        do_create_project(name, actor=owner)
    return api_client_for(owner)


def test_page_size_is_honoured(client):
    first = client.get("/api/projects/?page_size=2").json()
    assert first["count"] == 3 and [p["name"] for p in first["results"]] == ["a", "b"]
    assert "page_size=2" in first["next"] and "page=2" in first["next"]
    second = client.get(first["next"]).json()
    assert [p["name"] for p in second["results"]] == ["c"] and second["next"] is None
    assert [p["name"] for p in client.get("/api/projects/?page_size=2&page=last").json()["results"]] == ["c"]
    assert len(client.get("/api/projects/").json()["results"]) == 3  # the default page of 50


@pytest.mark.parametrize("query, detail", [
    ("page=abc", "page: must be a whole number from 1, or 'last' ('abc' given)"),
    ("page=0", "page: must be a whole number from 1, or 'last' ('0' given)"),
    ("page=%D9%A3", "page: must be a whole number from 1, or 'last' ('٣' given)"),   # an Arabic-Indic three
    ("page_size=0", f"page_size: must be a whole number from 1 to {MAX_PAGE_SIZE} ('0' given)"),
    (f"page_size={MAX_PAGE_SIZE + 1}", f"page_size: must be a whole number from 1 to {MAX_PAGE_SIZE} ('501' given)"),
    ("page_size=ten", f"page_size: must be a whole number from 1 to {MAX_PAGE_SIZE} ('ten' given)"),
])
def test_a_malformed_number_is_a_400_naming_the_parameter(client, query, detail):
    response = client.get(f"/api/projects/?{query}")
    assert response.status_code == 400
    assert response.json()["detail"] == detail


def test_a_page_past_the_end_is_a_404_that_says_so(client):
    response = client.get("/api/projects/?page_size=2&page=3")
    assert response.status_code == 404
    assert response.json()["detail"] == "Page 3 is past the last page of these results."
    assert client.get("/api/jobs/?page=99999999999999999999").status_code == 400  # past 64 bits: malformed
