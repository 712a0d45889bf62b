"""What browsers and proxies may keep: API answers nothing (a GET may hand out work), pages only the browser
and only after asking again, and what says its own life (crops, tiles, static files) keeps it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_review_queues_answer_is_never_stored(rp, users, api_client_for):
    # Chrome replayed a stored review/next/ answer when Back returned to the review page: a nucleus shown as
    # reserved that had been given back.
    client = api_client_for(users["reviewer"])
    claimed = client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast")
    assert claimed.status_code == 200 and claimed["Cache-Control"] == "no-store"
    for url in ("/api/jobs/", f"/api/projects/{rp.project.pk}/", "/api/nowhere/"):
        assert client.get(url)["Cache-Control"] == "no-store", url


def test_pages_are_private_and_asked_again(rp, users, client):
    client.force_login(users["reviewer"])
    for url in ("/", f"/projects/{rp.project.pk}/review/?label_set=breast"):
        assert client.get(url)["Cache-Control"] == "private, no-cache", url


def test_what_says_its_own_life_keeps_it(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    item = client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast").json()
    crop = client.get(item["region"]["url"])
    assert crop.status_code == 200 and crop["Cache-Control"] == "private, max-age=86400"
