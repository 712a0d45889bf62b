"""Per-kind time limits (settings.JOB_TIME_LIMITS): sent with each job's message, and a job stopped at its
soft limit ends failed, with a message that says so, its folders removed; one killed at the hard limit
ends failed at once too."""

from __future__ import annotations

import signal
import time

import pytest
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from webapp.core.job_time_limits import (DEFAULT_JOB_TIME_LIMITS, JobTimeLimitsError, describe_seconds,
                                         job_time_limits)
from webapp.jobs import operations
from webapp.jobs.models import Job
from webapp.jobs.sweep import import_folder
from webapp.projects.operations import do_create_project
from workers import handlers
from workers.tasks import run_job


def test_every_job_kind_has_limits_with_room_to_clean_up():
    assert set(DEFAULT_JOB_TIME_LIMITS) == set(Job.Kind.values)
    for kind, (soft, hard) in DEFAULT_JOB_TIME_LIMITS.items():
        assert 0 < soft < hard, kind


def test_the_broker_never_redelivers_a_job_that_is_still_within_its_limits(settings):
    longest = max(hard for _, hard in settings.JOB_TIME_LIMITS.values())
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > longest
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST


def test_the_variable_overrides_some_kinds_and_refuses_nonsense():
    limits = job_time_limits("train=172800:173400, infer=60")
    assert limits["train"] == (172800, 173400)
    assert limits["infer"] == (60, 660)                      # hard = soft + the grace
    assert limits["import"] == DEFAULT_JOB_TIME_LIMITS["import"]
    for bad in ("mine=10", "train", "train=ten", "train=100:50", "train=0"):
        with pytest.raises(JobTimeLimitsError, match="JOB_TIME_LIMITS"):
            job_time_limits(bad)
    assert describe_seconds(86400) == "24 h" and describe_seconds(90) == "1 min 30 s"


@pytest.mark.django_db(transaction=True)
def test_each_kind_is_sent_with_its_own_limits(owner, settings):
    """What reaches the broker: Celery's ``timelimit`` header (hard, soft) of each job's message."""
    from workers.celery import app

    settings.JOB_TIME_LIMITS = {**settings.JOB_TIME_LIMITS, "diagnostics": (7, 9), "train": (3000, 3600)}
    sent = {}

    def record(sender=None, headers=None, **kwargs):
        sent[headers["id"]] = headers["timelimit"]

    signals.before_task_publish.connect(record, weak=False)
    try:
        project = do_create_project("Limits", actor=owner)
        diagnostics = operations.do_enqueue_job(Job.Kind.DIAGNOSTICS, actor=owner)
        training = operations.do_enqueue_job(Job.Kind.TRAIN, actor=owner, project=project)
    finally:
        signals.before_task_publish.disconnect(record)
        app.control.purge()  # nobody runs them here
    assert tuple(sent[diagnostics.celery_task_id]) == (9, 7)
    assert tuple(sent[training.celery_task_id]) == (3600, 3000)


@pytest.fixture
def import_job_writing_until_stopped(owner, settings, monkeypatch):
    """An import job whose handler writes into its folders and then works on until something stops it."""
    project = do_create_project("Slow import", actor=owner)
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner,
                             params={"staging": "staging/slowimport"}, celery_task_id="slow-import")
    media = settings.MEDIA_ROOT
    staged = media / "staging" / "slowimport" / "upload.zip"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"PK sent by the user")

    def slow_import(context):
        folder = media / import_folder(context.job)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "image-0001.png").write_bytes(b"half an import")
        while True:
            time.sleep(0.05)

    monkeypatch.setitem(handlers.HANDLERS, Job.Kind.IMPORT, slow_import)
    return job, [staged.parent, media / import_folder(job)]


@pytest.mark.django_db(transaction=True)
def test_a_job_stopped_at_its_soft_limit_fails_with_its_folders_removed(import_job_writing_until_stopped,
                                                                         settings):
    job, folders = import_job_writing_until_stopped
    settings.JOB_TIME_LIMITS = {**settings.JOB_TIME_LIMITS, "import": (1, 2)}

    # What the prefork pool does at the soft limit: a signal whose handler raises SoftTimeLimitExceeded in
    # the task (billiard's soft_timeout_sighandler), here after a fraction of a second.
    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        outcome = run_job.apply(args=[job.pk]).get()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    job.refresh_from_db()
    assert outcome == "failed"
    assert job.state == Job.State.FAILED
    assert job.error.startswith("Dataset import ran past its time limit of 1 s and it was stopped")
    assert "JOB_TIME_LIMITS, set alike on the web server, beat and the workers" in job.error
    assert "/" not in job.error.replace("/api", "")
    for folder in folders:
        assert not folder.exists(), folder


@pytest.mark.django_db(transaction=True)
def test_a_job_killed_at_its_hard_limit_fails_at_once(import_job_writing_until_stopped):
    """The pool killed the process: Celery calls the task's on_failure in the worker's main process."""
    job, folders = import_job_writing_until_stopped
    operations.do_start_job(job.pk, worker="w1@host")
    (folders[1]).mkdir(parents=True, exist_ok=True)
    run_job.on_failure(TimeLimitExceeded(14400 + 600), job.celery_task_id, (job.pk,), {}, None)

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.error.startswith("Dataset import ran past its time limit of 4 h 10 min and its worker process "
                                "was killed")
    for folder in folders:
        assert not folder.exists(), folder


@pytest.mark.django_db(transaction=True)
def test_other_failures_keep_their_own_message(import_job_writing_until_stopped):
    job, _ = import_job_writing_until_stopped
    run_job.on_failure(RuntimeError("boom"), job.celery_task_id, (job.pk,), {}, None)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED  # not a time limit: run_job's own handling applies


def test_a_wrong_variable_stops_the_start_naming_it(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="webapp.settings",
               JOB_TIME_LIMITS="train=a day")
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImproperlyConfigured: JOB_TIME_LIMITS: 'train=a day': the limits are whole seconds" in result.stderr
