"""A write that waits out SQLite's lock (held by a long job transaction: a large deletion) gets a 503 with
Retry-After and a detail saying what to do, not a 500; nothing was saved, and the same request works once
the lock is gone."""

import sqlite3

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory

from webapp.core.middleware import DatabaseBusyMiddleware
from webapp.projects.models import Project
from webapp.projects.operations import do_create_project


def test_a_locked_database_is_a_503_with_retry_after_and_other_errors_pass():
    middleware = DatabaseBusyMiddleware(lambda request: None)
    api = middleware.process_exception(RequestFactory().post("/api/projects/1/review/"),
                                       OperationalError("database is locked"))
    assert api.status_code == 503 and api["Retry-After"] == "30"
    assert api["Content-Type"] == "application/json" and b"Try again in a minute" in api.content
    page = middleware.process_exception(RequestFactory().post("/projects/1/"), OperationalError("database is locked"))
    assert page.status_code == 503 and page["Content-Type"].startswith("text/plain")
    assert middleware.process_exception(RequestFactory().get("/api/"), OperationalError("no such table: x")) is None
    assert middleware.process_exception(RequestFactory().get("/api/"), ValueError("database is locked")) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's single write lock (PostgreSQL has none such)")
def test_a_save_while_another_connection_holds_the_write_lock(owner, api_client_for, monkeypatch):
    project = do_create_project("Busy lab", actor=owner)
    client = api_client_for(owner)
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")   # as a deletion's transaction holds it
    connection.close()
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)   # not the 30 s of settings
    try:
        busy = client.patch(f"/api/projects/{project.pk}/", {"description": "while busy"}, format="json")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert busy.status_code == 503, busy.content
    assert busy["Retry-After"] == "30" and "nothing was saved" in busy.json()["detail"]
    assert Project.objects.get(pk=project.pk).description == ""
    again = client.patch(f"/api/projects/{project.pk}/", {"description": "later"}, format="json")
    assert again.status_code == 200 and Project.objects.get(pk=project.pk).description == "later"
