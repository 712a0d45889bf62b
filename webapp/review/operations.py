"""Every state change of the review queue: claiming, deciding, skipping, undoing, settling.

Labels are written only through :func:`webapp.datasets.operations.do_record_label` (append-only
history, version check, idempotent ``client_id``); these functions add the queue's bookkeeping
(leases, skips, undo records, settlements) in the same transaction, with an audit row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from webapp.core import audit, sql
from webapp.core.cache import delete_on_commit, forget_frontiers, unreviewed_counts_key
from webapp.datasets.being_deleted import dataset_of, deletions, hold_dataset_of, refusal
from webapp.datasets.models import CurrentLabel, Label, LabelSet, LabelSource, Nucleus
from webapp.datasets.operations import StaleLabel, do_record_label
from webapp.training.models import ModelVersion, Prediction

from . import queue
from .models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo
from .queue import LEASE_SECONDS, QueueSpec


class ReviewError(Exception):
    """A decision that cannot be carried out as asked (the API answers 409 with the message)."""


class NothingToUndo(ReviewError):
    pass


class ClientIdReused(ReviewError):
    pass


class AlreadyDecided(ReviewError):
    """Another reviewer's decision on this nucleus stands, and no second opinion was asked for."""

    def __init__(self, current: CurrentLabel | None):
        self.current = current
        super().__init__("another reviewer already decided this nucleus")


# ------------------------------------------------------------------------------------- leases

def _lease_sql(*, on_conflict_set: str, takeable: str | None) -> str:
    table = connection.ops.quote_name(ReviewLease._meta.db_table)
    where = f" WHERE {takeable.format(t=table)}" if takeable else ""
    return (f"INSERT INTO {table} (nucleus_id, label_set_id, user_id, expires_at, claimed_at, decided) "
            f"VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (nucleus_id, label_set_id) DO UPDATE SET "
            f"{on_conflict_set}{where} RETURNING id")


# Claiming. PostgreSQL evaluates the WHERE of ON CONFLICT DO UPDATE on the latest committed version of
# the row (after waiting for a transaction that holds it), not on the statement's snapshot, so a
# decision committed a moment ago is always seen: a decided row is never taken. (An INSERT ... WHERE
# NOT EXISTS(label) would not do: its snapshot can predate that commit.)
_CLAIM = _lease_sql(on_conflict_set="user_id = excluded.user_id, expires_at = excluded.expires_at, "
                                    "claimed_at = excluded.claimed_at",
                    takeable="NOT {t}.decided AND {t}.expires_at <= %s")
# A second opinion may take a decided row (it stays decided: the first decision stands).
_CLAIM_SECOND_OPINION = _lease_sql(on_conflict_set="user_id = excluded.user_id, expires_at = excluded.expires_at, "
                                                   "claimed_at = excluded.claimed_at",
                                   takeable="{t}.expires_at <= %s")
# An undo gives the nucleus back to the reviewer who undid: no longer decided, leased to them.
_RETAKE = _lease_sql(on_conflict_set="user_id = excluded.user_id, expires_at = excluded.expires_at, "
                                     "claimed_at = excluded.claimed_at, decided = excluded.decided",
                     takeable=None)
# Deciding: of two reviewers deciding the same nucleus, the row lock orders them and the second one
# sees ``decided``; it gets no row back unless it is the decider again or asked for a second opinion.
_DECIDE = _lease_sql(on_conflict_set="user_id = excluded.user_id, expires_at = excluded.expires_at, "
                                     "decided = excluded.decided",
                     takeable="NOT {t}.decided OR {t}.user_id = %s OR %s")
# Locking the row before anything else, changing nothing: an existing row keeps its values (the update sets a
# column to itself), a missing one is inserted expired and undecided, which is what no row means.
_LOCK = _lease_sql(on_conflict_set="decided = {t}.decided".format(
    t=connection.ops.quote_name(ReviewLease._meta.db_table)), takeable=None)


def _lease_row(sql: str, nucleus_id: int, label_set: LabelSet, user, expires, now, decided: bool, *extra):
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [nucleus_id, label_set.pk, user.pk, adapt(expires), adapt(now), decided, *extra])
        row = cursor.fetchone()
    return row[0] if row else None


def _take(nucleus_id: int, label_set: LabelSet, user, now, *, second_opinion: bool = False) -> ReviewLease | None:
    """Claim one nucleus in a single statement: insert a lease, or take over an expired one in place;
    never a decided nucleus (unless for a second opinion). ``None`` when it is not to be had.

    ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` is atomic on PostgreSQL and SQLite alike: of two
    reviewers claiming the same nucleus at once, the unique constraint on (nucleus, label_set) lets
    exactly one through, and the loser simply gets no row back (no error, no savepoint).
    """
    expires = now + timedelta(seconds=LEASE_SECONDS)
    sql = _CLAIM_SECOND_OPINION if second_opinion else _CLAIM
    # PostgreSQL locks the conflicting row even when the WHERE refuses it, until the transaction ends. A
    # claimer that kept the rows it failed to take while trying its next candidates could deadlock with
    # another doing the same in another order (each pass draws a new sample): rolling back to this
    # savepoint drops a refused row's lock, so a claim holds at most the one row it is trying.
    savepoint = transaction.savepoint()
    pk = _lease_row(sql, nucleus_id, label_set, user, expires, now, False, connection.ops.adapt_datetimefield_value(now))
    if pk is None:
        transaction.savepoint_rollback(savepoint)
        return None
    # A taken row's savepoint is left to end with the transaction: releasing it would cost every claim a statement.
    return ReviewLease(pk=pk, nucleus_id=nucleus_id, label_set_id=label_set.pk, user_id=user.pk,
                       expires_at=expires, claimed_at=now)


# A pass fails only when every candidate was just claimed by someone else; the next pass no longer
# sees those (the losing INSERT waited for their commit), so passes always make progress. Three were
# too few with four reviewers on a dozen nuclei: a claimer could be told the queue was empty.
CLAIM_ATTEMPTS = 50


def _commit_without_waiting_for_disk() -> None:
    """This transaction's commit returns before PostgreSQL has flushed it to disk (it follows within
    wal_writer_delay). Only for claims: a claim lost in a database crash costs nothing (the nucleus is
    simply free again), and not waiting for the flush saves a claim 2-3 ms. A decision always waits."""
    if connection.vendor == "postgresql":
        sql.execute("SET LOCAL synchronous_commit TO OFF", [])


def do_claim_next(spec: QueueSpec) -> ReviewLease | None:
    """The reviewer's next nucleus, leased to them for :data:`LEASE_SECONDS`.

    Their own unexpired lease comes first (a reload shows the same nucleus; an undo brings its
    nucleus back); otherwise the best free candidate of the strategy is claimed atomically. Items the
    reviewer skipped come back only when nothing else is left. ``None`` when the queue is empty.
    """
    now = timezone.now()
    with transaction.atomic():
        _commit_without_waiting_for_disk()
        lease = queue.held_lease(spec, now)
        if lease is not None and _being_deleted(lease.nucleus_id):
            lease = None   # its dataset is going (a save on it was refused): not shown again
        if lease is not None:
            lease.expires_at = now + timedelta(seconds=LEASE_SECONDS)
            # Renewed only while still this reviewer's and undecided (a decision from the gallery or
            # another page may have landed since it was read).
            renewable = ReviewLease.objects.filter(pk=lease.pk, user_id=spec.user.pk)
            if not spec.include_labelled:
                renewable = renewable.filter(decided=False)
            if renewable.update(expires_at=lease.expires_at):
                return lease
        for with_skips in (True, False):
            for _attempt in range(CLAIM_ATTEMPTS):
                found = queue.candidates(spec, now, with_skips=with_skips)
                if not found:
                    # SKIP LOCKED hides the rows other claimers are looking at; near the end of a
                    # queue that can be every free row. Look again without skipping: _take waits
                    # for their commits and then knows which rows they took.
                    found = queue.candidates(spec, now, with_skips=with_skips, skip_locked=False)
                if not found:
                    break
                for nucleus_id in found:
                    # Its dataset's row share-locked before the lease is written (webapp.datasets.being_deleted).
                    dataset = dataset_of(nucleus_id)
                    if dataset is None:
                        continue   # deleted meanwhile
                    if dataset[1]:
                        # Being deleted: the queue leaves its dataset out from now on (BeingDeleted: the project).
                        refused = refusal(dataset[0], deletions(spec.label_set.project_id))
                        if refused is not None and refused.dataset_id is None:
                            raise refused
                        spec = replace(spec, exclude_datasets=(*spec.exclude_datasets, dataset[0]))
                        break
                    lease = _take(nucleus_id, spec.label_set, spec.user, now, second_opinion=spec.include_labelled)
                    if lease is not None:
                        audit.record("review.claimed", actor=spec.user, target=f"datasets.nucleus:{nucleus_id}",
                                     project=spec.label_set.project_id,
                                     label_set=spec.label_set.name, strategy=spec.strategy,
                                     expires_at=lease.expires_at.isoformat())
                        return lease
    return None


def _being_deleted(nucleus_id: int) -> bool:
    dataset = dataset_of(nucleus_id)
    return dataset is None or dataset[1]


def _expire(nucleus: Nucleus, label_set: LabelSet, user, now, *, expires_at=None) -> int:
    """End a reviewer's lease (the one that ends at ``expires_at``, if given). The row stays (expired): the
    queue remembers the nucleus was touched (see :mod:`webapp.review.queue`, "the frontier"); the next
    claimer takes it over in place."""
    leases = ReviewLease.objects.filter(nucleus=nucleus, label_set=label_set, user=user, expires_at__gt=now)
    if expires_at is not None:
        leases = leases.filter(expires_at=expires_at)
    return leases.update(expires_at=now)


def do_release(nucleus: Nucleus, label_set: LabelSet, user, *, expires_at=None) -> int:
    """Give a lease back without deciding: the nucleus returns to the queue at once. With ``expires_at``
    only if the lease still ends then: a renewal since (the same reviewer's reload) keeps it."""
    with transaction.atomic():
        released = _expire(nucleus, label_set, user, timezone.now(), expires_at=expires_at)
        if released:
            audit.record("review.released", actor=user, target=nucleus, project=label_set.project_id,
                         label_set=label_set.name)
    return released


def do_release_member(project, user) -> int:
    """A member taken out of the project's review (removed, or made a viewer): the nuclei they had claimed are
    free at once, not after their 5 minutes; their decisions stand. In the caller's transaction (the member's
    change, webapp.projects.operations.MEMBER_LEFT_HOOKS). Returns how many claims ended."""
    now = timezone.now()
    return ReviewLease.objects.filter(user=user, label_set__project=project, decided=False,
                                      expires_at__gt=now).update(expires_at=now)


def do_skip(nucleus: Nucleus, label_set: LabelSet, user) -> ReviewSkip:
    """Put a nucleus aside: release the lease; the queue offers it to this reviewer again only when
    nothing else is left or after :data:`queue.SKIP_COOLDOWN`."""
    now = timezone.now()
    with transaction.atomic():
        hold_dataset_of(nucleus, label_set.project_id)
        _expire(nucleus, label_set, user, now)
        skip, _ = ReviewSkip.objects.update_or_create(nucleus=nucleus, label_set=label_set, user=user,
                                                      defaults={"skipped_at": now})
        audit.record("review.skipped", actor=user, target=nucleus, project=label_set.project_id,
                     label_set=label_set.name)
    return skip


# ------------------------------------------------------------------------------------- decisions

def _existing_for_client_id(client_id: str, nucleus: Nucleus, label_set: LabelSet, user) -> Label | None:
    if not client_id:
        return None
    existing = Label.objects.filter(client_id=client_id, author=user).first()
    if existing is not None and (existing.nucleus_id != nucleus.pk or existing.label_set_id != label_set.pk):
        raise ClientIdReused(f"client_id {client_id!r} was already used for another label")
    return existing


def _undo_for_client_id(client_id: str, user, label_set: LabelSet, nucleus: Nucleus | None = None) -> ReviewUndo | None:
    """The user's own undo made with this key (a replay), which must be of the same label set (and nucleus,
    when one is named); another user's key is none of theirs."""
    if not client_id:
        return None
    done = ReviewUndo.objects.select_related("label").filter(client_id=client_id, actor=user).first()
    if done is not None and (done.label.label_set_id != label_set.pk
                             or (nucleus is not None and done.label.nucleus_id != nucleus.pk)):
        raise ClientIdReused(f"client_id {client_id!r} was already used for another undo")
    return done


def predicted_by(version: ModelVersion | None, nucleus: Nucleus, label_set: LabelSet) -> tuple[int | None, int | None]:
    """``(version id, predicted class)`` when ``version`` predicted this nucleus in this label set, else
    ``(None, None)``. The version id is stored on the label, so that the reviewer's agreement with
    the model can be measured."""
    if version is None:
        return None, None
    row = sql.fetch_one(f"SELECT class_index FROM {sql.table(Prediction)} WHERE model_version_id = %s "
                        f"AND label_set_id = %s AND nucleus_id = %s", [version.pk, label_set.pk, nucleus.pk])
    return (version.pk, row[0]) if row is not None else (None, None)


@dataclass
class Decision:
    label: Label
    created: bool                     # False: a replayed client_id answered with its earlier row
    # What the model said, when known here (None: look it up; a label with a model version always has
    # a prediction, see predicted_by).
    predicted_class: int | None = None


def _mark_decided(nucleus: Nucleus, label_set: LabelSet, user, now, *, second_opinion: bool) -> bool:
    """The gate of every decision, in its transaction: the nucleus's lease row becomes decided by
    ``user`` (its lease ends). False, and nothing written, when another reviewer's decision stands and
    this is not a second opinion."""
    return _lease_row(_DECIDE, nucleus.pk, label_set, user, now, now, True, user.pk, bool(second_opinion)) is not None


def do_decide(nucleus: Nucleus, label_set: LabelSet, class_index: int, *, user, expected_label_id,
              client_id: str = "", version: ModelVersion | None = None, second_opinion: bool = False,
              class_count: int | None = None) -> Decision:
    """Record a reviewer's class for a nucleus and end the lease on it. A replayed ``client_id``
    answers with the row it created the first time (``created`` False).

    Raises :class:`StaleLabel` when the current label is no longer ``expected_label_id``, and
    :class:`AlreadyDecided` when another reviewer decided the nucleus already, unless
    ``second_opinion`` (a reviewer asked for labelled nuclei too, for the agreement figures).
    """
    model_version_id, predicted = predicted_by(version, nucleus, label_set)
    try:
        with transaction.atomic():
            # Not on a nucleus whose dataset is being deleted; and no deletion starts until this is committed.
            hold_dataset_of(nucleus, label_set.project_id)
            # Then the gate: it locks the lease row, so decisions on one nucleus queue up here. Whoever
            # else held the lease (their save will answer 409) gives it up.
            if not _mark_decided(nucleus, label_set, user, timezone.now(), second_opinion=second_opinion):
                raise AlreadyDecided(queue.current_label(nucleus.pk, label_set))
            label = do_record_label(nucleus, label_set, class_index, author=user, source=LabelSource.REVIEW,
                                    check_current=True, expected_label_id=expected_label_id, client_id=client_id,
                                    model_version_id=model_version_id, class_count=class_count)
    except (StaleLabel, IntegrityError, AlreadyDecided):
        # A replay (the client sent it again, or twice at once) ends here, on the version check or on
        # the unique client_id, rather than costing every save a lookup first: its first row is the answer.
        existing = _existing_for_client_id(client_id, nucleus, label_set, user)
        if existing is not None:
            return Decision(existing, False)
        raise
    return Decision(label, True, predicted)


def do_undo(nucleus: Nucleus, label_set: LabelSet, *, user, client_id: str = "",
            check_current: bool = False, expected_label_id: int | None = None) -> ReviewUndo:
    """Take back the reviewer's own current decision on a nucleus.

    Appends a row that restores the previous class (with the previous row's source), or, when the
    nucleus had no label before, removes the current-label pointer so that it is unlabelled again;
    the history keeps every row either way. The nucleus is leased back to the reviewer so that the
    queue shows it to them next. With ``check_current``, the current label must be ``expected_label_id``
    (None: no label), or StaleLabel.
    """
    done = _undo_for_client_id(client_id, user, label_set, nucleus)
    if done is not None:
        return done
    try:
        return _undo(nucleus, label_set, user=user, client_id=client_id, check_current=check_current,
                     expected_label_id=expected_label_id)
    except (StaleLabel, NothingToUndo, IntegrityError):
        # The same undo sent twice at once: the second waited on the first's locks and finds its row now.
        done = _undo_for_client_id(client_id, user, label_set, nucleus)
        if done is not None:
            return done
        raise


def _undo(nucleus: Nucleus, label_set: LabelSet, *, user, client_id: str, check_current: bool,
          expected_label_id: int | None) -> ReviewUndo:
    now = timezone.now()
    with transaction.atomic():
        hold_dataset_of(nucleus, label_set.project_id)   # as a decision does (do_decide)
        # The lease row first, as a decision takes it (do_decide): an undo that locked the current label first
        # deadlocked with a decision on the same nucleus, each holding what the other waited for.
        _lease_row(_LOCK, nucleus.pk, label_set, user, now, now, False)
        done = _undo_for_client_id(client_id, user, label_set, nucleus)
        if done is not None:
            return done
        current = (CurrentLabel.objects.select_for_update(of=("self",))
                   .select_related("label", "label__previous", "label__previous__author")
                   .filter(nucleus=nucleus, label_set=label_set).first())
        if check_current and (current.label_id if current else None) != expected_label_id:
            raise StaleLabel(current)
        if current is None:
            raise NothingToUndo("this nucleus has no label in this label set")
        decision = current.label
        if decision.source != LabelSource.REVIEW or decision.author_id != user.pk:
            raise NothingToUndo("the current label is not your decision: only your own last decision can be undone")
        if ReviewUndo.objects.filter(restored_id=decision.pk).exists():
            raise NothingToUndo("the current label already restores an undone decision")
        previous = decision.previous
        if previous is not None:
            # The restored label is the previous one again, in its author's name (ground truth stays the
            # curator's, another reviewer's decision theirs); the undo is the reviewer's, in the audit.
            restored = do_record_label(nucleus, label_set, previous.class_index, author=previous.author,
                                       source=previous.source, check_current=True, expected_label_id=decision.pk,
                                       model_version_id=previous.model_version_id, actor=user,
                                       action="label.undone", label=decision.pk)
        else:
            restored = None
            CurrentLabel.objects.filter(pk=current.pk).delete()
            delete_on_commit([unreviewed_counts_key(label_set.pk)])  # unreviewed again: the gallery's counts
            audit.record("label.undone", actor=user, target=nucleus, project=label_set.project_id,
                         label_set=label_set.name, label=decision.pk,
                         class_index=decision.class_index, previous=None)
        undo = ReviewUndo.objects.create(label=decision, restored=restored, actor=user, client_id=client_id)
        if restored is None or restored.source not in queue.HUMAN_SOURCES:
            forget_frontiers(label_set.pk)  # the queue's and the gallery's; forgetting early costs one search
        if restored is not None and restored.source == LabelSource.REVIEW:
            # A reviewer's decision stands again (the reviewer's own earlier one, or another's under a second
            # opinion): the nucleus stays decided by its author, or anyone could overwrite it without asking for
            # a second opinion.
            _lease_row(_RETAKE, nucleus.pk, label_set, restored.author, now, now, True)
        else:   # leased back to the reviewer who undid, so that their queue shows it next
            _lease_row(_RETAKE, nucleus.pk, label_set, user, now + timedelta(seconds=LEASE_SECONDS), now, False)
    return undo


def taken_back_labels(labels, *, after=None, until=None):
    """The ids of ``labels`` (a Label queryset) whose undo left the nucleus without a label in that set (no row
    restored), undone after ``after`` and at or before ``until`` where given (webapp.datasets.taken_back)."""
    undos = ReviewUndo.objects.filter(restored__isnull=True, label__in=labels)
    if after is not None:
        undos = undos.filter(created_at__gt=after)
    if until is not None:
        undos = undos.filter(created_at__lte=until)
    return undos.values_list("label_id", flat=True)


def last_decision(label_set: LabelSet, user) -> Label | None:
    return queue.live_decisions(label_set, user).order_by("-id").first()


def do_undo_last(label_set: LabelSet, *, user, client_id: str = "") -> ReviewUndo:
    """Undo the reviewer's latest decision in a label set (what the ``U`` key does)."""
    done = _undo_for_client_id(client_id, user, label_set)
    if done is not None:
        return done
    try:
        decision = last_decision(label_set, user)
        if decision is None:
            raise NothingToUndo("you have no decision to undo in this label set")
        current = CurrentLabel.objects.filter(nucleus_id=decision.nucleus_id, label_set=label_set).first()
        if current is None or current.label_id != decision.pk:
            raise StaleLabel(current)
        return do_undo(decision.nucleus, label_set, user=user, client_id=client_id, check_current=True,
                       expected_label_id=decision.pk)
    except (StaleLabel, NothingToUndo):
        # The same undo sent twice at once: the first committed between this one's look for its key and its
        # reading of the latest decision (which is then an older one, or none). do_undo looks again only
        # inside its own attempt; this one's reads come before it.
        done = _undo_for_client_id(client_id, user, label_set)
        if done is not None:
            return done
        raise


def do_settle(nucleus: Nucleus, label_set: LabelSet, class_index: int, *, curator, expected_label_id,
              client_id: str = "") -> Label:
    """A curator's final label for a nucleus on which reviewers disagree (same domain function)."""
    existing = _existing_for_client_id(client_id, nucleus, label_set, curator)
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            hold_dataset_of(nucleus, label_set.project_id)   # as a decision does (do_decide)
            # Settled: decided by the curator, whoever decided or held it before. The lease row first, in the
            # order a decision and an undo take their locks.
            _mark_decided(nucleus, label_set, curator, timezone.now(), second_opinion=True)
            label = do_record_label(nucleus, label_set, class_index, author=curator, source=LabelSource.REVIEW,
                                    check_current=True, expected_label_id=expected_label_id, client_id=client_id)
            ConflictSettlement.objects.create(label=label, nucleus=nucleus, label_set=label_set, curator=curator)
    except (StaleLabel, IntegrityError):
        existing = _existing_for_client_id(client_id, nucleus, label_set, curator)   # the same settle, twice at once
        if existing is not None:
            return existing
        raise
    return label


# ------------------------------------------------------------------------------------- keys

def do_set_review_keys(user, keys: dict | None) -> dict:
    """Store a user's review keys (``None`` or ``{}``: back to the defaults), with an audit row naming
    what changed. Raises :class:`webapp.review.keys.InvalidKeys` for keys that cannot be used."""
    from . import keys as review_keys
    from .models import ReviewKeys

    chosen = review_keys.validate(keys or {})
    with transaction.atomic():
        row = ReviewKeys.objects.select_for_update().filter(user_id=user.pk).first()
        before = review_keys.keys_for(user) if row is not None else review_keys.defaults()
        if chosen == review_keys.defaults():
            ReviewKeys.objects.filter(user_id=user.pk).delete()
        elif row is None:
            ReviewKeys.objects.create(user=user, keys=chosen)
        else:
            row.keys = chosen
            row.save(update_fields=["keys", "updated_at"])
        changed = {f"actions.{a}": [before["actions"][a], chosen["actions"][a]]
                   for a in chosen["actions"] if before["actions"][a] != chosen["actions"][a]}
        changed.update({f"classes.{i + 1}": [old, new] for i, (old, new) in
                        enumerate(zip(before["classes"] + [None] * len(chosen["classes"]), chosen["classes"]))
                        if old != new})
        if len(before["classes"]) > len(chosen["classes"]):
            changed["classes.count"] = [len(before["classes"]), len(chosen["classes"])]
        if before["character_keys"] != chosen["character_keys"]:
            changed["character_keys"] = [before["character_keys"], chosen["character_keys"]]
        audit.record("review.keys_changed", actor=user, target=user, changed=changed,
                     defaults=chosen == review_keys.defaults())
    return chosen
