"""The review's cached reads (Django's cache framework): a cached value is reused, the operation that
changes its data invalidates it, and an unreachable cache only costs the computation."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.webapp.review_project import unlabelled_in
from webapp.core.cache import forget_frontiers
from webapp.review import queue
from webapp.training.models import Prediction
from webapp.training.operations import do_store_predictions

pytestmark = pytest.mark.django_db


def left_in_queue(client, rp) -> int:
    return client.get(f"/api/projects/{rp.project.pk}/review/progress/?label_set=breast").json()["left"]


def unreviewed_counts(client, rp) -> dict:
    return client.get(f"/api/projects/{rp.project.pk}/review/gallery/?label_set=breast&counts=1").json()["counts"]


def copy_of(prediction: Prediction) -> Prediction:
    fields = {f.attname: getattr(prediction, f.attname) for f in Prediction._meta.concrete_fields if not f.primary_key}
    return Prediction(**fields)


def test_label_set_classes_are_read_once_then_reused(rp, django_assert_num_queries):
    first = queue.label_set_classes(rp.breast_set)
    assert [c["name"] for c in first] == list(rp.breast_set.class_names)
    with django_assert_num_queries(0):
        again = queue.label_set_classes(rp.breast_set)
    assert again == first
    again[0]["name"] = "changed by the caller"  # a copy: the cached value stays as read
    assert queue.label_set_classes(rp.breast_set) == first


def test_queue_count_reuses_the_prediction_total_until_predictions_are_stored(rp, users, api_client_for,
                                                                             django_capture_on_commit_callbacks):
    client = api_client_for(users["reviewer"])
    free = unlabelled_in(rp, rp.breast_set)
    gone, also_gone = (rp.prediction(n, rp.breast_set) for n in free[:2])
    Prediction.objects.filter(pk=gone.pk).delete()
    assert left_in_queue(client, rp) == len(free) - 1
    # Deleted behind the operations' back: the cached total of predictions is reused (still counts it).
    Prediction.objects.filter(pk=also_gone.pk).delete()
    assert left_in_queue(client, rp) == len(free) - 1
    # A prediction job stores them again: the total is counted anew.
    with django_capture_on_commit_callbacks(execute=True):  # the invalidation waits for the commit
        do_store_predictions(rp.version, [copy_of(gone), copy_of(also_gone)])
    assert left_in_queue(client, rp) == len(free)


def test_gallery_counts_are_reused_until_a_decision_or_stored_predictions(rp, users, api_client_for,
                                                                         django_capture_on_commit_callbacks):
    client = api_client_for(users["reviewer"])
    names = {c["index"]: c["name"] for c in queue.label_set_classes(rp.breast_set)}
    free = unlabelled_in(rp, rp.breast_set)
    counts = unreviewed_counts(client, rp)
    assert sum(counts.values()) == len(free)
    deleted = rp.prediction(free[0], rp.breast_set)
    Prediction.objects.filter(pk=deleted.pk).delete()  # behind the operations' back: the counts are reused
    assert unreviewed_counts(client, rp) == counts
    decided = rp.prediction(free[1], rp.breast_set)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:  # the invalidation waits for the commit
        response = client.post(f"/api/nuclei/{decided.nucleus_id}/labels/",
                               {"label_set": "breast", "class_name": names[decided.class_index], "version": None},
                               format="json")
    assert callbacks
    assert response.status_code == 201, response.content
    after_decision = unreviewed_counts(client, rp)  # counted anew: without the decided and the deleted nucleus
    expected = dict(counts)
    expected[names[deleted.class_index]] -= 1
    expected[names[decided.class_index]] -= 1
    assert after_decision == expected
    # Undo (no earlier label: the nucleus is unreviewed again) and stored predictions invalidate too.
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast"},
                           format="json").status_code == 200
    expected[names[decided.class_index]] += 1
    assert unreviewed_counts(client, rp) == expected
    with django_capture_on_commit_callbacks(execute=True):
        do_store_predictions(rp.version, [copy_of(deleted)])
    assert unreviewed_counts(client, rp) == counts


def test_an_unreachable_cache_costs_only_the_computation(rp, users, api_client_for,
                                                         django_capture_on_commit_callbacks):
    unreachable = {"default": {"BACKEND": "webapp.core.cache.ReusedClientRedisCache",
                               "LOCATION": "redis://127.0.0.1:1/0",
                               "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    with override_settings(CACHES=unreachable):
        from django.core.cache import cache

        with pytest.raises(Exception):
            cache.get("anything")
        assert [c["name"] for c in queue.label_set_classes(rp.breast_set)] == list(rp.breast_set.class_names)
        client = api_client_for(users["reviewer"])
        free = unlabelled_in(rp, rp.breast_set)
        assert left_in_queue(client, rp) == len(free)
        assert sum(unreviewed_counts(client, rp).values()) == len(free)
        item = client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast")
        assert item.status_code == 200 and item.json()["nucleus"]["id"] in free
        with django_capture_on_commit_callbacks(execute=True):  # an invalidation that cannot reach it is dropped
            do_store_predictions(rp.version, [copy_of(rp.prediction(free[0], rp.breast_set))], replace=True)
            forget_frontiers(rp.breast_set.pk)
