"""Schema fuzzing: every operation of the OpenAPI schema, called with generated data by an authenticated
user, answers no 5xx and nothing that contradicts the schema (issue 13, "API fuzzing in CI").

schemathesis reads /api/schema/ from the Django WSGI application in this process and calls it there, on
the test database: a project with two imported datasets, images, nuclei, an active model version with
predictions and finished jobs, so that paths with ids reach real objects (half the examples use the real
ids, half generated ones). Each example runs in a savepoint that is rolled back, so one example's DELETE
or label cannot change what the next one sees, and nothing is sent to a worker (jobs are sent on commit).

Bounded: FUZZ_MAX_EXAMPLES examples per operation and strategy (default 8), derandomized so that CI is
reproducible; set FUZZ_SEED to explore other inputs locally (FUZZ_SEED=7 and 11 with 25 examples passed).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

schemathesis = pytest.importorskip("schemathesis")

from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import close_old_connections, transaction  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from tests.webapp.review_project import build_review_project  # noqa: E402
from webapp.jobs.models import Job  # noqa: E402

pytestmark = [pytest.mark.slow]

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
FUZZ_SEED = os.environ.get("FUZZ_SEED")
NEGATIVE_PATHS = os.environ.get("FUZZ_NEGATIVE_PATHS", "1") == "1"
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]


class InProcessWSGI:
    """Django's WSGI handler, minus the connection cleanup it does at the start and end of a request:
    that would close the test's connection and with it the transaction holding the test data (Django's
    own test client leaves it out for the same reason)."""

    def __init__(self):
        from django.core.wsgi import get_wsgi_application

        self.handler = get_wsgi_application()

    def __call__(self, environ, start_response):
        with self._no_connection_cleanup():
            response = self.handler(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()

    @staticmethod
    @contextmanager
    def _no_connection_cleanup():
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            yield
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(db, owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    rp = build_review_project(owner, tmp_path / "sources", images=2, nuclei=6)
    image = rp.colon.images.order_by("id").first()
    nucleus = rp.nuclei(rp.colon)[0]
    (settings.MEDIA_ROOT / "models").mkdir()
    (settings.MEDIA_ROOT / rp.version.checkpoint_file).write_bytes(b"not a real checkpoint")
    (settings.MEDIA_ROOT / "jobs").mkdir()
    (settings.MEDIA_ROOT / "jobs" / "overlay.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    job = Job.objects.create(kind=Job.Kind.INFER, state=Job.State.SUCCEEDED, created_by=owner, project=rp.project,
                             result={"files": ["jobs/overlay.png"]})
    Job.objects.create(kind=Job.Kind.TRAIN, state=Job.State.FAILED, created_by=owner, project=rp.project,
                       error="out of memory", progress={"percent": 10})
    token = Token.objects.create(user=owner)
    # A whole-slide image in the same project, for the routes that only slides answer (Deep Zoom, exports).
    from tests.webapp.slide_world import build_slide_world

    slide = build_slide_world(owner, project=rp.project, tiles_x=1, tiles_y=1,
                              label_sets=(rp.breast_set, rp.colon_set)).image
    from webapp.datasets.slide_uploads import do_start_slide_upload

    upload = do_start_slide_upload(rp.project, actor=owner, filename="case.svs", size=1024)
    ids = {"upload_id": upload.id, "id": rp.project.pk, "project_id": rp.project.pk, "dataset_id": rp.colon.pk, "image_id": image.pk,
           "nucleus_id": nucleus.pk, "job_id": job.pk, "number": rp.version.number, "name": "overlay.png",
           "label_set": rp.colon_set.name,
           "user_id": owner.pk}  # the project's one admin: removing or demoting them is refused (409)
    # Known-good bodies for the operations whose generated bodies almost never name a real label set.
    colon = rp.colon_set.name
    bodies = {
        "POST /api/nuclei/{nucleus_id}/labels/": {"label_set": colon, "class_index": 1, "version": None},
        "POST /api/nuclei/{nucleus_id}/skip/": {"label_set": colon},
        "POST /api/nuclei/{nucleus_id}/release/": {"label_set": colon},
        "POST /api/nuclei/{nucleus_id}/labels/undo/": {"label_set": colon},
        "POST /api/projects/{project_id}/review/undo/": {"label_set": colon},
        "POST /api/projects/{project_id}/review/bulk/": {
            "label_set": colon, "decisions": [{"nucleus": nucleus.pk, "class_index": 1, "version": None}]},
        "POST /api/projects/{id}/members/": {"username": owner.username, "role": "admin"},
        "POST /api/projects/{project_id}/train/": {},
        "POST /api/projects/{project_id}/slide-uploads/": {"filename": "case.svs", "size": 2048},
    }
    return {"token": token.key, "ids": ids, "job": job, "bodies": bodies, "slide": slide}


def _operations(schema):
    for result in schema.get_all_operations():
        yield result.ok()


def _real_ids(operation, ids: dict, job: Job, slide) -> dict:
    names = {parameter.name for parameter in operation.path_parameters}
    chosen = {name: ids[name] for name in names if name in ids}
    if operation.path.startswith("/api/jobs/{id}"):
        chosen["id"] = job.pk
    if "/slide" in operation.path and "image_id" in chosen:
        chosen["image_id"] = slide.pk
    return chosen


def test_schema_fuzzing_finds_no_server_error_and_no_schema_violation(fuzz_world):
    app = InProcessWSGI()
    auth = {"Authorization": f"Token {fuzz_world['token']}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app, headers=auth)
    failures: dict[str, str] = {}
    succeeded: set[str] = set()
    operations = list(_operations(schema))
    assert len(operations) >= 30, [op.label for op in operations]

    for operation in operations:
        _fuzz(operation, _real_ids(operation, fuzz_world["ids"], fuzz_world["job"], fuzz_world["slide"]), auth, failures, succeeded,
              fuzz_world["bodies"].get(operation.label))

    assert not failures, "\n\n".join(f"{label}\n{detail}" for label, detail in failures.items())
    # The fuzzing reached real objects, not only 400s and 404s.
    missed = sorted(op.label for op in operations if op.label not in succeeded)
    print(f"{len(operations) - len(missed)} of {len(operations)} operations answered 2xx; none from {missed}")
    assert len(missed) <= len(operations) // 4, f"no 2xx answer from {missed}"


def _fuzz(operation, real: dict, auth: dict, failures: dict[str, str], succeeded: set[str], body=None) -> None:
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    strategies = [operation.as_strategy(positive, path_parameters=real or None)]
    if body is not None:
        strategies.append(operation.as_strategy(positive, path_parameters=real or None, body=body,
                                                    media_type="application/json"))
    if real:  # generated (valid) ids too: objects that do not exist, or that the user may not see
        strategies.append(operation.as_strategy(positive))
    # Invalid query strings and bodies, and invalid path segments (`/api/projects/x/`, which match no route:
    # a JSON 404). FUZZ_NEGATIVE_PATHS=0 keeps the real ids there, to look at the bodies alone.
    strategies.append(operation.as_strategy(negative, path_parameters=None if NEGATIVE_PATHS else real or None))

    @hypothesis_settings(max_examples=MAX_EXAMPLES * len(strategies), deadline=None, database=None,
                         derandomize=FUZZ_SEED is None, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case):
        if operation.label in failures:
            return  # one failure per operation is enough to report
        savepoint = transaction.savepoint()
        try:
            response = case.call_and_validate(headers=auth, checks=CHECKS)
            if 200 <= response.status_code < 300:
                succeeded.add(operation.label)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - all collected, reported at the end
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
        finally:
            transaction.savepoint_rollback(savepoint)

    if FUZZ_SEED is not None:
        run = seed(int(FUZZ_SEED))(run)
    run()
