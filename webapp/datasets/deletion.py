"""Deleting images with everything on them, a bounded number of nuclei at a time: the part of a dataset's
and a project's deletion that this app's rows need (the deletion itself: :mod:`webapp.jobs.deletion`)."""

from __future__ import annotations

from django.db.models import Sum

from webapp.core.cascade import delete_cascading
from webapp.jobs.deletion import Progress

from .models import Image

# Images are deleted a bounded number of nuclei (and of images: tiles may have none) at a time, still inside the
# one transaction of the deletion, so that the job reports progress and takes a cancel between the steps. Each
# step is a dozen statements whatever its size (webapp.core.cascade): a slide of 100,000 nuclei is one step.
NUCLEI_PER_STEP = 20_000
IMAGES_PER_STEP = 500


def delete_images(dataset_ids: list[int], progress: Progress, *, done: int, total: int, start: float,
                  span: float) -> int:
    """Delete the images (with their nuclei, labels, predictions, reviews) of these datasets, a bounded
    number of nuclei per statement group, reporting progress from ``start`` over ``span`` percent.
    Returns the nuclei deleted so far (``done`` plus this call's)."""
    step: list[int] = []
    in_step = 0

    def flush() -> None:
        nonlocal done, in_step
        if step:
            delete_cascading(Image.objects.filter(pk__in=step))
            done += in_step
            progress(start + span * done / max(total, 1), f"deleted {done} of {total} nuclei")
            step.clear()
            in_step = 0

    rows = Image.objects.filter(dataset_id__in=dataset_ids).order_by("id").values_list("id", "nucleus_count")
    for image_id, nucleus_count in rows.iterator(chunk_size=2000):
        step.append(image_id)
        in_step += nucleus_count
        if in_step >= NUCLEI_PER_STEP or len(step) >= IMAGES_PER_STEP:
            flush()
    flush()
    return done


def nucleus_total(datasets) -> int:
    return datasets.aggregate(n=Sum("nucleus_count"))["n"] or 0
