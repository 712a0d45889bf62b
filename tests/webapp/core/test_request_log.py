"""A refused request is one line in the log, not a traceback; a server error keeps its traceback."""

import logging

import pytest
from django.test import Client

from webapp.core.log_filters import RefusalWithoutTraceback
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


def test_a_403_is_logged_without_its_traceback(owner, member, caplog):
    project = do_create_project("logged", actor=owner)
    do_set_membership(project, member, Role.VIEWER, actor=owner)
    client = Client()
    client.force_login(member)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.post(f"/projects/{project.pk}/edit/", {"name": "x"}).status_code == 403
    refused = [r for r in caplog.records if r.name == "django.request"]
    assert refused and all(r.exc_info is None for r in refused)
    assert "Forbidden" in refused[0].getMessage()


def test_a_server_error_keeps_its_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys
        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", None,
                                   sys.exc_info())
    record.status_code = 500
    assert RefusalWithoutTraceback().filter(record) and record.exc_info is not None
