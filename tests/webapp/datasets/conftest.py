"""Fixtures of the web app's page, viewer and export tests."""

import pytest


@pytest.fixture
def viewer_project(db, owner, member, media_root, tmp_path):
    """The viewer project (tests/webapp/viewer_project.py), with ``member`` as a viewer."""
    from tests.webapp.viewer_project import build_viewer_project
    from webapp.projects.models import Role
    from webapp.projects.operations import do_set_membership

    vp = build_viewer_project(owner, tmp_path / "sources")
    do_set_membership(vp.project, member, Role.VIEWER, actor=owner)
    return vp
