"""One-way dependencies between the apps: an AST walk over webapp/, workers/ and mlcore/ builds the app-level
import graph and fails on any cycle (naming it) and on any import against the declared layer order.

Imports inside functions count as much as those at the top of a module: a lazy import hides a dependency
from the reader and from import-time checks, it does not remove it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlcore", "webapp", "workers")

# The layers, lowest first: a module may import its own layer and the layers before it, never one after it.
# Why this order (each app's models point down the list: a Job belongs to a project, a dataset's rows to a
# project, a model version to a dataset's label set, a review to all of them):
# - mlcore: the pure library (no Django, no Celery, nothing of webapp or workers).
# - workers.celery: the Celery application alone (configuration, beat schedule; imports nothing of webapp), so
#   that the web app can reach the broker and send a task by its name without importing the tasks.
# - webapp.core: media, audit, policy, domain errors, cache keys: what every app builds on.
# - webapp.projects: projects and their members; who may do what in a project.
# - webapp.jobs: the Job row, its state changes, its page, what a deletion job waits for, and the sweep of what
#   killed jobs left behind (the apps above register their own files with it).
# - webapp.datasets: datasets, images, nuclei and labels of a project; imports run as jobs.
# - webapp.training: model versions and predictions made from a project's datasets, run as jobs.
# - webapp.review: the review queue and labels, over datasets and predictions.
# - webapp.projects.deletion, webapp.projects.api, webapp.projects.pages: what concerns a project as a whole
#   lives with the project but sits above what it holds. Its deletion deletes its datasets and runs as a job;
#   the API's project detail shows its label sets and datasets; the front page and a project's page show
#   everything (datasets, jobs, the training panel, members, deletion).
# - webapp.backup: the backup and restore of the whole installation (database and media), which names every app's
#   files.
# - workers: the tasks and their handlers, which call into every app above.
LAYERS = ["mlcore", "workers.celery", "webapp.core", "webapp.projects", "webapp.jobs", "webapp.datasets",
          "webapp.training", "webapp.review", "webapp.projects.deletion", "webapp.projects.api",
          "webapp.projects.pages", "webapp.backup", "workers"]

# The wiring, above every layer and so in none: settings and the URL configurations (webapp.urls and each app's
# *urls.py) name every app's views, the servers' entry points load them, management commands and migrations
# are run from outside.
WIRING_MODULES = {"webapp", "webapp.settings", "webapp.urls", "webapp.wsgi", "webapp.asgi", "webapp.gunicorn_conf"}
WIRING_FOLDERS = {"management", "migrations"}

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module ``tree`` imports, anywhere in it (inside functions too), relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
            # "from webapp.jobs import operations" imports webapp.jobs.operations.
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def layer_of(module: str) -> str | None:
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def _is_wiring(path: Path, module: str) -> bool:
    return (module in WIRING_MODULES or path.stem.endswith("urls")
            or bool(WIRING_FOLDERS & set(path.relative_to(ROOT).parts)))


def project_imports() -> list[tuple[str, int, str, str, str]]:
    """(file, line, imported module, its layer, the file's layer) for each import between two layers."""
    edges = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            if _is_wiring(path, module):
                continue
            source = layer_of(module)
            assert source, f"{module} is in no layer: add it to LAYERS or to the wiring"
            tree = ast.parse(path.read_text(), filename=str(path))
            for line, name in imported_modules(tree, module, path.name == "__init__.py"):
                target = layer_of(name)
                if target and target != source:
                    edges.append((path.relative_to(ROOT).as_posix(), line, name, target, source))
    return edges


def _upward(edges):
    return [edge for edge in edges if LAYERS.index(edge[3]) > LAYERS.index(edge[4])]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for after in sorted(graph.get(node, ())):
            if state.get(after) == "open":
                return stack[stack.index(after):] + [after]
            if after not in state and (cycle := visit(after)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.fixture(scope="module")
def edges():
    return project_imports()


def test_no_cycle_between_apps(edges):
    graph = defaultdict(set)
    witness = {}
    for file, line, name, target, source in edges:
        graph[source].add(target)
        witness.setdefault((source, target), f"{file}:{line} imports {name}")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between apps: " + " -> ".join(cycle) + "\n" + "\n".join(
        witness[pair] for pair in zip(cycle, cycle[1:]))


def test_no_upward_import(edges):
    upward = [f"{file}:{line} ({source}) imports {name} ({target})"
              for file, line, name, target, source in _upward(edges)]
    assert not upward, ("imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(upward)
                        + "\nmove the code to the lower app, or let the lower app offer a registry the upper one "
                          "fills (as workers.tasks.run_job is sent by name from webapp.jobs)")


def test_mlcore_imports_nothing_of_the_web_app_or_workers(edges):
    assert [edge for edge in edges if edge[4] == "mlcore"] == []


def test_the_walker_sees_imports_inside_functions_and_relative_ones():
    tree = ast.parse("def enqueue(job):\n    from workers.tasks import run_job\n"
                     "class Page:\n    def get(self):\n        from ..datasets import queries\n")
    found = [name for _, name in imported_modules(tree, "webapp.jobs.operations")]
    assert "workers.tasks" in found and "workers.tasks.run_job" in found
    assert "webapp.datasets" in found and "webapp.datasets.queries" in found
    assert layer_of("workers.tasks") == "workers" and layer_of("workers.celery") == "workers.celery"
    assert layer_of("webapp.jobs.operations") == "webapp.jobs" and layer_of("django.db") is None
    assert layer_of("webapp.projects.pages") == "webapp.projects.pages"
    assert layer_of("webapp.projects.access") == "webapp.projects"


def test_a_planted_upward_import_and_cycle_are_caught():
    source_edges = [("webapp/jobs/operations.py", 9, "workers.tasks", "workers", "webapp.jobs"),
                    ("workers/tasks.py", 15, "webapp.jobs.operations", "webapp.jobs", "workers")]
    assert _upward(source_edges) == source_edges[:1]
    assert find_cycle({"webapp.jobs": {"workers"}, "workers": {"webapp.jobs"}}) == [
        "webapp.jobs", "workers", "webapp.jobs"]
    assert find_cycle({"workers": {"webapp.jobs"}, "webapp.jobs": {"webapp.core"}}) is None


def test_the_walk_covers_the_apps(edges):
    sources = {edge[4] for edge in edges}
    assert {"webapp.jobs", "webapp.datasets", "webapp.training", "webapp.review", "workers"} <= sources
