"""An import stores its rows in one transaction, but its job's progress is written live: another connection
(the API, the pages) sees it before the import commits, and a cancel does not wait for the import."""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections

from mlcore.synthetic import generate_dataset
from tests.webapp.dataset_helpers import media_files, project_files
from webapp.datasets.models import Dataset, Image, LabelSet, Nucleus
from webapp.jobs import operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from mlcore.types import Cancelled
from workers.handlers import JobContext, run_import

PAUSE_AT = "image 3/"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("progress") / "tiles", format="hovernet", n_images=6,
                            nuclei_per_image=12, class_names=["a", "b"], size=(96, 96), seed=21)


class PausingContext(JobContext):
    """The worker's JobContext, writing every progress call, that stops at image 3 until released."""

    def __init__(self, job):
        super().__init__(job, min_interval_s=0.0)
        self.paused, self.release = threading.Event(), threading.Event()

    def progress(self, percent, force=False, log=None, **details):
        super().progress(percent, force=force, log=log, **details)
        if str(details.get("message", "")).startswith(PAUSE_AT) and not self.paused.is_set():
            self.paused.set()
            assert self.release.wait(60), "the test never released the import"


def running_import_job(owner, project, tiles: Path) -> Job:
    """A started import job whose upload (the files, not an archive) is staged as the API stages it."""
    staging = Path(settings.MEDIA_ROOT) / "staging" / uuid.uuid4().hex
    shutil.copytree(tiles, staging / "files")
    job = Job.objects.create(kind=Job.Kind.IMPORT, created_by=owner, project=project, params={
        "name": "tiles", "format": "hovernet", "label_set": None, "labelled": True, "provenance": "",
        "staging": str(staging.relative_to(settings.MEDIA_ROOT)), "archive": False})
    return operations.do_start_job(job.pk, worker="test-thread")


def start_import_thread(context: PausingContext) -> tuple[threading.Thread, dict]:
    """The worker's import handler in a thread (its own database connections), as the task runs it."""
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = run_import(context)
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            outcome["error"] = exc
        finally:
            context.paused.set()  # never leave the test waiting for a pause that will not come
            connections.close_all()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "progress"])
def test_the_progress_of_a_running_import_is_visible_before_it_commits(owner, tiles, settings):
    settings.IMPORT_PROCESSES = 1  # no forking from a process with threads
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time: the progress is seen at the import's commit")
    project = do_create_project("live", actor=owner)
    job = running_import_job(owner, project, tiles)
    context = PausingContext(job)
    thread, outcome = start_import_thread(context)
    try:
        assert context.paused.wait(60) and "error" not in outcome, outcome
        # This test's connection is not the import's: it sees only what is committed.
        seen = Job.objects.get(pk=job.pk)
        assert seen.state == "running"
        assert seen.progress["message"].startswith(PAUSE_AT), seen.progress
        assert 0 < seen.progress["percent"] < 100
        assert seen.heartbeat_at > job.heartbeat_at
        assert not Dataset.objects.filter(project=project).exists()  # the rows are not committed yet
    finally:
        context.release.set()
        thread.join(60)
    assert outcome.get("result", {}).get("images") == 6, outcome
    assert Dataset.objects.get(project=project).image_count == 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "progress"])
def test_a_cancel_of_a_running_import_is_taken_at_once_and_leaves_nothing(owner, tiles, settings):
    settings.IMPORT_PROCESSES = 1
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time: a cancel waits for the import")
    project = do_create_project("cancel live", actor=owner)
    job = running_import_job(owner, project, tiles)
    context = PausingContext(job)
    before = media_files()
    thread, outcome = start_import_thread(context)
    try:
        assert context.paused.wait(60) and "error" not in outcome, outcome
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # waiting on the import's transaction fails, not hangs
        try:
            cancelled = operations.do_cancel_job(job)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
        assert cancelled.cancel_requested and cancelled.state == "running"
    finally:
        context.release.set()
        thread.join(60)
    assert isinstance(outcome.get("error"), Cancelled), outcome
    assert not Dataset.objects.filter(project=project).exists()
    assert not Image.objects.filter(project=project).exists()
    assert not Nucleus.objects.filter(image__project=project).exists()
    assert not LabelSet.objects.filter(project=project).exists()
    assert not project_files(project.pk)
    assert media_files() - before == set()
    assert not (Path(settings.MEDIA_ROOT) / job.params["staging"]).exists()


@pytest.mark.django_db(transaction=True, databases=["default", "progress"])
def test_a_short_import_still_reports_its_last_image_and_its_steps(owner, tiles, settings, monkeypatch):
    """The worker writes progress at most every half second; an import shorter than that must still
    show more than its first step (the page sat at "unpacking the archive · 0%" until it was done)."""
    settings.IMPORT_PROCESSES = 1
    project = do_create_project("short", actor=owner)
    job = running_import_job(owner, project, tiles)
    written = []
    report = operations.do_report_progress

    def recording(job_id, progress, log_line=None):
        written.append(progress.get("message"))
        return report(job_id, progress, log_line=log_line)

    monkeypatch.setattr(operations, "do_report_progress", recording)
    run_import(JobContext(job))  # the worker's own context, half-second limit included
    assert any(m.startswith("image 6/6") for m in written), written
    assert written[-1] == "stored 6 images and 72 nuclei (label set tiles)", written
    assert Job.objects.get(pk=job.pk).progress["message"] == written[-1]


@pytest.mark.django_db(transaction=True, databases=["default", "progress"])
def test_without_copy_the_images_are_prepared_before_the_import_takes_the_write_lock(owner, tiles, settings,
                                                                                     monkeypatch):
    """SQLite (the embedded default) lets one transaction write at a time: while an import reads its images no
    transaction of its own is open, so the rest of the application saves meanwhile (a save waited 30 s for a
    large upload and failed). PostgreSQL is made to take the same path here (no COPY) to run it there too."""
    from webapp.datasets import bulk

    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(bulk, "uses_copy", lambda: False)
    project = do_create_project("one writer", actor=owner)
    job = running_import_job(owner, project, tiles)
    seen_in_transaction = []

    class Watching(PausingContext):
        def progress(self, percent, force=False, log=None, **details):
            if str(details.get("message", "")).startswith(PAUSE_AT):
                seen_in_transaction.append(connection.in_atomic_block)  # the import thread's connection
            super().progress(percent, force=force, log=log, **details)

    context = Watching(job)
    thread, outcome = start_import_thread(context)
    try:
        assert context.paused.wait(60) and "error" not in outcome, outcome
        assert seen_in_transaction == [False]
        other = do_create_project("saved meanwhile", actor=owner)   # a write while the import reads images
        seen = Job.objects.get(pk=job.pk)
        assert seen.progress["message"].startswith(PAUSE_AT) and seen.progress["percent"] < 90
    finally:
        context.release.set()
        thread.join(60)
    assert outcome.get("result", {}).get("images") == 6, outcome
    dataset = Dataset.objects.get(project=project)
    assert (dataset.image_count, dataset.nucleus_count) == (6, 72)
    assert Nucleus.objects.filter(image__dataset=dataset).count() == 72
    assert not any(path.name.endswith(".pickle") for path in project_files(project.pk))
    assert other.pk
