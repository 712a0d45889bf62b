"""do_record_label and do_undo check the current label only when asked to (``check_current``)."""

import pytest
from django.db import transaction

from tests.webapp.review_project import unlabelled_in
from webapp.datasets.models import CurrentLabel, Nucleus
from webapp.datasets.operations import StaleLabel, do_record_label
from webapp.review.operations import do_decide, do_undo

pytestmark = pytest.mark.django_db


def test_the_current_label_is_checked_only_with_check_current(rp, users):
    nucleus = Nucleus.objects.get(pk=unlabelled_in(rp, rp.breast_set)[0])
    first = do_record_label(nucleus, rp.breast_set, 0, author=users["reviewer"])
    with pytest.raises(StaleLabel), transaction.atomic():  # the caller saw no label: another one stands now
        do_record_label(nucleus, rp.breast_set, 1, author=users["reviewer"], check_current=True, expected_label_id=None)
    checked = do_record_label(nucleus, rp.breast_set, 1, author=users["reviewer"], check_current=True,
                              expected_label_id=first.pk)
    unchecked = do_record_label(nucleus, rp.breast_set, 2, author=users["reviewer"])  # over whatever stands
    assert CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set).label_id == unchecked.pk
    assert unchecked.previous_id == checked.pk


def test_undo_checks_the_current_label_only_with_check_current(rp, users):
    nucleus = Nucleus.objects.get(pk=unlabelled_in(rp, rp.breast_set)[0])
    decision = do_decide(nucleus, rp.breast_set, 0, user=users["reviewer"], expected_label_id=None).label
    with pytest.raises(StaleLabel), transaction.atomic():
        do_undo(nucleus, rp.breast_set, user=users["reviewer"], check_current=True, expected_label_id=decision.pk + 1)
    do_undo(nucleus, rp.breast_set, user=users["reviewer"])
    assert not CurrentLabel.objects.filter(nucleus=nucleus, label_set=rp.breast_set).exists()
