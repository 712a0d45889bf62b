"""The review queue's own state: leases on queued nuclei, skips, undos and settled conflicts.

Labels themselves live in :mod:`webapp.datasets.models` (``Label`` history + ``CurrentLabel``); these
rows only say who is looking at which nucleus, what a reviewer put aside, which decisions were
taken back and which labels settle a disagreement between reviewers.
"""

from django.conf import settings
from django.db import models

from webapp.datasets.models import Label, LabelSet, Nucleus


class ReviewLease(models.Model):
    """A nucleus handed out to one reviewer for one label set until ``expires_at``; once decided, the
    record that the queue is done with it.

    The unique constraint on (nucleus, label_set) is the claim: two reviewers cannot hold the same
    nucleus. An expired row is taken over in place by the next claimer. A decision does not delete the
    row: it sets ``decided`` (and ``user`` to the decider), so that a claim, which only ever takes a
    row that is not decided, can never hand the nucleus out again; only an undo clears it. See
    "No review is lost or doubled" in the README.
    """

    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="+")
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+")
    # An account deleted leaves its decided rows (its decisions' labels stay too, authorless): deleting them made
    # the nuclei it decided open to anyone's decision without a second opinion.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    claimed_at = models.DateTimeField()
    decided = models.BooleanField(default=False, db_default=False, help_text="a reviewer's decision stands: not claimable "
                                                           "again except for a second opinion")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["nucleus", "label_set"], name="one_lease_per_nucleus")]
        # Decided rows pile up (one per reviewed nucleus): the queries that run on every claim must
        # reach only the running or undecided ones. The held lease: a range on expires_at > now.
        # The touched-and-free list: the undecided rows of a label set.
        indexes = [models.Index(fields=["user", "label_set", "expires_at"], name="lease_held_idx"),
                   models.Index(fields=["label_set"], condition=models.Q(decided=False), name="lease_undecided_idx")]

    def __str__(self):
        if self.decided:
            return f"nucleus {self.nucleus_id} decided by {self.user_id}"
        return f"lease of nucleus {self.nucleus_id} to {self.user_id} until {self.expires_at:%H:%M:%S}"


class ReviewSkip(models.Model):
    """A reviewer put a nucleus aside: the queue does not offer it to them again for a while."""

    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="+")
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    skipped_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["nucleus", "label_set", "user"], name="one_skip_per_reviewer")]


class ReviewUndo(models.Model):
    """A reviewer took back their decision ``label``.

    ``restored`` is the appended Label row that brings back the previous class, or null when the
    nucleus had no label before (then the current label pointer is removed: the nucleus is
    unlabelled again, and the history keeps both rows).
    """

    label = models.OneToOneField(Label, on_delete=models.CASCADE, related_name="+")
    restored = models.OneToOneField(Label, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    client_id = models.CharField(max_length=64, blank=True, help_text="idempotency key of the request")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # An idempotency key is the reviewer's own: another user's undo with the same key is not an answer
        # to theirs (it would show another project's nucleus) and does not block it.
        constraints = [models.UniqueConstraint(fields=["actor", "client_id"], condition=~models.Q(client_id=""),
                                               name="undo_client_id_unique_per_actor")]


class ConflictSettlement(models.Model):
    """A curator's final label for a nucleus on which reviewers disagreed."""

    label = models.OneToOneField(Label, on_delete=models.CASCADE, related_name="+")
    nucleus = models.ForeignKey(Nucleus, on_delete=models.CASCADE, related_name="+")
    label_set = models.ForeignKey(LabelSet, on_delete=models.CASCADE, related_name="+")
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["label_set", "nucleus"], name="settlement_idx")]


class ReviewKeys(models.Model):
    """One user's review keys, when they changed the defaults (see :mod:`webapp.review.keys`):
    ``{"classes": [key per class position], "actions": {"accept": key, ...}}``. Written only by
    :func:`webapp.review.operations.do_set_review_keys`."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    keys = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "review keys"

    def __str__(self):
        return f"review keys of {self.user_id}"
