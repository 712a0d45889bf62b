"""HEAD on every route that answers GET: it answers as GET does (the policy table: HEAD follows GET), for every
kind of user, and changes nothing, even with a write's body. A viewer's HEAD with an upload's body imported a
dataset: the view took every method but GET for the upload (found by a helper checking the API as a script
author uses it)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from mlcore.examples import example_zip_bytes
from tests.webapp.core import test_authorization_matrix as matrix
from tests.webapp.core.test_authorization_matrix import PERSONAS, _client, call, is_page, url_for, walk
from webapp.core import policy
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

world = matrix.world  # the authorization matrix's project, users and objects


def state() -> tuple[int, int, int]:
    return Job.objects.count(), AuditLogEntry.objects.count(), Dataset.objects.count()


def test_head_answers_as_get_and_changes_nothing_on_every_route(world):
    users = world["users"]
    clients = {persona: _client(users.get(persona)) for persona in PERSONAS}
    before, problems, seen = state(), [], set()
    for route in walk():
        if route.is_admin or not route.name or (route.name, route.params) in seen:
            continue
        seen.add((route.name, route.params))
        if "GET" not in policy.ROUTES[route.name] or route.name == "logout":
            continue
        for persona in PERSONAS:
            url = url_for(route, world, persona)
            headers = {} if is_page(url) else {"HTTP_ACCEPT": "application/json"}
            got = call(clients[persona], "GET", url).status_code
            head = clients[persona].generic("HEAD", url, b'{"name": "by HEAD", "role": "admin"}',
                                            content_type="application/json", **headers)
            if head.status_code != got:
                problems.append(f"HEAD {url} [{route.name}] as {persona}: {head.status_code}, GET answers {got}")
    assert len(seen) > 40
    assert not problems, "\n".join(problems)
    assert state() == before


def test_a_viewers_head_with_an_upload_imports_nothing(world):
    project, viewer = world["project"], world["users"]["viewer"]
    client = Client()
    client.force_login(viewer)
    before = state()
    payload = {"name": "by HEAD", "format": "seed",
               "archive": SimpleUploadedFile("d.zip", example_zip_bytes("seed"))}
    response = client.generic("HEAD", f"/api/projects/{project.pk}/datasets/", encode_multipart(BOUNDARY, payload),
                              content_type=MULTIPART_CONTENT, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert state() == before and not Dataset.objects.filter(name="by HEAD").exists()
