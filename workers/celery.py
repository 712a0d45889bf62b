import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("nucleus_merge")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.beat_schedule = {
    # A worker that died (OOM, kill -9, lost machine) leaves its job "running": find those. Cheap when
    # nothing is stale (one query), so often: a lost job ends within a minute.
    "reap-lost-jobs": {"task": "workers.tasks.reap_lost_jobs", "schedule": 15.0,
                       "options": {"expires": 14.0}},
    # What killed jobs left in the media folder (webapp.jobs.sweep).
    "sweep-orphan-files": {"task": "workers.tasks.sweep_orphan_files", "schedule": 600.0,
                           "options": {"expires": 590.0}},
}
app.autodiscover_tasks(["workers"])
