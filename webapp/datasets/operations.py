"""State changes of labels: every correction appends a Label row and moves the CurrentLabel pointer."""

from __future__ import annotations

from django.db import transaction

from webapp.core import audit

from .models import CurrentLabel, Label, LabelSet, LabelSource, Nucleus


class StaleLabel(Exception):
    """The label changed since the client read it (someone else labelled the nucleus meanwhile)."""

    def __init__(self, current: CurrentLabel | None):
        self.current = current
        super().__init__("the label changed meanwhile")


def do_record_label(nucleus: Nucleus, label_set: LabelSet, class_index: int, *, author,
                    source: str = LabelSource.REVIEW, expected_label_id: int | None | str = "any",
                    client_id: str = "", model_version_id: int | None = None) -> Label:
    """Append a label; ``expected_label_id`` (the current label the client saw, None for none) guards
    against lost updates, and a repeated ``client_id`` returns the row it already created."""
    if not 0 <= class_index < label_set.classes.count():
        raise ValueError(f"class index {class_index} is outside label set {label_set.name!r}")
    with transaction.atomic():
        if client_id:
            existing = Label.objects.filter(client_id=client_id).first()
            if existing is not None:
                return existing
        current = (CurrentLabel.objects.select_for_update().filter(nucleus=nucleus, label_set=label_set).first())
        if expected_label_id != "any" and (current.label_id if current else None) != expected_label_id:
            raise StaleLabel(current)
        label = Label.objects.create(nucleus=nucleus, label_set=label_set, class_index=class_index, source=source,
                                     author=author, previous_id=current.label_id if current else None,
                                     client_id=client_id, model_version_id=model_version_id)
        CurrentLabel.objects.update_or_create(nucleus=nucleus, label_set=label_set, defaults={
            "label": label, "class_index": class_index, "source": source})
        audit.record("label.recorded", actor=author, target=nucleus, label_set=label_set.name,
                     class_index=class_index, source=source,
                     previous=current.class_index if current else None)
    return label
