"""Celery application and its tasks: thin glue between the web app's domain functions and mlcore."""

from .celery import app as celery_app

__all__ = ["celery_app"]
