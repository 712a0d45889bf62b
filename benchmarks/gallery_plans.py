"""Plans and times of the gallery's statements on the review benchmark's database (PostgreSQL).

    .venv/bin/python benchmarks/review_latency.py --nuclei 200000 --keep   # fill a database once
    .venv/bin/python benchmarks/gallery_plans.py                           # then explain the gallery on it
    .venv/bin/python benchmarks/gallery_plans.py --verbose                 # with the full plans

For every sort, order, grouping and filter the gallery offers, it runs the page query the API runs
(webapp.review.gallery.page_cards) as a reviewer of the "alpha" label set, then EXPLAIN ANALYZE on
the same statement, and prints the cards found, the time in Python, PostgreSQL's execution time,
whether a big table was read sequentially and which indexes the plan used. The first line includes
the frontier's search (once per FRONTIER_TTL); the others reuse it. Nothing is written except the
migrations the database may lack.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
parser.add_argument("--db-name", default="nucleus_review_bench")
parser.add_argument("--verbose", action="store_true", help="print every plan")
options = parser.parse_args()
os.environ["DATABASE_URL"] = f"{options.server.rstrip('/')}/{options.db_name}"
os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
os.environ["DEBUG"] = "0"
os.environ.setdefault("SECRET_KEY", "gallery-plans-benchmark")
os.environ["SECURE_COOKIES"] = "0"
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from webapp.core import sql  # noqa: E402
from webapp.datasets.models import LabelSet  # noqa: E402
from webapp.projects.models import Project  # noqa: E402
from webapp.review import gallery, queue  # noqa: E402
from webapp.training.models import ModelVersion  # noqa: E402

call_command("migrate", verbosity=0)

project = Project.objects.get(name="Review benchmark")
label_set = LabelSet.objects.get(project=project, name="alpha")
version = ModelVersion.objects.get(project=project, is_active=True)
user = get_user_model().objects.get(username="bench-reviewer-1")
classes = queue.label_set_classes(label_set)
captured = []
real = sql.fetch_all
def capture(statement, params):
    captured.append((statement, params))
    return real(statement, params)
gallery.sql.fetch_all = capture
cases = [
    dict(), dict(sort="confidence", order="asc"), dict(sort="margin", order="asc"), dict(sort="disagreement", order="desc"),
    dict(sort="margin", order="asc", class_index=1), dict(sort="confidence", min_confidence=0.5, max_confidence=0.7),
    dict(sort="disagreement", class_index=2, min_confidence=0.3, max_confidence=0.6),
    dict(group="class", sort="margin", order="asc"), dict(group="class", sort="confidence", page=20),
    dict(group="image", sort="confidence"), dict(group="image", sort="margin", order="asc", page=10),
    dict(status="reviewed", sort="confidence"), dict(status="reviewed", reviewer=user, sort="margin", order="asc"),
    dict(status="reviewed", group="reviewer", sort="disagreement"), dict(status="reviewed", group="image"),
    dict(sort="margin", order="asc", page=50),
]
verbose = options.verbose
for case in cases:
    spec = gallery.GallerySpec(project=project, label_set=label_set, version=version, user=user, **case)
    if "order" not in case:
        spec.order = gallery.SORTS[spec.sort][3]
    captured.clear()
    started = time.perf_counter()
    cards, more = gallery.page_cards(spec, classes)
    took = (time.perf_counter() - started) * 1000
    statement, params = captured[-1]
    plan = [row[0] for row in sql.fetch_all("EXPLAIN (ANALYZE, TIMING OFF) " + statement, params)]
    execution = [line for line in plan if "Execution Time" in line][0].strip()
    uses = sorted({word for line in plan for word in line.split() if word.endswith("_idx") or word in ("one_current_label", "one_prediction_per_version", "instance_once_per_image")})
    seq = any("Seq Scan on training_prediction" in line or "Seq Scan on datasets_nucleus" in line for line in plan)
    print(f"{str({k: getattr(v, 'username', v) for k, v in case.items()}):75s} {len(cards):3d} cards  {took:7.1f} ms  {execution}  seq-scan-big={seq}  {uses}")
    if verbose:
        print("\n".join(plan))
