"""An undo and the decisions around it: a reviewer's decision that an undo restores still stands (decided: no one
overwrites it without asking for a second opinion), an undo racing a decision on the same nucleus never
deadlocks (both take the lease row first), and one undo sent twice at once is one undo."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.threads import at_once
from webapp.datasets.models import CurrentLabel, LabelSource, Nucleus
from webapp.datasets.operations import StaleLabel
from webapp.review.models import ReviewLease, ReviewUndo
from webapp.review.operations import AlreadyDecided, NothingToUndo, do_decide, do_undo, do_undo_last

postgres = pytest.mark.skipif(connection.vendor != "postgresql",
                              reason="the races need concurrent transactions (PostgreSQL); SQLite serialises writers")


def current(nucleus, label_set):
    return CurrentLabel.objects.select_related("label").get(nucleus=nucleus, label_set=label_set).label


@pytest.mark.django_db
def test_an_undo_that_restores_a_reviewers_decision_leaves_it_decided(rp, users):
    rita, rob = users["reviewer"], users["reviewer2"]
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()
    first = do_decide(nucleus, rp.breast_set, 0, user=rita, expected_label_id=None).label
    second = do_decide(nucleus, rp.breast_set, 1, user=rita, expected_label_id=first.pk).label
    do_undo(nucleus, rp.breast_set, user=rita)
    assert current(nucleus, rp.breast_set).class_index == 0 and current(nucleus, rp.breast_set).pk != second.pk
    lease = ReviewLease.objects.get(nucleus=nucleus, label_set=rp.breast_set)
    assert lease.decided and lease.user == rita
    with pytest.raises(AlreadyDecided):   # it answered 201 and replaced rita's decision
        do_decide(nucleus, rp.breast_set, 2, user=rob, expected_label_id=current(nucleus, rp.breast_set).pk)
    standing = current(nucleus, rp.breast_set)
    assert standing.author == rita and standing.source == LabelSource.REVIEW


@postgres
@pytest.mark.django_db(transaction=True)
def test_an_undo_racing_a_decision_never_deadlocks(rp, users):
    """15 rounds of rita's undo against her new decision on the same nucleus, and against rob's second opinion:
    2 to 7 of them answered 500 (deadlock detected) before both took the lease row first."""
    rita, rob = users["reviewer"], users["reviewer2"]
    outcomes = []
    for nucleus in list(Nucleus.objects.filter(image__dataset=rp.colon).order_by("id")[:15]):
        decision = do_decide(nucleus, rp.breast_set, 0, user=rita, expected_label_id=None).label
        outcomes += at_once(
            lambda n=nucleus: do_undo(n, rp.breast_set, user=rita),
            lambda n=nucleus, d=decision: do_decide(n, rp.breast_set, 1, user=rita, expected_label_id=d.pk),
            lambda n=nucleus, d=decision: do_decide(n, rp.breast_set, 2, user=rob, expected_label_id=d.pk,
                                                    second_opinion=True))
    unexpected = [o for o in outcomes if isinstance(o, Exception)
                  and not isinstance(o, (StaleLabel, NothingToUndo, AlreadyDecided))]
    assert not unexpected, unexpected


@postgres
@pytest.mark.django_db(transaction=True)
def test_one_undo_sent_twice_at_once_is_one_undo(rp, users):
    rita = users["reviewer"]
    for round_, nucleus in enumerate(Nucleus.objects.filter(image__dataset=rp.colon).order_by("id")[:6]):
        do_decide(nucleus, rp.breast_set, 0, user=rita, expected_label_id=None)
        key = f"undo-{round_}"
        undo = (lambda n=nucleus, k=key: do_undo(n, rp.breast_set, user=rita, client_id=k)) if round_ % 2 else \
            (lambda k=key: do_undo_last(rp.breast_set, user=rita, client_id=k))
        first, second = at_once(undo, undo)
        assert isinstance(first, ReviewUndo) and isinstance(second, ReviewUndo), (first, second)
        assert first.pk == second.pk and ReviewUndo.objects.filter(client_id=key).count() == 1


@pytest.mark.django_db
def test_a_deleted_accounts_decisions_stay_decided(rp, users):
    """Its lease rows went with the account: the nuclei it had decided were open to anyone's decision again,
    without a second opinion, though its labels stood."""
    rita, rob = users["reviewer"], users["reviewer2"]
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()
    decision = do_decide(nucleus, rp.breast_set, 0, user=rita, expected_label_id=None).label
    rita.delete()
    lease = ReviewLease.objects.get(nucleus=nucleus, label_set=rp.breast_set)
    assert lease.decided and lease.user is None
    with pytest.raises(AlreadyDecided):
        do_decide(nucleus, rp.breast_set, 2, user=rob, expected_label_id=decision.pk)
    assert current(nucleus, rp.breast_set).pk == decision.pk and current(nucleus, rp.breast_set).author is None
