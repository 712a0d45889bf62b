"""``JOB_TIME_LIMITS``: how long a job of each kind may run (framework-free: settings parse it).

Celery enforces two limits per task run (on its prefork pool): at the *soft* limit the task gets a
``SoftTimeLimitExceeded`` exception, so that the job can end as failed and remove its folders; at the
*hard* limit the pool kills the process, for a job stuck where the exception cannot reach it (inside a
C call). The defaults are generous for the figures in the README's Benchmarks table; a lab with a large
training set or a slow GPU raises them with ``JOB_TIME_LIMITS=train=172800:173400,infer=43200``
(``KIND=SOFT[:HARD]`` in seconds, comma separated; a lone SOFT gets a hard limit ``HARD_GRACE_S`` later).
"""

from __future__ import annotations

HARD_GRACE_S = 600  # from the soft limit to the kill: time to roll back and remove the job's folders

# kind: (soft, hard) in seconds. The kinds are webapp.jobs.models.Job.Kind's (a test checks that every
# kind has a row).
DEFAULT_JOB_TIME_LIMITS: dict[str, tuple[int, int]] = {
    "diagnostics": (300, 360),
    "import": (4 * 3600, 4 * 3600 + HARD_GRACE_S),
    "export": (2 * 3600, 2 * 3600 + HARD_GRACE_S),
    "delete": (3600, 3600 + HARD_GRACE_S),
    "train": (24 * 3600, 24 * 3600 + HARD_GRACE_S),
    "predict": (12 * 3600, 12 * 3600 + HARD_GRACE_S),
    "infer": (6 * 3600, 6 * 3600 + HARD_GRACE_S),
}


class JobTimeLimitsError(ValueError):
    pass


def job_time_limits(raw: str | None) -> dict[str, tuple[int, int]]:
    """The defaults with the overrides of ``raw`` (the JOB_TIME_LIMITS variable); refuses what it cannot
    read, saying why."""
    limits = dict(DEFAULT_JOB_TIME_LIMITS)
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in limits:
            raise JobTimeLimitsError(f"JOB_TIME_LIMITS: {item!r} is not KIND=SOFT[:HARD] with KIND one of "
                                     f"{', '.join(sorted(limits))}")
        soft_text, _, hard_text = value.partition(":")
        try:
            soft = int(soft_text)
            hard = int(hard_text) if hard_text.strip() else soft + HARD_GRACE_S
        except ValueError:
            raise JobTimeLimitsError(f"JOB_TIME_LIMITS: {item!r}: the limits are whole seconds") from None
        if soft <= 0 or hard <= soft:
            raise JobTimeLimitsError(f"JOB_TIME_LIMITS: {item!r}: need 0 < SOFT < HARD "
                                     "(the hard limit kills the job; the soft one lets it clean up first)")
        limits[kind] = (soft, hard)
    return limits


def describe_seconds(seconds: float) -> str:
    """``90`` -> "1 min 30 s", ``86400`` -> "24 h": a limit as a person reads it."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(part for part in parts if part) or "0 s"
