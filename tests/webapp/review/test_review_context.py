"""Review context: the nucleus in the project's other label sets (current label and the active model's
class) and the zoomed-out neighbourhood, in the payload of ``review/next``; and the statements that
``next`` runs, counted, so that an ORM query added to the hottest request shows up here."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from webapp.datasets.models import CurrentLabel, LabelClass, Nucleus
from webapp.datasets.operations import do_record_label
from webapp.review import queue

pytestmark = pytest.mark.django_db

# What ``next`` runs for a reviewer with no lease yet, entropy order, caches warm: authentication (2),
# label set and active version, the claim (savepoint, settings, held lease, touched nuclei, candidates,
# the take's own savepoint, lease, audit, release), the nucleus, the region with its neighbours, the other
# label sets: 15; and the queue's frontier, moved down once in ten seconds (queue.FRONTIER_REFRESH): 16 at
# most. The take's savepoint was added so that a refused take drops its row lock (a deadlock between
# claimers otherwise, tests/webapp/review/test_review_race.py). 17: before the take, its dataset's row is
# share-locked, in the statement that also says whether the dataset is being deleted (a lease written meanwhile
# failed the deletion's commit: webapp.datasets.being_deleted, tests/webapp/review/test_save_during_deletion.py).
# Raise it only with a reason: every statement here runs for every nucleus every reviewer sees.
NEXT_STATEMENTS = 17


def next_url(rp, label_set="colon", **params):
    query = "&".join(f"{k}={v}" for k, v in {"label_set": label_set, **params}.items())
    return f"/api/projects/{rp.project.pk}/review/next/?{query}"


def class_name(label_set, index):
    return LabelClass.objects.get(label_set=label_set, index=index).name


def test_next_shows_the_nucleus_in_the_other_label_sets(rp, users, api_client_for):
    # The colon queue serves breast nuclei: their breast ground truth is the other label set's label.
    body = api_client_for(users["reviewer"]).get(next_url(rp)).json()
    nucleus_id = body["nucleus"]["id"]
    [other] = body["other_label_sets"]
    truth = CurrentLabel.objects.select_related("label__author").get(nucleus_id=nucleus_id, label_set=rp.breast_set)
    assert other["id"] == rp.breast_set.pk and other["name"] == "breast"
    assert other["current"] == {"class_index": truth.class_index,
                                "class_name": class_name(rp.breast_set, truth.class_index),
                                "color": LabelClass.objects.get(label_set=rp.breast_set, index=truth.class_index).color,
                                "source": "ground_truth", "author": truth.label.author.get_username()}
    prediction = rp.prediction(nucleus_id, rp.breast_set)
    assert other["prediction"]["class_index"] == prediction.class_index
    assert other["prediction"]["class_name"] == class_name(rp.breast_set, prediction.class_index)
    assert other["prediction"]["probability"] == pytest.approx(prediction.probability)
    # The label set under review is not among the others.
    assert all(o["id"] != rp.colon_set.pk for o in body["other_label_sets"])


def test_a_review_in_the_other_label_set_shows_with_its_author(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    first = client.get(next_url(rp)).json()["nucleus"]["id"]
    client.post(f"/api/nuclei/{first}/release/", {"label_set": "colon"}, format="json")
    do_record_label(Nucleus.objects.get(pk=first), rp.breast_set, 0, author=users["reviewer2"])
    body = client.get(next_url(rp, exclude="")).json()
    assert body["nucleus"]["id"] == first
    [other] = body["other_label_sets"]
    assert other["current"]["class_index"] == 0 and other["current"]["source"] == "review"
    assert other["current"]["author"] == "rob"
    assert other["current"]["class_name"] == class_name(rp.breast_set, 0)


def test_without_a_model_the_others_have_no_prediction(rp, users, api_client_for):
    rp.version.is_active = False
    rp.version.save(update_fields=["is_active"])
    body = api_client_for(users["reviewer"]).get(next_url(rp, strategy="random")).json()
    [other] = body["other_label_sets"]
    assert other["prediction"] is None
    labelled = CurrentLabel.objects.filter(nucleus_id=body["nucleus"]["id"], label_set=rp.breast_set).first()
    assert (other["current"] is None) == (labelled is None)


def test_the_context_region_is_wider_around_the_same_nucleus_and_inside_the_image(rp, users, api_client_for):
    body = api_client_for(users["reviewer"]).get(next_url(rp)).json()
    nucleus = Nucleus.objects.select_related("image").get(pk=body["nucleus"]["id"])
    rx0, ry0, rx1, ry1 = body["region"]["bbox"]
    cx0, cy0, cx1, cy1 = body["context"]["bbox"]
    width, height = nucleus.image.width, nucleus.image.height
    assert 0 <= cx0 <= rx0 and 0 <= cy0 <= ry0 and rx1 <= cx1 <= width and ry1 <= cy1 <= height
    side = rx1 - rx0
    assert cx1 - cx0 == min(width, queue.CONTEXT_FACTOR * side, queue.CONTEXT_MAX_SIDE)
    assert body["context"]["url"] == (f"/api/images/{nucleus.image_id}/region.png?"
                                      f"x0={cx0}&y0={cy0}&x1={cx1}&y1={cy1}")


def test_context_around_centres_and_clamps():
    # A 100 px close-up in the middle of a 2000 px image: 400 px around the same centre.
    assert queue.context_around([950, 950, 1050, 1050], 2000, 2000) == [800, 800, 1200, 1200]
    # Near the corner: shifted inside. Larger than the image: the whole image.
    assert queue.context_around([0, 10, 100, 110], 2000, 2000) == [0, 0, 400, 400]
    assert queue.context_around([0, 0, 96, 96], 256, 300) == [0, 0, 256, 300]
    # Never more than CONTEXT_MAX_SIDE a side.
    assert queue.context_around([0, 0, 600, 600], 5000, 5000)[2] == queue.CONTEXT_MAX_SIDE


def test_next_runs_a_fixed_number_of_statements_one_for_the_other_label_sets(rp, users, api_client_for):
    # Another reviewer's request warms the per-process caches (the classes, the queue's frontier), as
    # any busy server has them; then a reviewer with no lease asks for the next nucleus.
    api_client_for(users["reviewer2"]).get(next_url(rp))
    client = api_client_for(users["reviewer"])
    with CaptureQueriesContext(connection) as captured:
        response = client.get(next_url(rp))
    assert response.status_code == 200 and response.json()["other_label_sets"]
    statements = [q["sql"] for q in captured.captured_queries]
    listing = "\n".join(s[:160] for s in statements)
    assert len(statements) <= NEXT_STATEMENTS, f"review/next ran {len(statements)} statements:\n{listing}"
    others = [s for s in statements if s.startswith("SELECT s.id, s.name") and "datasets_labelset" in s]
    assert len(others) == 1, listing
    # The classes of every label set come from the per-process cache, not from a query each time.
    assert not [s for s in statements if LabelClass._meta.db_table in s], listing
