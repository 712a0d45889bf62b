"""Fixtures of the tests that run slides through a real worker: a share of slides (SLIDES_ROOT) holding the
fixture slide and its GeoJSON under ``lab/``, and a Celery worker process that reads it."""

from __future__ import annotations

import pytest

from tests.conftest import WorkerProcess
from tests.webapp.slide_helpers import build_fixture_slide


@pytest.fixture(scope="module")
def slides_share(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides-share").resolve()
    build_fixture_slide(root / "lab")
    return root


@pytest.fixture(scope="module")
def slide_worker(django_db_setup, django_db_blocker, tmp_path_factory, test_media_root, slides_share):
    worker = WorkerProcess(tmp_path_factory.mktemp("celery") / "worker.log", name="slides",
                           SLIDES_ROOT=str(slides_share))
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    worker.stop()
