"""The authorization matrix: every route of the URL configuration, as every kind of user, against the
one declared policy table (:mod:`webapp.core.policy`).

The routes come from walking ``get_resolver()``, so a new route that the table does not name fails
here, and so does a view whose checks disagree with the table. Each route is called with real objects
of one project (its datasets, an image, a nucleus, a label set, a model version, a job) as:

anonymous, an outsider, a viewer, a reviewer, a curator, the project's admin (its owner), a member who
was removed (and who started the project's job), and staff (not a member).

An allowed call must not be refused (401/403/404, or a page sending to the login page) and must not
crash (5xx). A refused call must answer: for anonymous callers 401/403 JSON on the API and a redirect
to the login page for pages; 404 for people outside the project (its existence is private, also to
removed members and staff); 403 for members whose role is too low. Methods a route does not declare
must answer 405. The admin site is staff-only as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from webapp.core import policy
from webapp.core.policy import Access
from webapp.jobs.models import Job
from webapp.projects.models import ROLE_RANK, Role
from webapp.projects.operations import do_remove_member, do_set_membership

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PERSONAS = ("anonymous", "outsider", "viewer", "reviewer", "curator", "admin", "removed", "staff")
MEMBER_ROLES = {"viewer": Role.VIEWER, "reviewer": Role.REVIEWER, "curator": Role.CURATOR, "admin": Role.ADMIN}
# The admin site has a route per model and action: these personas suffice to show it is staff-only.
ADMIN_PERSONAS = ("anonymous", "outsider", "admin", "staff")
# Calling these ends the caller's session: they get a client of their own.
SESSION_ENDING = {"logout"}
# Calling these takes a member out of the project (leaving it): they are put back after each call.
MEMBERSHIP_ENDING = {"project-leave", "api-project-leave"}


@dataclass(frozen=True)
class Route:
    name: str              # with its namespace, as in the policy table ("admin:index")
    namespace: str | None
    params: frozenset      # the URL's keyword arguments
    pattern: str

    @property
    def is_admin(self) -> bool:
        return self.namespace == "admin"


def walk(resolver=None, namespace: str | None = None, prefix: str = "") -> list[Route]:
    """Every route of the URL configuration, including those inside include()s and namespaces."""
    resolver = resolver or get_resolver()
    routes = []
    for entry in resolver.url_patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = entry.namespace and (f"{namespace}:{entry.namespace}" if namespace else entry.namespace)
            routes += walk(entry, inner or namespace, pattern)
        elif isinstance(entry, URLPattern):
            params = frozenset(_params(resolver, entry))
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            routes.append(Route(name, namespace, params, pattern))
    return routes


def _params(resolver, entry) -> set[str]:
    names = set()
    for part in (resolver.pattern, entry.pattern):
        names |= set(getattr(part, "converters", {}) or {})
        names |= set(part.regex.groupindex)
    return names


# ------------------------------------------------------------------------------------------ the world

@pytest.fixture
def world(db, make_user, owner, settings, tmp_path):
    from tests.webapp.viewer_project import add_predictions, build_viewer_project

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.IMPORT_PROCESSES = 1
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=1, nuclei=6, size=64)
    project = vp.project
    add_predictions(vp)
    version = project.model_versions.get(number=1)
    checkpoint = Path(settings.MEDIA_ROOT) / version.checkpoint_file
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"not a real checkpoint")

    users = {"admin": owner, "outsider": make_user("outsider"), "staff": make_user("staff", is_staff=True, is_superuser=True)}
    for persona in ("viewer", "reviewer", "curator", "removed"):
        users[persona] = make_user(persona)
    for persona, role in MEMBER_ROLES.items():
        if persona != "admin":
            do_set_membership(project, users[persona], role, actor=owner)
    # The removed member was a curator and started the project's job before they were removed.
    do_set_membership(project, users["removed"], Role.CURATOR, actor=owner)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=users["removed"],
                             result={"files": ["jobs/matrix/overlay.png"]})
    overlay = Path(settings.MEDIA_ROOT) / "jobs" / "matrix" / "overlay.png"
    overlay.parent.mkdir(parents=True)
    overlay.write_bytes(b"\x89PNG\r\n\x1a\n")
    do_remove_member(project, users["removed"], actor=owner)

    # A whole-slide image in the same project, for the routes that only slides have (Deep Zoom).
    from tests.webapp.slide_world import build_slide_world

    slide = build_slide_world(owner, project=project, tiles_x=1, tiles_y=1,
                              label_sets=(vp.alpha_set, vp.beta_set)).image

    nucleus = vp.image.nuclei.order_by("instance_id").first()
    values = {
        "project_id": project.pk, "dataset_id": vp.alpha.pk, "image_id": vp.image.pk, "nucleus_id": nucleus.pk,
        "job_id": job.pk, "number": version.number, "name": "overlay.png", "kind": "image",
        "label_set": vp.alpha_set.name, "label_set_id": vp.alpha_set.pk, "class_index": 0, "format": "json",
        # A password reset link that does not work (the page says so); the project's one admin, whom
        # nobody may remove or demote (409), so that the walk leaves the world as it was.
        "uidb64": "MA", "token": "no-such-token", "user_id": owner.pk,
        "dataset_format": "seed",
        "level": 0, "col": 0, "row": 0,  # a Deep Zoom tile of the slide
    }
    # A chunked slide upload is its starter's alone: the curator and the admin call the upload routes with
    # one of their own; everyone else with the admin's (refused by their role or membership first).
    from webapp.datasets.slide_uploads import do_start_slide_upload

    own_uploads = {persona: {"upload_id": do_start_slide_upload(project, actor=users[persona], filename="s.svs",
                                                                size=10).id}
                   for persona in ("curator", "admin")}
    values["upload_id"] = own_uploads["admin"]["upload_id"]
    return {"users": users, "values": values, "project": project, "job": job,
            "slide_values": {"image_id": slide.pk}, "own_values": own_uploads}


# Routes that answer only for a whole-slide image: called with the world's slide instead of its tile image.
SLIDE_ROUTES = {"api-slide-dzi", "api-slide-tile", "slide-viewer"}
# Routes of an object only its own user may use (a chunked upload): each persona calls them with its own.
OWN_ROUTES = {"api-slide-upload"}


def url_for(route: Route, world, persona: str | None = None) -> str:
    values = {**world["values"], **world["slide_values"]} if route.name in SLIDE_ROUTES else world["values"]
    if route.name in OWN_ROUTES:
        values = {**values, **world["own_values"].get(persona, {})}
    kwargs = {}
    for param in route.params:
        if param == "pk":
            kwargs[param] = world["job"].pk if route.name.startswith("api-job") else world["project"].pk
        elif route.is_admin:
            kwargs[param] = _admin_value(route, param, world)
        elif param in values:
            kwargs[param] = values[param]
        else:
            raise AssertionError(f"route {route.name} ({route.pattern}): the matrix test has no value for the "
                                 f"URL parameter {param!r}; add one to the world fixture")
    return reverse(route.name, kwargs=kwargs)


def _admin_value(route: Route, param: str, world):
    if param == "app_label":
        return "jobs"
    if param == "content_type_id":
        from django.contrib.contenttypes.models import ContentType

        return ContentType.objects.get_for_model(type(world["project"])).pk
    if param == "id":  # the admin's password form of a user
        return world["users"]["outsider"].pk
    if param == "object_id":
        from django.contrib import admin

        for model in admin.site._registry:
            if route.name.startswith(f"admin:{model._meta.app_label}_{model._meta.model_name}_"):
                first = model._default_manager.order_by("pk").first()
                return str(first.pk) if first else "1"
        return str(world["project"].pk)
    raise AssertionError(f"admin route {route.name}: no value for {param!r}")


# ---------------------------------------------------------------------------------------- expectations

def expectation(access: Access, persona: str) -> str:
    """"allowed", or how the refusal must look: "login", "forbidden" (403) or "hidden" (404)."""
    if access is Access.ANONYMOUS:
        return "allowed"
    if persona == "anonymous":
        return "login"
    if access is Access.AUTHENTICATED:
        return "allowed"
    if access is Access.STAFF:
        return "allowed" if persona == "staff" else "forbidden"
    role = MEMBER_ROLES.get(persona)
    if role is None:
        return "hidden"
    return "allowed" if ROLE_RANK[role] >= ROLE_RANK[access.project_role] else "forbidden"


def is_page(url: str) -> bool:
    return not url.startswith("/api/") or url.startswith(("/api/docs/", "/api/redoc/"))


def sends_to_login(response) -> bool:
    return response.status_code == 302 and "/login/?next=" in response.get("Location", "")


def check(route: Route, method: str, url: str, persona: str, expected: str, response) -> str | None:
    """None when the answer fits the expectation, else a line for the report."""
    code = response.status_code
    where = f"{method} {url} [{route.name}] as {persona}: expected {expected}, got {code}"
    if route.is_admin:
        # The admin site sends everyone but staff to its sign-in page (from its logout page, to its
        # index, which does the same).
        # Staff get in; past the door the admin's own model permissions apply (the audit log is
        # read-only: 403 on its add page), and a missing object sends them back to the index.
        if expected == "allowed":
            return where if sends_to_login(response) or code >= 500 else None
        refused = sends_to_login(response) or (code == 302 and response["Location"] == reverse("admin:index"))
        return None if refused else where
    if expected == "allowed":
        if code in (401, 403, 404) or code >= 500 or sends_to_login(response):
            return where
        return None
    if expected == "login":
        ok = sends_to_login(response) if is_page(url) else code in (401, 403)
    elif expected == "forbidden":
        ok = code == 403
    else:
        ok = code == 404
    if ok and not is_page(url) and not _json_detail(response):
        return where + " (a refusal must be JSON with a detail)"
    return None if ok else where


def _json_detail(response) -> bool:
    try:
        return bool(response.json().get("detail"))
    except Exception:
        return False


def call(client: Client, method: str, url: str):
    # Scripts ask the API for JSON; every answer, refusals included, must then be JSON.
    headers = {} if is_page(url) else {"HTTP_ACCEPT": "application/json"}
    if method == "GET":
        return client.get(url, **headers)
    if method == "POST":
        return client.post(url, {}, **headers)
    return getattr(client, method.lower())(url, data="{}", content_type="application/json", **headers)


# ---------------------------------------------------------------------------------------------- tests

def test_every_route_has_a_name_and_a_policy():
    missing = []
    for route in walk():
        if route.is_admin:
            continue  # the admin namespace is covered as a whole (policy.NAMESPACES)
        if not route.name:
            missing.append(f"{route.pattern}: give the route a name so that the policy table can name it")
        elif route.name not in policy.ROUTES:
            missing.append(f"{route.name} ({route.pattern}): not in webapp.core.policy.ROUTES")
    assert not missing, "\n".join(missing)
    assert "admin" in policy.NAMESPACES


def test_the_policy_table_names_only_real_routes():
    names = {route.name for route in walk()}
    stale = sorted(set(policy.ROUTES) - names)
    assert not stale, f"the policy table names routes that no longer exist: {stale}"


def test_every_route_answers_every_kind_of_user_as_the_table_says(world):
    users = world["users"]
    clients = {persona: _client(users.get(persona)) for persona in PERSONAS}
    seen, problems, calls = set(), [], 0
    for route in walk():
        if not route.name or (route.name, route.params) in seen:
            continue
        seen.add((route.name, route.params))
        url = url_for(route, world)
        if route.is_admin:
            methods = {"GET": policy.access_for(_match(url), "GET")}
            personas = ADMIN_PERSONAS
        else:
            methods = policy.ROUTES[route.name]
            personas = PERSONAS
        for method, access in methods.items():
            for persona in personas:
                client = _client(users.get(persona)) if route.name in SESSION_ENDING else clients[persona]
                persona_url = url_for(route, world, persona) if route.name in OWN_ROUTES else url
                response = call(client, method, persona_url)
                calls += 1
                problem = check(route, method, persona_url, persona, expectation(access, persona), response)
                if problem:
                    problems.append(problem)
                if route.name in MEMBERSHIP_ENDING and persona in MEMBER_ROLES and persona != "admin":
                    do_set_membership(world["project"], users[persona], MEMBER_ROLES[persona], actor=users["admin"])
        if not route.is_admin:
            problems += _undeclared_methods(route, url, methods, users)
            calls += len(METHODS) - len(methods)
    assert calls > 300
    assert not problems, f"{len(problems)} of {calls} answers differ from webapp.core.policy:\n" + "\n".join(problems)


def test_every_api_route_describes_itself_and_opens_in_the_browser(world):
    """OPTIONS (what a route takes) and an API URL opened in the browser (DRF's browsable API, whose forms
    ask the view for its body's serializer and its queryset) never crash, for the admin and for staff."""
    users = world["users"]
    problems, seen = [], set()
    for route in walk():
        if route.is_admin or not route.name or (route.name, route.params) in seen:
            continue
        seen.add((route.name, route.params))
        url = url_for(route, world, "admin")
        if is_page(url):
            continue
        persona = "staff" if Access.STAFF in policy.ROUTES[route.name].values() else "admin"
        client = _client(users[persona])
        answers = [("OPTIONS", client.options(url, HTTP_ACCEPT="application/json"))]
        if "GET" in policy.ROUTES[route.name]:
            answers.append(("GET as HTML", client.get(url, HTTP_ACCEPT="text/html")))
        problems += [f"{what} {url} [{route.name}] as {persona}: {response.status_code}"
                     for what, response in answers if response.status_code >= 500]
    assert len(seen) > 40
    assert not problems, "\n".join(problems)


def _undeclared_methods(route: Route, url: str, methods: dict, users: dict) -> list[str]:
    """A method the table does not declare must be refused as not allowed (405), even for the most
    privileged caller, so that a view cannot quietly grow a method that escapes the table."""
    least = min(methods.values(), key=list(Access).index)
    persona = "staff" if least is Access.STAFF else ("anonymous" if least is Access.ANONYMOUS else "admin")
    problems = []
    for method in METHODS:
        if method in methods:
            continue
        response = call(_client(users.get(persona)), method, url)
        if response.status_code != 405:
            problems.append(f"{method} {url} [{route.name}] as {persona}: not in the policy table, so it must "
                            f"answer 405; got {response.status_code}")
    return problems


def _client(user) -> Client:
    client = Client(raise_request_exception=False)  # a crash is reported with the rest, as a 500
    if user is not None:
        client.force_login(user)
    return client


def _match(url: str):
    from django.urls import resolve

    return resolve(url)


# ------------------------------------------------------------------- routes the table does not declare

def _undeclared_api(request):
    from rest_framework.response import Response

    return Response({"secret": 42})


def _undeclared_page(request):
    from django.http import HttpResponse

    return HttpResponse("secret page")


def _project_urls():
    from django.contrib.auth.decorators import login_not_required
    from django.urls import path
    from rest_framework.decorators import api_view

    from webapp import urls

    return [path("api/undeclared/", api_view(["GET"])(_undeclared_api), name="undeclared-api"),
            path("undeclared/", login_not_required(_undeclared_page), name="undeclared-page"),
            *urls.urlpatterns]


def test_an_api_route_missing_from_the_table_is_refused_even_to_its_users(settings, owner):
    import sys
    import types

    module = types.ModuleType("undeclared_urls")
    module.urlpatterns = _project_urls()
    sys.modules["undeclared_urls"] = module
    settings.ROOT_URLCONF = "undeclared_urls"
    try:
        client = _client(owner)
        response = client.get("/api/undeclared/", HTTP_ACCEPT="application/json")
        assert response.status_code == 403
        assert "No access policy" in response.json()["detail"]
        # A page the table does not open needs a login, whatever its decorators say.
        response = Client().get("/undeclared/")
        assert sends_to_login(response)
        assert client.get("/undeclared/").status_code == 200
    finally:
        sys.modules.pop("undeclared_urls", None)


# ------------------------------------------------------------------------------- query parameters

UNKNOWN_PARAMETER = "no_such_parameter"


def _documented_query_parameters(schema: dict) -> list[tuple[re.Pattern, set[str]]]:
    """(path regex, names) of every GET operation in the OpenAPI schema."""
    found = []
    for path, item in schema["paths"].items():
        if "get" not in item:
            continue
        # DRF's own ``format`` (any route takes it): a value of 1 would be a 404 for no such format.
        names = {p["name"] for p in item["get"].get("parameters", []) if p["in"] == "query"} - {"format"}
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        found.append((pattern, names))
    return found


def test_every_api_get_route_refuses_a_query_parameter_it_does_not_read_and_takes_those_it_documents(world):
    """A list or a resource asked with a parameter it does not read answered as if it had not been sent: a
    script's ``images/?name=a.png`` got every image, ``members/?role=admin`` every member. Every GET of the API
    refuses it (400 naming it, listing those it reads); and the parameters its schema documents are not refused
    as unknown (an image's density refused its own ``cell``)."""
    users = world["users"]
    admin, staff = _client(users["admin"]), _client(users["staff"])
    schema = admin.get("/api/schema/?format=json").json()
    documented = _documented_query_parameters(schema)
    problems, seen = [], set()
    for route in walk():
        if route.is_admin or not route.name or (route.name, route.params) in seen:
            continue
        seen.add((route.name, route.params))
        if "GET" not in policy.ROUTES[route.name]:
            continue
        url = url_for(route, world, "admin")
        if is_page(url):
            continue
        client = staff if policy.ROUTES[route.name]["GET"] is Access.STAFF else admin
        response = client.get(f"{url}?{UNKNOWN_PARAMETER}=1", HTTP_ACCEPT="application/json")
        detail = _json_detail(response) and response.json()["detail"]
        if response.status_code != 400 or UNKNOWN_PARAMETER not in (detail or ""):
            problems.append(f"GET {url}?{UNKNOWN_PARAMETER}=1 [{route.name}]: {response.status_code} {detail!r}")
        names = set().union(*(names for pattern, names in documented if pattern.match(url)))
        if names:
            response = client.get(url, {name: "1" for name in names}, HTTP_ACCEPT="application/json")
            detail = _json_detail(response) and response.json()["detail"]
            if response.status_code == 400 and "unknown query parameter" in detail:
                problems.append(f"GET {url} [{route.name}] with its documented {sorted(names)}: {detail!r}")
    assert len(seen) > 40
    assert not problems, "\n".join(problems)
