"""When a retraining policy next acts: its cron schedule's next start and its review check's next run.

Both are read from the same definitions celery beat runs (celery's crontab in the app's time zone, the
django-celery-beat task's last run), so the page says what beat will do.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from webapp.core.domain_errors import Invalid

from .models import RetrainPolicy


CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def parse_cron(text: str) -> dict:
    """'minute hour day-of-month month day-of-week' as django-celery-beat's crontab fields; Invalid (on the
    user's field ``cron``) naming the part that is wrong (celery's own parser decides what is valid)."""
    from celery.schedules import crontab

    fields = text.split()
    if len(fields) != 5:
        raise Invalid(
            f"{text!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}; a schedule needs five: "
            "minute hour day-of-month month day-of-week, e.g. '0 3 * * 0' (Sundays at 03:00)",
            field="cron", code="invalid_schedule")
    values = dict(zip(CRON_FIELDS, fields))
    for key, name in zip(CRON_FIELDS, CRON_FIELD_NAMES):
        try:
            crontab(**{key: values[key]})
        except (ValueError, TypeError) as exc:
            raise Invalid(f"{name} {values[key]!r} is not valid ({exc})", field="cron",
                          code="invalid_schedule") from None
    try:
        crontab(**values)
    except (ValueError, TypeError) as exc:
        raise Invalid(f"{text!r} is not a valid schedule ({exc})", field="cron", code="invalid_schedule") from None
    return values


def _to_second(when: datetime) -> datetime:
    return (when + timedelta(microseconds=500_000)).replace(microsecond=0)


def next_cron_run(policy: RetrainPolicy, now: datetime | None = None) -> datetime | None:
    """The next time the policy's cron schedule starts a training, in the schedule's time zone."""
    from celery.schedules import crontab

    from workers.celery import app

    if not policy.enabled or not policy.cron:
        return None
    try:
        values = parse_cron(policy.cron)
    except Invalid:
        return None  # stored before schedules were checked: it never runs
    zone = ZoneInfo(settings.CELERY_TIMEZONE)
    local = (now or timezone.now()).astimezone(zone)
    return _to_second(local + crontab(**values, app=app).remaining_estimate(local))


def next_check(policy: RetrainPolicy, now: datetime | None = None) -> datetime | None:
    """The next time the new-review count is checked, as beat's database scheduler reckons it."""
    from django_celery_beat.models import PeriodicTask

    if not policy.enabled or not policy.min_new_reviews:
        return None
    task = (PeriodicTask.objects.filter(name=f"retrain-check-project-{policy.project_id}", enabled=True)
            .select_related("interval").first())
    now = now or timezone.now()
    if task is None or task.interval is None:
        return None
    # Beat (django-celery-beat's ModelEntry) counts a check that never ran from the task's last save, not from
    # now: a policy saved at 10:00 with a 15-minute check is first checked at 10:15, and each save starts it again.
    since = task.last_run_at or task.date_changed
    due = since + timedelta(minutes=task.interval.every) if since else now
    return _to_second(max(due, now).astimezone(ZoneInfo(settings.CELERY_TIMEZONE)))


def _when(moment: datetime) -> str:
    return f"{moment:%a %Y-%m-%d %H:%M} {settings.CELERY_TIMEZONE}"


def describe_schedule(policy: RetrainPolicy | None) -> str:
    """What the policy will do next, as the form shows it (and the API returns as ``schedule_text``)."""
    zone = settings.CELERY_TIMEZONE
    if policy is None or policy.pk is None:
        return f"Not saved yet: nothing is scheduled. Times are in {zone}, the schedule's time zone."
    parts = []
    if not policy.enabled:
        parts.append("The policy is off (not enabled): nothing runs by itself.")
    else:
        run = next_cron_run(policy)
        if run:
            parts.append(f"Next scheduled training: {_when(run)}.")
        elif policy.cron:
            parts.append("The cron schedule never runs.")
        check = next_check(policy)
        if check:
            parts.append(f"Next check for {policy.min_new_reviews} new reviewed labels: {_when(check)}.")
        if not run and not check:
            parts.append("Neither a cron schedule nor a review threshold is set: nothing runs by itself.")
    parts.append(f"Times are in {zone}, the schedule's time zone.")
    return " ".join(parts)
