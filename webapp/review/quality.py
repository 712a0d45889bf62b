"""Quality control: agreement between reviewers and the conflicts a curator settles.

Collects each reviewer's standing decision per nucleus (their latest review label in the label
set, leaving out undone decisions, the rows an undo appended and curators' settlements) and hands
them to the framework-free :mod:`webapp.review.agreement`.
"""

from __future__ import annotations

from django.db.models import Max
from django.urls import reverse

from webapp.datasets.models import CurrentLabel, LabelSet, Nucleus
from webapp.projects.models import Project

from . import agreement, queue
from .models import ConflictSettlement


def reviewer_rows(label_set: LabelSet) -> list[tuple[str, int, int, object]]:
    """``(reviewer, nucleus id, class index, created_at)`` of standing review decisions, oldest first."""
    rows = (queue.live_decisions(label_set).exclude(author=None)
            .exclude(id__in=ConflictSettlement.objects.values("label_id"))
            .order_by("id").values_list("author__username", "nucleus_id", "class_index", "created_at"))
    return list(rows)


def label_set_agreement(project: Project, label_set: LabelSet, *, max_conflicts: int = 200) -> dict:
    classes = queue.label_set_classes(label_set)
    rows = reviewer_rows(label_set)
    ratings = agreement.ratings_from_rows((who, nucleus, cls) for who, nucleus, cls, _ in rows)
    report = agreement.agreement_report(ratings, len(classes))
    latest_time: dict[int, object] = {}
    for _, nucleus, _, created in rows:
        latest_time[nucleus] = created
    conflict_ids = report.conflicts
    settled_at = dict(ConflictSettlement.objects.filter(label_set=label_set, nucleus_id__in=conflict_ids)
                      .values("nucleus_id").annotate(at=Max("created_at")).values_list("nucleus_id", "at"))
    open_ids = [n for n in conflict_ids if not (n in settled_at and settled_at[n] >= latest_time[n])]
    shown = open_ids[:max_conflicts]
    nuclei = {n.pk: n for n in Nucleus.objects.filter(pk__in=shown).select_related("image")}
    currents = {c.nucleus_id: c for c in CurrentLabel.objects.filter(label_set=label_set, nucleus_id__in=shown)
                .select_related("label", "label__author")}
    conflicts = []
    for nucleus_id in shown:
        nucleus = nuclei[nucleus_id]
        votes = sorted(((who, per[nucleus_id]) for who, per in ratings.items() if nucleus_id in per),
                       key=lambda item: item[0])
        image = nucleus.image
        region = queue.region_around(nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1, nucleus.centroid_x,
                                     nucleus.centroid_y, image.width, image.height)
        conflicts.append({
            "nucleus": nucleus_id, "instance_id": nucleus.instance_id, "image": image.pk, "image_name": image.name,
            "page_url": reverse("nucleus-detail", args=[project.pk, nucleus_id]),
            "crop_url": queue.region_url(image.pk, region),
            "votes": [{"reviewer": who, "class_index": cls, "class_name": queue.class_name_of(classes, cls)}
                      for who, cls in votes],
            "current": queue.current_label_dict(currents.get(nucleus_id), classes),
        })
    return {
        "label_set": {"id": label_set.pk, "name": label_set.name, "classes": classes},
        "reviewers": sorted(ratings),
        "decisions": len(rows),
        "pairs": [{"a": p.a, "b": p.b, "n": p.n, "observed": p.observed, "kappa": p.kappa} for p in report.pairs],
        "per_class": [{"index": c.index, "name": queue.class_name_of(classes, c.index),
                       "color": classes[c.index]["color"] if c.index < len(classes) else None,
                       "n": c.n, "kappa": c.kappa} for c in report.classes],
        "overall": {"n": report.overall_n, "kappa": report.overall_kappa},
        "conflicts": conflicts,
        "open_conflicts": len(open_ids),
        "settled_conflicts": len(conflict_ids) - len(open_ids),
    }


def project_agreement(project: Project, label_set: LabelSet | None = None) -> list[dict]:
    sets = [label_set] if label_set else list(LabelSet.objects.filter(project=project).order_by("id"))
    return [label_set_agreement(project, ls) for ls in sets]

