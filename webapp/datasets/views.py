"""Pages: a project, a dataset's images, the image viewer, and the image files themselves.

Thin views over :mod:`webapp.datasets.queries`; every one answers 404 to a non-member.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from mlcore.examples import LAYOUTS
from webapp.core import media, policy
from webapp.core.domain_errors import Conflict
from webapp.core.policy import project_role
from webapp.jobs.access import visible_jobs
from webapp.jobs.models import Job
from webapp.projects.access import get_project_for
from webapp.projects.deletion import DATASET_BLOCKERS, busy_job
from webapp.projects.models import ROLE_RANK, Role
from webapp.projects.operations import do_create_project
from webapp.projects.pages import deletion_context
from webapp.projects.serializers import FORMAT_CHOICES
from webapp.training.pages import training_panel_context

from . import queries
from .models import Dataset, Image
from .operations import do_request_dataset_deletion

IMAGES_PER_PAGE = 48


# The site's front page: the projects one can see and one's latest jobs.
@require_GET
def home(request):
    jobs = visible_jobs(request.user).select_related("created_by", "project").order_by("-created_at", "-id")[:10]
    return render(request, "core/home.html", {"jobs": jobs, "projects": queries.project_summaries(request.user)})



@require_POST
def create_project(request):
    name = (request.POST.get("name") or "").strip()
    if not name:
        messages.error(request, "A project needs a name.")
        return redirect("home")
    if len(name) > 200:
        messages.error(request, "A project name has at most 200 characters.")
        return redirect("home")
    project = do_create_project(name, actor=request.user, description=(request.POST.get("description") or "").strip())
    messages.success(request, f"Project {project.name!r} created; you are its admin.")
    return redirect("project-detail", project.pk)


@require_GET
def project_detail(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    label_sets = queries.label_sets_of(project)
    can_upload = ROLE_RANK[project.role] >= ROLE_RANK[Role.CURATOR]
    return render(request, "projects/detail.html", {
        "project": project,
        "datasets": queries.project_datasets(project),
        "label_sets": label_sets,
        "charts": _chart_layout(queries.class_counts(project, label_sets)),
        "jobs": queries.recent_jobs(project),
        "can_upload": can_upload,
        "can_review": ROLE_RANK[project.role] >= ROLE_RANK[Role.REVIEWER],
        "import_job": _import_job(project, request.GET.get("import_job")) if can_upload else None,
        "slide_job": _import_job(project, request.GET.get("slide_job"), (Job.Kind.IMPORT, Job.Kind.PREDICT))
        if can_upload else None,
        "slides_root_set": bool(getattr(settings, "SLIDES_ROOT", None)),
        "slides": list(Image.objects.filter(project=project).exclude(slide_file="").select_related("dataset")
                       .order_by("id")[:200]),
        "formats": FORMAT_CHOICES,
        "layouts": [{"format": value, "tree": LAYOUTS[value], "example_url": reverse("api-format-example", args=[value])}
                    for value in Dataset.TILE_FORMATS],
        "sources": queries.available_sources(project),
        **training_panel_context(project, request.user),
        **deletion_context(project),
    })


def _import_job(project, value: str | None, kinds=(Job.Kind.IMPORT,)):
    """The import job the upload form followed before it reloaded the page (?import_job=id): the page
    shows it again, with its result and log, above a Datasets card that now lists its dataset."""
    if not value or not value.isdigit():
        return None
    return Job.objects.filter(pk=int(value), project=project, kind__in=kinds).first()


BAR_ROW = 22     # px per class in the inline SVG chart
BAR_WIDTH = 300  # px of the longest bar


def _chart_layout(charts: list[dict]) -> list[dict]:
    """Positions for the server-rendered bar charts: one row per class, bars relative to the largest."""
    for chart in charts:
        chart["height"] = max(1, len(chart["bars"])) * BAR_ROW + 2
        for row, bar in enumerate(chart["bars"]):
            bar["y"] = row * BAR_ROW
            bar["width"] = round(bar["fraction"] * BAR_WIDTH, 1) if bar["count"] else 0
    return charts


@require_GET
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
def delete_dataset(request, project_id: int, dataset_id: int):
    """Queue the dataset's deletion once its name was typed to confirm it (curators)."""
    project = get_project_for(request.user, project_id, project_role(request))
    dataset = Dataset.objects.filter(pk=dataset_id, project=project).first()
    if dataset is None:
        raise Http404("No such dataset in this project.")
    if request.POST.get("confirm_name", "") != dataset.name:
        messages.error(request, "The dataset was not deleted: type its name exactly to confirm.")
        return redirect("dataset-detail", project.pk, dataset.pk)
    try:
        job = do_request_dataset_deletion(dataset, actor=request.user)
    except Conflict as exc:
        messages.error(request, exc.detail)
        return redirect("dataset-detail", project.pk, dataset.pk)
    messages.success(request, f"Dataset {dataset.name!r} is being deleted (job {job.pk}).")
    return redirect("project-detail", project.pk)


@require_GET
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


@require_GET
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


@require_GET
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
