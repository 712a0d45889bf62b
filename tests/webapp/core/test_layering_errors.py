"""Domain errors stay out of HTTP: operations raise webapp.core.domain_errors, never DRF exceptions, and
webapp.core.api_errors maps each to its status and JSON body in one place."""

import ast
from pathlib import Path

import pytest
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from webapp.core import api_errors, domain_errors

WEBAPP = Path(__file__).resolve().parents[3] / "webapp"
# Modules of the domain: what they raise must not know of HTTP.
DOMAIN_MODULES = {"operations.py", "uploads.py", "deletion.py", "importing.py", "slide_import.py",
                  "slide_uploads.py", "queue.py", "domain_errors.py", "schedule.py"}


def _domain_files() -> list[Path]:
    files = [path for path in WEBAPP.rglob("*.py") if path.name in DOMAIN_MODULES]
    files += [path for path in WEBAPP.glob("*/lib/**/*.py")]
    return sorted(set(files))


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _forbidden(module: str) -> bool:
    return module == "rest_framework" or module.startswith("rest_framework.") or module == "webapp.core.api_errors"


def test_the_domain_modules_are_found():
    names = {path.relative_to(WEBAPP).as_posix() for path in _domain_files()}
    for expected in ("jobs/operations.py", "training/operations.py", "datasets/uploads.py", "projects/deletion.py",
                     "review/queue.py", "core/domain_errors.py"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("path", _domain_files(), ids=lambda path: path.relative_to(WEBAPP).as_posix())
def test_domain_modules_import_no_http_layer(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    offending = [f"line {line}: {module}" for line, module in _imported_modules(tree) if _forbidden(module)]
    assert not offending, (f"{path.relative_to(WEBAPP)} imports the HTTP layer ({', '.join(offending)}): raise "
                           "webapp.core.domain_errors instead; webapp.core.api_errors maps them to HTTP")


def test_the_check_catches_an_import_inside_a_function():
    tree = ast.parse("def f():\n    from rest_framework.exceptions import ValidationError\n")
    assert [module for _, module in _imported_modules(tree) if _forbidden(module)] == ["rest_framework.exceptions"]


def test_domain_errors_need_neither_django_nor_drf():
    tree = ast.parse((WEBAPP / "core" / "domain_errors.py").read_text())
    modules = [module for _, module in _imported_modules(tree)]
    assert not [m for m in modules if m.split(".")[0] in {"django", "rest_framework", "webapp"}], modules


# ------------------------------------------------------------------------------ the one mapping to HTTP

class _Raises(APIView):
    """An API view that raises the error it is given, answered by the project's exception handler."""

    authentication_classes = []
    permission_classes = []
    error: Exception | None = None

    def get(self, request):
        raise self.error


def _answer(error: Exception):
    response = _Raises.as_view(error=error)(APIRequestFactory().get("/api/x/"))
    response.render()
    return response.status_code, response.data


def test_invalid_with_a_field_is_a_400_naming_the_field():
    status, body = _answer(domain_errors.Invalid("the upload is 9.0 MB, over the limit", field="archive",
                                                 code="too_large"))
    assert status == 400
    assert body == {"detail": "archive: the upload is 9.0 MB, over the limit",
                    "errors": {"archive": ["the upload is 9.0 MB, over the limit"]}}  # as a serializer's
    assert body["errors"]["archive"][0].code == "too_large"


def test_invalid_without_a_field_is_a_400():
    status, body = _answer(domain_errors.Invalid("give a name"))
    assert (status, body) == (400, {"detail": "give a name", "errors": {"non_field_errors": ["give a name"]}})
    assert body["errors"]["non_field_errors"][0].code == "invalid"


def test_errors_are_lists_of_messages_by_field_however_they_were_raised():
    from rest_framework.exceptions import ValidationError

    _, body = _answer(ValidationError({"options": {"epochs": "too many", "non_field_errors": ["bad"]},
                                       "items": [{}, {"class_name": ["unknown"]}], "name": ["required"]}))
    assert body["errors"] == {"options": {"epochs": ["too many"], "non_field_errors": ["bad"]},
                              "items": [{}, {"class_name": ["unknown"]}], "name": ["required"]}
    assert body["detail"] == "options.epochs: too many; options: bad; items.class_name: unknown; name: required"


def test_conflict_is_a_409_with_its_extra_data():
    status, body = _answer(domain_errors.Conflict("Project 'p' is already training (job 7, running)",
                                                  code="training_running", job_id=7))
    assert (status, body) == (409, {"detail": "Project 'p' is already training (job 7, running)", "job_id": 7})
    assert body["detail"].code == "training_running"


def test_conflict_without_extra_is_a_409_with_its_detail_only():
    assert _answer(domain_errors.Conflict("already a member")) == (409, {"detail": "already a member"})


def test_unavailable_is_a_503():
    status, body = _answer(domain_errors.Unavailable("The task queue (Redis) is unreachable.",
                                                     code="queue_unavailable", job_id=3))
    assert (status, body) == (503, {"detail": "The task queue (Redis) is unreachable."})
    assert body["detail"].code == "queue_unavailable"


def test_not_found_is_a_404():
    status, body = _answer(domain_errors.NotFound("no such upload", code="no_upload"))
    assert (status, body) == (404, {"detail": "no such upload"})
    assert body["detail"].code == "no_upload"


def test_a_subclass_keeps_its_parents_status_and_its_own_code():
    from webapp.review.access import UnknownName
    from webapp.training.operations import NotResumable

    status, body = _answer(NotResumable("job 4 is running: only a cancelled or failed training can be resumed"))
    assert status == 409 and body["detail"].code == "not_resumable"
    status, body = _answer(UnknownName("no label set named 'x'", field="label_set"))
    assert (status, body["detail"]) == (400, "label_set: no label set named 'x'")
    assert body["errors"]["label_set"][0].code == "unknown_name"


def test_a_domain_error_reads_as_field_and_detail():
    error = domain_errors.Invalid("not a class", field="class_name", code="unknown_name")
    assert (error.detail, error.field, error.code, error.extra) == ("not a class", "class_name", "unknown_name", {})
    assert str(error) == "class_name: not a class"
    assert str(domain_errors.Conflict("busy", job_id=2)) == "busy"
    assert domain_errors.Conflict("busy", job_id=2).extra == {"job_id": 2}


def test_the_handler_maps_every_domain_error_class():
    expected = {domain_errors.Invalid: 400, domain_errors.NotFound: 404, domain_errors.Conflict: 409,
                domain_errors.TooLarge: 413, domain_errors.Unavailable: 503}
    classes = {cls for cls in vars(domain_errors).values()
               if isinstance(cls, type) and issubclass(cls, domain_errors.DomainError)} - {domain_errors.DomainError}
    assert classes == set(expected), "a new domain error class needs its status in api_errors.api_exception"
    for cls, status in expected.items():
        assert api_errors.api_exception(cls("x")).status_code == status
