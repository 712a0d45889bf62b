"""Server strings reach the DOM only as text, under a strict Content-Security-Policy.

The scripts never parse strings as HTML (static/js/dom.js is the one way to build nodes), the
templates never switch escaping off and hold no inline script, style or event handler, and every
page carries the CSP that forbids them. tests/browser/test_xss_payload_names.py checks the same in a
real browser with payload names.

The scripts are ES modules loaded from this origin (script-src 'self' allows them, no build step):
each page loads its own entry module with <script type="module">, shared code comes by relative
imports, and only static/js/api.js calls fetch() or touches the CSRF token.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.webapp.review_project import build_review_project

JS = ROOT / "static" / "js"
SCRIPTS = sorted(p for p in JS.rglob("*.js") if "vendor" not in p.relative_to(JS).parts)
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))
PYTHON = sorted(p for p in (ROOT / "webapp").rglob("*.py") if "migrations" not in p.parts)

# Ways a script can turn a string into markup or code.
HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*\+?=|insertAdjacentHTML|document\.write|createContextualFragment"
                        r"|DOMParser|\.srcdoc\b|setAttribute\(\s*[\"'](on|style)|\beval\s*\(|new\s+Function\s*\("
                        r"|setTimeout\(\s*[\"'`]|setInterval\(\s*[\"'`]|\.cssText\s*=|insertRule")


def code_lines(path: Path):
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        code = line.split("//", 1)[0] if not line.lstrip().startswith("//") else ""
        yield number, code


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_parse_strings_as_html(script):
    found = [f"{script.name}:{number}: {code.strip()}" for number, code in code_lines(script) if HTML_SINKS.search(code)]
    assert not found, "use dom.el()/textContent (static/js/dom.js) instead:\n" + "\n".join(found)


def test_the_sink_pattern_catches_what_it_is_for():
    for line in ('grid.innerHTML = `<p>${name}</p>`;', "item.innerHTML += x;", 'a.insertAdjacentHTML("beforeend", s)',
                 "el.outerHTML = s", 'node.setAttribute("onclick", s)', 'node.setAttribute("style", s)'):
        assert HTML_SINKS.search(line), line
    for line in ("node.textContent = name;", "dom.el('a', {href: url}, name)", "swatch.style.background = c;"):
        assert not HTML_SINKS.search(line), line


def test_every_page_loads_the_site_module_and_the_csrf_token():
    base = (ROOT / "templates" / "base.html").read_text()
    assert """<script type="module" src="{% static 'js/site.js' %}"></script>""" in base
    assert base.index("js/site.js") < base.index("{% block scripts %}")
    assert '<meta name="csrf-token" content="{{ csrf_token }}">' in base  # what api.js sends
    for template in TEMPLATES:
        text = template.read_text()
        if "<script" in text and template.name != "base.html" and "drf_spectacular" not in template.parts:
            assert '{% extends "base.html" %}' in text, f"{template.name} has scripts but does not extend base.html"


class InlineCode(HTMLParser):
    """Inline scripts (other than JSON data blocks), style elements, style and event-handler attributes."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script" and "src" not in attributes and attributes.get("type") != "application/json":
            self._in_script = True

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:60]}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def test_the_inline_code_finder_finds_inline_code():
    assert len(inline_code('<p style="color: red" onclick="x()">a</p><script>alert(1)</script><style>p{}</style>'
                           '<a href="javascript:alert(1)">b</a>')) == 5
    assert not inline_code('<script src="/static/js/dom.js"></script><script id="d" type="application/json">[1]'
                           '</script><p data-class-color="#fff">a</p>')


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT / "templates")))
def test_templates_hold_no_inline_code_and_never_turn_escaping_off(template):
    text = template.read_text()
    stripped = re.sub(r"{[{%#].*?[}%#]}", "", text, flags=re.S)  # template tags cannot hide markup from the finder
    assert not inline_code(stripped), f"{template.name}: {inline_code(stripped)}"
    for forbidden in ("|safe", "autoescape off", "|safeseq", "{% filter safe"):
        assert forbidden not in text, f"{template.name} uses {forbidden}"


def test_python_never_marks_strings_safe():
    found = [f"{path.relative_to(ROOT)}: {marker}" for path in PYTHON for marker in ("mark_safe", "SafeString", "format_html")
             if marker in path.read_text()]
    assert not found, found


REQUIRED = {"default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "object-src": "'none'",
            "base-uri": "'self'", "form-action": "'self'", "frame-ancestors": "'none'"}


def policy(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()}


def assert_strict(response, where: str) -> None:
    found = policy(response)
    for directive, value in REQUIRED.items():
        assert found.get(directive) == value, f"{where}: {directive} is {found.get(directive)!r}, not {value!r}"
    assert "unsafe" not in response.headers["Content-Security-Policy"], where


@pytest.mark.django_db
def test_every_page_is_strict_and_renders_payload_names_as_text(client, owner, tmp_path, media_root):
    from webapp.datasets.models import Dataset, Image, LabelClass, LabelSet
    from webapp.jobs.models import Job
    from webapp.projects.models import Project

    rp = build_review_project(owner, tmp_path / "sources", images=1, nuclei=6)
    payload = '"><img src=x onerror=alert(1)>'
    Project.objects.filter(pk=rp.project.pk).update(name=f"{payload} project", description=payload)
    Dataset.objects.filter(pk=rp.colon.pk).update(name=f"{payload} colon", provenance=payload)
    LabelSet.objects.filter(pk=rp.colon_set.pk).update(name=f"{payload} set")
    LabelClass.objects.filter(label_set=rp.colon_set, index=0).update(name="<script>alert(2)</script>")
    Image.objects.filter(dataset=rp.colon).update(name=f"{payload} tile")
    image = Image.objects.filter(dataset=rp.colon).first()
    nucleus = rp.nuclei(rp.colon)[0]
    job = Job.objects.create(kind="import", project=rp.project, created_by=owner, state="failed", error=payload,
                             log_tail=payload)

    client.force_login(owner)
    pid = rp.project.pk
    pages = ["/", "/account/", f"/projects/{pid}/", f"/projects/{pid}/datasets/{rp.colon.pk}/",
             f"/projects/{pid}/images/{image.pk}/", f"/projects/{pid}/review/", f"/projects/{pid}/review/gallery/",
             f"/projects/{pid}/review/agreement/", f"/projects/{pid}/nuclei/{nucleus.pk}/", f"/jobs/{job.pk}/"]
    for url in pages:
        response = client.get(url, {"label_set": f"{payload} set"} if "/review/" in url else {})
        assert response.status_code == 200, url
        assert_strict(response, url)
        html = response.content.decode()
        assert "<img src=x" not in html and "<script>alert" not in html, f"{url} renders a payload as markup"
        assert not inline_code(html), f"{url}: {inline_code(html)}"
        assert re.search(r'<meta name="csrf-token" content="[^"<>]+">', html), f"{url}: no CSRF token for api.js"
    client.logout()
    login = client.get("/login/")
    assert_strict(login, "/login/")
    assert not inline_code(login.content.decode())


@pytest.mark.django_db
def test_api_docs_widen_the_policy_only_as_far_as_their_bundles_need(client, owner):
    client.force_login(owner)
    swagger = client.get("/api/docs/")
    found = policy(swagger)
    assert found["img-src"] == "'self' data:"  # Swagger UI's icons
    assert found["script-src"] == "'self'" and found["style-src"] == "'self'"
    assert not inline_code(swagger.content.decode())
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    redoc = client.get("/api/redoc/")
    found = policy(redoc)
    assert found["script-src"] == "'self'"  # never script
    assert found["style-src"] == "'self' 'unsafe-inline'" and found["worker-src"] == "blob:"
    assert not inline_code(redoc.content.decode())
    # Elsewhere the site's policy is untouched.
    assert_strict(client.get("/account/"), "/account/")


@pytest.mark.django_db
def test_the_browsable_api_lets_in_its_one_inline_style_by_hash_only(client, owner):
    import base64
    import hashlib

    from webapp.projects.operations import do_create_project

    project = do_create_project("Browsable", actor=owner)
    client.force_login(owner)
    # A project's page has the Extra Actions menu, whose button DRF's template floats with a style attribute.
    page = client.get(f"/api/projects/{project.pk}/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    styles = set(re.findall(r'style="([^"]*)"', html))
    assert styles, "the browsable API page shows no Extra Actions menu: this test checks nothing"
    found = policy(page)
    allowed = found["style-src-attr"].split()
    assert allowed[0] == "'unsafe-hashes'"
    for style in styles:
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in allowed, f"the style attribute {style!r} is blocked by the CSP"
    assert [i for i in inline_code(html) if "style=" not in i] == [], "inline code beside the style attribute"
    assert found["script-src"] == "'self'" and found["style-src"] == "'self'"
    assert "'unsafe-inline'" not in page["Content-Security-Policy"]
    # JSON answers and the pages of the site keep the policy as it is.
    assert "style-src-attr" not in policy(client.get(f"/api/projects/{project.pk}/"))
    assert_strict(client.get(f"/projects/{project.pk}/"), "the project page")


# ------------------------------------------------------------------ the scripts are ES modules
# <script ... src="{% static 'js/name.js' %}">: a script of this app in a template.
SCRIPT_TAG = re.compile(r"<script\b(?P<attrs>[^>]*?)\bsrc=\"{% static '(?P<path>[^']+)' %}\"(?P<rest>[^>]*)>")
IMPORT = re.compile(r"^\s*import\s+(?:(?P<what>[^;]*?)\s+from\s+)?[\"'](?P<path>[^\"']+)[\"'];?\s*$", re.M)
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|class|const|let|var)\s+(?P<name>\w+)", re.M)
# Globals the modules set for others: none, but the slide viewer's handle for the browser tests.
ALLOWED_GLOBALS = {"slideViewer"}


def module_imports(script: Path) -> list[tuple[Path, set[str] | None]]:
    """(the imported file, the names imported, or None for a namespace or bare import) per import."""
    found = []
    for match in IMPORT.finditer(script.read_text()):
        path, what = match["path"], (match["what"] or "").strip()
        assert path.startswith(("./", "../")) and path.endswith(".js"), (
            f"{script.name}: import {path!r}: relative, with its .js (the browser loads it as written)")
        names = None
        if what.startswith("{"):
            names = {part.split(" as ")[0].strip() for part in what.strip("{}").split(",") if part.strip()}
        found.append(((script.parent / path).resolve(), names))
    return found


def template_scripts() -> list[tuple[str, str, str]]:
    """(template, static path, the tag's attributes) for every script tag of the app's templates."""
    return [(str(t.relative_to(ROOT / "templates")), m["path"], m["attrs"] + m["rest"])
            for t in TEMPLATES for m in SCRIPT_TAG.finditer(t.read_text())]


def test_the_module_patterns_find_imports_and_exports():
    text = 'import { api, ApiError } from "./api.js";\nimport * as keys from "./keys.js";\nimport "./site.js";\n'
    assert [(m["what"], m["path"]) for m in IMPORT.finditer(text)] == [
        ("{ api, ApiError }", "./api.js"), ("* as keys", "./keys.js"), (None, "./site.js")]
    exports = "export async function api() {}\nexport const el = 1;\n"
    assert [m["name"] for m in EXPORT.finditer(exports)] == ["api", "el"]
    tags = SCRIPT_TAG.findall("""<script type="module" src="{% static 'js/review.js' %}"></script>""")
    assert tags == [(' type="module" ', "js/review.js", "")]


def test_every_script_is_an_es_module_that_a_page_loads_as_one():
    tags = template_scripts()
    assert tags, "no script tags found: the pattern is out of date"
    for template, path, attrs in tags:
        if path.startswith("js/"):
            assert 'type="module"' in attrs, f"{template}: {path} is loaded as a classic script"
        else:  # vendored libraries (OpenSeadragon) stay classic scripts; a module reads their global
            assert path.startswith("vendor/") and "module" not in attrs, f"{template}: {path}"
    entries = {(ROOT / "static" / path).resolve() for _, path, _ in tags if path.startswith("js/")}
    assert all(entry.is_file() for entry in entries), entries
    # Every script is an entry module or imported by one: nothing is left to load as a classic script.
    reached, todo = set(), list(entries)
    while todo:
        script = todo.pop()
        if script not in reached:
            reached.add(script)
            todo.extend(target for target, _ in module_imports(script))
    unreached = sorted(p.name for p in SCRIPTS if p.resolve() not in reached)
    assert not unreached, f"not loaded by any page, neither as an entry module nor by an import: {unreached}"
    for script in SCRIPTS:
        text = script.read_text()
        assert "use strict" not in text and not re.search(r"^\(function\b", text, re.M), (
            f"{script.name}: an IIFE; a module has its own scope and is strict already")
        set_globals = set(re.findall(r"\bwindow\.(\w+)\s*=(?!=)", text)) - ALLOWED_GLOBALS
        assert not set_globals, f"{script.name} sets globals {set_globals}: export them instead"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_module_imports_resolve_to_exported_names(script):
    for target, names in module_imports(script):
        assert target.is_file() and JS.resolve() in target.parents, f"{script.name} imports {target}, not a script here"
        exported = {m["name"] for m in EXPORT.finditer(target.read_text())}
        missing = (names or set()) - exported
        assert not missing, f"{script.name} imports {sorted(missing)} that {target.name} does not export"


# One fetch wrapper and one way to the CSRF token, in api.js: every other module goes through it.
SERVER_CALLS = re.compile(r"\bfetch\s*\(|XMLHttpRequest|sendBeacon|csrf|document\.cookie", re.I)


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "api.js"], ids=lambda p: p.name)
def test_only_api_js_calls_the_server_and_reads_the_csrf_token(script):
    found = [f"{script.name}:{number}: {code.strip()}" for number, code in code_lines(script)
             if SERVER_CALLS.search(code)]
    assert not found, "import { api } from \"./api.js\" instead:\n" + "\n".join(found)


def test_the_server_call_pattern_catches_what_it_is_for():
    for line in ("fetch(url, { method })", "const t = document.cookie", 'form.elements.csrfmiddlewaretoken.value',
                 'headers: { "X-CSRFToken": token }', "navigator.sendBeacon(url)", "new XMLHttpRequest()"):
        assert SERVER_CALLS.search(line), line
    assert not SERVER_CALLS.search('const answer = await api(url, { method: "POST", body });')

