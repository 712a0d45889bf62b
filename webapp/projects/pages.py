"""Pages: the site's front page, a project's page, its members (admins manage them) and its deletion.

The project's page shows everything a project holds (datasets, jobs, the training panel): this module is
above the apps whose parts it shows (its own layer in tests/test_layering_imports.py).

Plain forms (CSRF) that post to these views; each change goes through a ``do_...`` function of
:mod:`webapp.projects.operations` (:mod:`webapp.projects.deletion` for the deletion) and comes back as a
message on the members page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from mlcore.examples import LAYOUT_NOTES, LAYOUTS
from mlcore.types import quoted

from webapp.core.domain_errors import Conflict, Invalid, NotFound
from webapp.core.policy import project_role
from webapp.datasets import queries as dataset_queries
from webapp.datasets.models import Dataset, Image, LabelClass, Nucleus
from webapp.datasets.serializers import FORMAT_CHOICES
from .slides_folder import registrable_folder
from webapp.jobs.access import visible_jobs
from webapp.jobs.deletion import PROJECT_BLOCKERS, busy_job
from webapp.jobs.models import Job
from webapp.training.pages import training_panel_context

from . import activity as project_activity
from . import operations
from .access import get_project_for
from .deletion import do_request_project_deletion
from .models import ROLE_RANK, Membership, Role


@require_safe
def home(request):
    """The site's front page: the projects one can see and one's latest jobs."""
    jobs = visible_jobs(request.user).select_related("created_by", "project").order_by("-created_at", "-id")[:10]
    projects = dataset_queries.project_summaries(request.user)
    return render(request, "core/home.html", {"jobs": jobs, "projects": projects})


@require_POST
def create_project(request):
    try:
        project = operations.do_create_project(request.POST.get("name", ""), actor=request.user,
                                               description=request.POST.get("description", ""))
    except Invalid as exc:
        messages.error(request, f"No project was created: {exc.detail}")
        return redirect("home")
    messages.success(request, f"Project {quoted(project.name)} created; you are its admin.")
    return redirect("project-detail", project.pk)


@require_POST
def edit_project(request, project_id: int):
    """Rename the project or change its description (admins)."""
    project = get_project_for(request.user, project_id, project_role(request))
    before = (project.name, project.description)
    try:
        operations.do_edit_project(project, actor=request.user, name=request.POST.get("name", ""),
                                   description=request.POST.get("description", ""))
        changed = (project.name, project.description) != before
        messages.success(request, f"Project {quoted(project.name)} saved." if changed else "Nothing changed.")
    except Invalid as exc:
        messages.error(request, f"Not saved: {exc.detail}")
    return redirect("project-detail", project.pk)


@require_safe
def project_detail(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    label_sets = dataset_queries.label_sets_of(project)
    can_upload = ROLE_RANK[project.role] >= ROLE_RANK[Role.CURATOR]
    training = training_panel_context(project, request.user)
    return render(request, "projects/detail.html", {
        "project": project,
        "datasets": dataset_queries.project_datasets(project),
        "label_sets": label_sets,
        "charts": _chart_layout(dataset_queries.class_counts(project, label_sets)),
        "jobs": dataset_queries.recent_jobs(project),
        "can_upload": can_upload,
        "can_review": ROLE_RANK[project.role] >= ROLE_RANK[Role.REVIEWER],
        "import_job": _import_job(project, request.GET.get("import_job")) if can_upload else None,
        "slide_job": _import_job(project, request.GET.get("slide_job"), (Job.Kind.IMPORT, Job.Kind.PREDICT))
        if can_upload else None,
        "slides_root_set": bool(getattr(settings, "SLIDES_ROOT", None)),
        "slides_folder": registrable_folder(project, request.user),
        "slides": _slides(project, training["active_version"]),
        "formats": FORMAT_CHOICES,
        "layouts": [{"format": value, "tree": LAYOUTS[value], "note": LAYOUT_NOTES.get(value, ""),
                     "example_url": reverse("api-format-example", args=[value])} for value in Dataset.TILE_FORMATS],
        "sources": dataset_queries.available_sources(project),
        **training,
        **deletion_context(project),
    })


ACTIVITY_PER_PAGE = 50


@require_safe
def activity(request, project_id: int):
    """Who did what in the project, newest first (any member), by kind of change."""
    project = get_project_for(request.user, project_id, project_role(request))
    kind = request.GET.get("kind", project_activity.PAGE_DEFAULT_KIND)
    try:
        rows = project_activity.activity_rows(project, kind)
    except Invalid as exc:
        messages.error(request, exc.detail)
        kind = project_activity.PAGE_DEFAULT_KIND
        rows = project_activity.activity_rows(project, kind)
    page = Paginator(rows, ACTIVITY_PER_PAGE).get_page(request.GET.get("page"))
    class_names = _label_class_names(project, page)
    nuclei = _nucleus_names(project, page)
    entries = [{"entry": entry, "words": project_activity.words(entry),
                "target": project_activity.target_words(entry, nuclei), "job_id": project_activity.target_job_id(entry),
                "nucleus_id": project_activity.target_nucleus_id(entry),
                "details": project_activity.detail_lines(entry, class_names)}
               for entry in page]
    return render(request, "projects/activity.html", {
        "project": project, "page": page, "entries": entries, "kind": kind,
        "kinds": project_activity.KIND_CHOICES, "automatic": any(entry.actor_id is None for entry in page)})


def _label_class_names(project, entries) -> dict:
    """{(label set name, index): class name} for the label rows among ``entries``, in one query."""
    names = {(e.details or {}).get("label_set") for e in entries if e.action.startswith("label.")} - {None}
    if not names:
        return {}
    rows = LabelClass.objects.filter(label_set__project_id=project.pk, label_set__name__in=names)
    return {(name, index): class_name for name, index, class_name in
            rows.values_list("label_set__name", "index", "name")}


def _slides(project, active_version) -> list:
    """The project's slides (the first 200), each with the label set its predictions export shows: its
    detections' own when the active model predicts it, else the model's first (a slide's QuPath classes are
    a label set of their own, which training leaves out: its predictions would all be empty)."""
    slides = list(Image.objects.filter(project=project).exclude(slide_file="")
                  .select_related("dataset", "dataset__label_set").order_by("id")[:200])
    predicted = [entry["name"] for entry in (active_version.label_sets if active_version else [])]
    for slide in slides:
        own = slide.dataset.label_set.name if slide.dataset.label_set else None
        slide.prediction_label_set = own if own in predicted else (predicted[0] if predicted else None)
    return slides


def _nucleus_names(project, entries) -> dict:
    """{nucleus id: "nucleus 13 in tile_0001"} for the nuclei among ``entries``' targets, in one query: named as
    the review pages name them, not by database id."""
    ids = {project_activity.target_nucleus_id(e) for e in entries} - {None}
    rows = Nucleus.objects.filter(pk__in=ids, image__project_id=project.pk).values_list("pk", "instance_id",
                                                                                      "image__name")
    return {pk: f"nucleus {instance} in {image}" for pk, instance, image in rows}


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


@require_http_methods(["GET", "HEAD", "POST"])
def members(request, project_id: int):
    """GET: the members of the project (any member); POST: add one by username or e-mail (admins)."""
    project = get_project_for(request.user, project_id, project_role(request))
    add_form = {"user": "", "role": Role.REVIEWER, "error": "", "field": ""}
    if request.method == "POST":
        # A mistake in the add form comes back beside the field it is about, with what was typed kept; a
        # success goes on to the list (and a reload does not add twice).
        add_form.update(user=request.POST.get("user", "")[:254], role=request.POST.get("role", ""))
        try:
            if add_form["role"] not in Role.values:
                add_form.update(error=f"Choose a role: {', '.join(Role.values)}.", field="role")
            else:
                user = operations.find_user(add_form["user"], actor=request.user)
                operations.do_add_member(project, user, add_form["role"], actor=request.user)
                role = Role(add_form["role"]).label.lower()
                messages.success(request, f"{user.get_username()} was added as a {role}.")
                return redirect("project-members", project.pk)
        except (operations.UserNotFound, Conflict) as exc:
            add_form.update(error=exc.detail, field="user")
    memberships = list(Membership.objects.filter(project=project).select_related("user")
                       .order_by("user__username"))
    # A deactivated admin cannot sign in and does not count (operations._refuse_losing_last_admin): the page
    # offered to remove the one active admin beside them, and the removal was refused.
    admins = sum(1 for m in memberships if m.role == Role.ADMIN and m.user.is_active)
    for membership in memberships:
        membership.is_last_admin = membership.role == Role.ADMIN and membership.user.is_active and admins == 1
    return render(request, "projects/members.html", {
        "project": project,
        "memberships": memberships,
        "roles": Role.choices,
        "is_admin": project.role == Role.ADMIN,
        "is_last_admin": any(m.is_last_admin and m.user_id == request.user.pk for m in memberships),
        "add_form": add_form,
    })


@require_POST
def change_role(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    role = _role(request)
    user = _member_user(request, project)
    if role is not None and user is not None:
        _apply(request, lambda: operations.do_change_member_role(project, user, role, actor=request.user),
               f"{user.get_username()} is now a {Role(role).label.lower()}.")
    return _after_change(request, project)


@require_POST
def remove_member(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    user = _member_user(request, project)
    if user is not None:
        _apply(request, lambda: operations.do_remove_member(project, user, actor=request.user),
               f"{user.get_username()} was removed from the project.{_their_unfinished_jobs(project, user)}")
    return _after_change(request, project)


def _their_unfinished_jobs(project, user) -> str:
    """What a removed member left running: it goes on for the project (a training still publishes its model), which
    the admin may not expect; curators may cancel it on its page."""
    jobs = list(Job.objects.filter(project=project, created_by=user, state__in=(Job.State.QUEUED, Job.State.RUNNING))
                .order_by("id").values_list("id", flat=True)[:10])
    if not jobs:
        return ""
    named = ", ".join(str(pk) for pk in jobs)
    return (f" Their job{'s' if len(jobs) > 1 else ''} {named} still run{'' if len(jobs) > 1 else 's'} for the "
            "project (a curator may cancel a job on its page).")


@require_POST
def leave_project(request, project_id: int):
    """The member leaves the project (any role; the last admin is refused and stays on the members page)."""
    project = get_project_for(request.user, project_id, project_role(request))
    try:
        operations.do_leave_project(project, request.user)
    except Conflict as exc:
        messages.error(request, exc.detail)
        return redirect("project-members", project.pk)
    messages.success(request, f"You left project {quoted(project.name)}; an admin of it can add you again.")
    return redirect("home")


def _apply(request, change, success: str) -> None:
    """Run a membership change and say how it went (a refusal, such as the last admin's, as its reason)."""
    try:
        change()
        messages.success(request, success)
    except (NotFound, Conflict) as exc:
        messages.error(request, exc.detail)


@require_POST
def delete_project(request, project_id: int):
    """Queue the project's deletion once its name was typed to confirm it (admins)."""
    project = get_project_for(request.user, project_id, project_role(request))
    if request.POST.get("confirm_name", "") != project.name:
        messages.error(request, "The project was not deleted: type its name exactly to confirm.")
        return redirect("project-detail", project.pk)
    try:
        job = do_request_project_deletion(project, actor=request.user)
    except Conflict as exc:
        messages.error(request, exc.detail)
        return redirect("project-detail", project.pk)
    messages.success(request, f"Project {quoted(project.name)} is being deleted (job {job.pk}).")
    return redirect("job-detail", job.pk)


def _role(request) -> str | None:
    role = request.POST.get("role", "")
    if role not in Role.values:
        messages.error(request, f"Choose a role: {', '.join(Role.values)}.")
        return None
    return role


def _member_user(request, project):
    """The member the form names, among the project's members only (never another account's name)."""
    raw = request.POST.get("user_id", "")
    valid = raw.isascii() and raw.isdecimal() and len(raw) <= 18  # a 64-bit id, or nothing
    membership = (Membership.objects.filter(project=project, user_id=int(raw)).select_related("user").first()
                  if valid else None)
    user = membership.user if membership else None
    if user is None:
        messages.error(request, "Choose a member from the list.")
    return user


def _after_change(request, project):
    """Back to the members page, or to the project list when the admin just left the project."""
    if not Membership.objects.filter(project=project, user=request.user).exists():
        return redirect("home")
    return redirect("project-members", project.pk)


def deletion_context(project) -> dict:
    """What the project page's deletion form needs (admins): whether a job stands in the way."""
    if project.role != Role.ADMIN:
        return {"can_delete_project": False}
    blocker = busy_job(project.pk, PROJECT_BLOCKERS)
    return {"can_delete_project": True, "delete_blocker": blocker,
            "delete_url": reverse("project-delete", args=[project.pk])}

