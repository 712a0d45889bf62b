"""Pages: a dataset's images, the image viewer, and the image files themselves (the project's own page is
in :mod:`webapp.projects.pages`).

Thin views over :mod:`webapp.datasets.queries`; every one answers 404 to a non-member.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from mlcore.types import quoted

from webapp.core import media, policy
from webapp.core.domain_errors import Conflict, Invalid
from webapp.core.policy import project_role
from webapp.jobs.deletion import DATASET_BLOCKERS, busy_job
from webapp.projects.models import ROLE_RANK

from . import queries
from .operations import do_edit_dataset, do_request_dataset_deletion

IMAGES_PER_PAGE = 48


@require_safe
def dataset_detail(request, project_id: int, dataset_id: int):
    project, dataset = queries.get_dataset_for(request.user, project_id, dataset_id)
    page = Paginator(queries.dataset_images(dataset), IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    counts = queries.image_label_counts([image.pk for image in page])
    images = [{"image": image, **counts[image.pk]} for image in page]
    can_delete = ROLE_RANK[project.role] >= ROLE_RANK[policy.ROUTES["dataset-delete"]["POST"].project_role]
    return render(request, "datasets/detail.html", {
        "project": project, "dataset": dataset, "page": page, "images": images, "can_delete": can_delete,
        "delete_blocker": busy_job(project.pk, DATASET_BLOCKERS) if can_delete else None,
        "label_sets": queries.label_sets_of(project), "sources": queries.available_sources(project)})


@require_POST
def edit_dataset(request, project_id: int, dataset_id: int):
    """Rename the dataset or change its provenance note (curators)."""
    project, dataset = _dataset_to_change(request, project_id, dataset_id)
    before = (dataset.name, dataset.provenance)
    try:
        do_edit_dataset(dataset, actor=request.user, name=request.POST.get("name", ""),
                        provenance=request.POST.get("provenance", ""))
        changed = (dataset.name, dataset.provenance) != before
        messages.success(request, f"Dataset {quoted(dataset.name)} saved." if changed else "Nothing changed.")
    except (Invalid, Conflict) as exc:   # a name taken; a deletion pending
        messages.error(request, f"Not saved: {exc.detail}")
    return redirect("dataset-detail", project.pk, dataset.pk)


@require_POST
def delete_dataset(request, project_id: int, dataset_id: int):
    """Queue the dataset's deletion once its name was typed to confirm it (curators)."""
    project, dataset = _dataset_to_change(request, project_id, dataset_id)
    if request.POST.get("confirm_name", "") != dataset.name:
        messages.error(request, "The dataset was not deleted: type its name exactly to confirm.")
        return redirect("dataset-detail", project.pk, dataset.pk)
    try:
        job = do_request_dataset_deletion(dataset, actor=request.user)
    except Conflict as exc:
        messages.error(request, exc.detail)
        return redirect("dataset-detail", project.pk, dataset.pk)
    messages.success(request, f"Dataset {quoted(dataset.name)} is being deleted (job {job.pk}).")
    return redirect("project-detail", project.pk)


def _dataset_to_change(request, project_id: int, dataset_id: int) -> tuple:
    """The project, with the role this route needs (policy table), and its dataset; 404 otherwise."""
    return queries.get_dataset_for(request.user, project_id, dataset_id, project_role(request))


@require_safe
def image_viewer(request, project_id: int, image_id: int):
    project, image = queries.get_image_for(request.user, image_id, project_id)
    if image.is_slide:
        # A slide is viewed through its Deep Zoom tiles; the tile viewer would load the whole image.
        query = request.GET.urlencode()
        return redirect(reverse("slide-viewer", args=[image.pk]) + (f"?{query}" if query else ""))
    label_sets = queries.label_sets_of(project)
    previous_id, next_id = queries.neighbours(image)
    default = image.dataset.label_set_id or (label_sets[0].id if label_sets else None)
    sources = queries.available_sources(project)
    return render(request, "datasets/viewer.html", {
        "project": project, "image": image, "dataset": image.dataset, "label_sets": label_sets,
        "default_label_set": default, "sources": sources,
        "has_predictions": any(key == "prediction" for key, _ in sources),
        "previous_id": previous_id, "next_id": next_id,
    })


@require_safe
def slide_viewer(request, image_id: int):
    """A whole-slide image in OpenSeadragon: Deep Zoom tiles, nucleus outlines past a zoom threshold, a
    density heatmap below it (static/js/slide_viewer.js)."""
    project, image = queries.get_image_for(request.user, image_id)
    if not image.is_slide:
        return redirect("image-viewer", project.pk, image.pk)
    label_sets = queries.label_sets_of(project)
    default = image.dataset.label_set_id or (label_sets[0].id if label_sets else None)
    sources = queries.available_sources(project)
    return render(request, "datasets/slide_viewer.html", {
        "project": project, "image": image, "dataset": image.dataset, "label_sets": label_sets,
        "default_label_set": default, "sources": sources,
        "has_predictions": any(key == "prediction" for key, _ in sources),
    })


@require_safe
def image_file(request, image_id: int, kind: str):
    """An image or its thumbnail, from the media storage (remote: through this host's mirror, so that the
    permission check stays the app's), to members of its project only."""
    if kind not in ("image", "thumbnail"):
        raise Http404("Unknown file kind (image or thumbnail).")
    _, image = queries.get_image_for(request.user, image_id)
    relative = image.file if kind == "image" else image.thumbnail_file
    missing = Http404("The file of this image is missing.")
    if not relative:
        raise missing
    try:
        path = media.local_path(relative).resolve()
    except (media.MediaNameError, FileNotFoundError):
        raise missing from None
    if not path.is_relative_to(media.root().resolve()) or not path.is_file():
        raise missing
    response = FileResponse(open(path, "rb"))
    response["Cache-Control"] = "private, max-age=86400"
    return response
