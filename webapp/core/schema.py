"""OpenAPI schema additions shared by every operation (drf-spectacular post-processing hook)."""

from __future__ import annotations

import re

from django.urls import Resolver404, resolve

from .middleware import UPLOAD_LIMITS

# Answers any operation may give besides its own, all JSON with a `detail` (webapp.core.api_errors).
ERROR_RESPONSES = {
    "400": "The request is invalid: `detail` names the field or file and what is wrong with it.",
    "401": "No valid credentials (an API token in `Authorization: Token ...`, or a logged-in session).",
    "403": "Authenticated, but the project role does not allow this.",
    "404": "No such object, or not visible to this user.",
    "409": "The request conflicts with the current state (a training already running, a label changed meanwhile).",
    "429": "Too many requests with an unknown API token from this address; see `Retry-After`.",
    "503": "A required service (the database or the task queue) is unavailable; try again shortly.",
}

ROUTER_SEGMENT = "[^/.]+"  # DRF routers' default lookup_value_regex

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person to act on."},
        "errors": {"type": "object", "additionalProperties": True,
                   "description": "Validation errors (400, and a 413 of an upload's files): each field to its "
                                  "list of messages; messages about no one field under `non_field_errors`."},
    },
    "required": ["detail"],
}


def document_error_responses(result, generator, request, public):
    """Add the shared error answers to every operation that does not declare them itself, so that the
    schema describes what clients (and the schema fuzzing in CI) actually receive."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    # The schema says {id} where the endpoint said {pk} (drf-spectacular's SCHEMA_COERCE_PATH_PK).
    router_paths = {path.replace("{pk}", "{id}") for path, path_regex, *_ in (generator.endpoints or [])
                    if ROUTER_SEGMENT in path_regex}
    for path, path_item in result.get("paths", {}).items():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            errors = dict(ERROR_RESPONSES)
            if "requestBody" in operation:
                errors["413"] = ("The body's fields are over DATA_UPLOAD_MAX_MEMORY_SIZE (uploaded files do not "
                                 "count), or an upload's files over MAX_UPLOAD_BYTES (`errors` names the field).")
                errors["415"] = "The body's Content-Type is not one this operation reads, or the body is malformed."
                if method == "post" and _is_upload_route(path):
                    errors["411"] = ("The upload was sent without a Content-Length (Transfer-Encoding: chunked), "
                                     "which this server does not read.")
                    errors["507"] = "The server's disk filled up as the upload was staged; nothing was saved."
            for code, description in errors.items():
                responses.setdefault(code, {"description": description,
                                            "content": {"application/json": {"schema": reference}}})
            _constrain_path_parameters(operation, router=path in router_paths)
            _drop_unused_format_parameter(operation)
    return result


def _drop_unused_format_parameter(operation: dict) -> None:
    """DRF's ``?format=`` picks a renderer, and drf-spectacular offers it wherever a view has two; a file answer
    (CSV, PNG, zip, GeoJSON) is written as it is, so there it chose nothing (``merged.csv?format=json`` was CSV)."""
    answer = operation.get("responses", {}).get("200", {}).get("content", {})
    if answer and "application/json" not in answer:
        operation["parameters"] = [parameter for parameter in operation.get("parameters", [])
                                   if not (parameter.get("in") == "query" and parameter.get("name") == "format")]
        if not operation["parameters"]:
            del operation["parameters"]


def _constrain_path_parameters(operation: dict, *, router: bool) -> None:
    """State what the URL patterns match (Django's `int`: digits, `str`: no slash; a DRF router's lookup:
    no slash and no dot), so that the schema does not promise routes for `-1`, `a/b` or `a.b`."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        schema = parameter.setdefault("schema", {})
        if schema.get("type") == "integer":
            schema.setdefault("minimum", 0)
            schema.setdefault("maximum", 2**63 - 1)  # beyond, webapp.core.middleware answers 404 for any id
        elif schema.get("type", "string") == "string":
            schema.setdefault("pattern", "^[^/.]+$" if router else "^[^/]+$")


def _is_upload_route(path: str) -> bool:
    """Whether the schema's ``path`` is a route with a limit on its upload's files
    (webapp.core.middleware.UPLOAD_LIMITS)."""
    try:
        match = resolve(re.sub(r"\{[^}]+\}", "1", path))
    except Resolver404:
        return False
    return match.url_name in UPLOAD_LIMITS
