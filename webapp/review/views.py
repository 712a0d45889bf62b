"""Pages: the review queue, the gallery, reviewer agreement (with settling) and a nucleus's history.

Server-rendered shells; the queue and the gallery fill themselves from the review API with
``static/js/review.js``. Outsiders get 404, members below the needed role 403.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from mlcore.types import quoted

from webapp.core.policy import project_role
from webapp.datasets.being_deleted import BeingDeleted
from webapp.datasets.models import LabelSet
from webapp.datasets.operations import StaleLabel
from webapp.jobs.models import Job
from webapp.projects.access import get_project_for
from webapp.projects.models import ROLE_RANK, Membership, Role
from webapp.training.models import Prediction
from webapp.training.queries import active_version

from . import gallery as gallery_query
from . import keys as review_keys
from . import operations, quality, queue
from .access import UnknownName, class_index_for, label_set_named, nucleus_for


def _label_sets(project) -> list[dict]:
    return [{"id": ls.pk, "name": ls.name, "classes": queue.label_set_classes(ls)}
            for ls in LabelSet.objects.filter(project=project).order_by("id")]


def _chosen_label_set(project, request) -> LabelSet | None:
    try:
        return label_set_named(project, request.GET.get("label_set"), default_first=True)
    except UnknownName as exc:
        if request.GET.get("label_set"):
            raise Http404(exc.detail) from None
        return None  # the project has no label set yet


def _api_urls(project) -> dict:
    return {
        "next": reverse("api-review-next", args=[project.pk]),
        "progress": reverse("api-review-progress", args=[project.pk]),
        "undo_last": reverse("api-review-undo-last", args=[project.pk]),
        "gallery": reverse("api-review-gallery", args=[project.pk]),
        "bulk": reverse("api-review-bulk", args=[project.pk]),
        # /api/nuclei/0/...: the script puts the nucleus id in place of the 0.
        "labels": reverse("api-nucleus-labels", args=[0]),
        "skip": reverse("api-nucleus-skip", args=[0]),
        "release": reverse("api-nucleus-release", args=[0]),
    }


@require_safe
def review_page(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    label_set = _chosen_label_set(project, request)
    chosen = request.GET.get("strategy")
    strategy = chosen if chosen in queue.STRATEGIES else queue.DEFAULT_STRATEGY
    version = active_version(project)
    has_predictions = bool(version and label_set and Prediction.objects.filter(
        model_version=version, label_set=label_set).exists())
    classes = queue.label_set_classes(label_set) if label_set else []
    # Before any prediction the default order (entropy) has nothing to serve, and the page would say
    # "the queue is empty" over nuclei waiting for a label: serve them in random order, and say so.
    random_fallback = chosen not in queue.STRATEGIES and not has_predictions and label_set is not None
    if random_fallback:
        strategy = "random"
    # A prediction at work: until it is done the nuclei it has not reached are not in a prediction's order, and the
    # queue may read as empty while they wait.
    predicting = Job.objects.filter(project=project, kind=Job.Kind.PREDICT,
                                    state__in=[Job.State.QUEUED, Job.State.RUNNING]).order_by("id").first()
    return render(request, "review/review.html", {
        "project": project, "label_sets": _label_sets(project), "label_set": label_set,
        "classes": classes, "keys": review_keys.described(review_keys.keys_for(request.user), classes),
        "strategies": [(key, name, about) for key, (name, _, about) in queue.STRATEGIES.items()],
        "strategy": strategy,
        "include_labelled": request.GET.get("include_labelled") in ("1", "true", "on"),
        "version": version, "has_predictions": has_predictions, "random_fallback": random_fallback,
        "predicting": predicting,
        "api": _api_urls(project),
        "lease_seconds": queue.LEASE_SECONDS,
    })


@require_safe
def gallery_page(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    label_set = _chosen_label_set(project, request)
    classes = queue.label_set_classes(label_set) if label_set else []
    reviewers = (Membership.objects.filter(project=project, role__in=[r for r in ROLE_RANK
                                                                      if ROLE_RANK[r] >= ROLE_RANK[Role.REVIEWER]])
                 .select_related("user").order_by("user__username"))
    version = active_version(project)
    # The gallery shows predictions only: say why it is empty rather than "no unreviewed nuclei".
    has_predictions = bool(version and label_set and Prediction.objects.filter(
        model_version=version, label_set=label_set).exists())
    return render(request, "review/gallery.html", {
        "project": project, "label_sets": _label_sets(project), "label_set": label_set,
        "classes": classes, "keys": review_keys.described(review_keys.keys_for(request.user), classes),
        "class_name": request.GET.get("class_name") or "", "version": version, "has_predictions": has_predictions,
        "sort_choices": [(f"{sort}:{order}", label) for sort, order, label in gallery_query.SORT_CHOICES],
        "groups": list(gallery_query.GROUPS.items()), "statuses": list(gallery_query.STATUSES.items()),
        "reviewers": [m.user.get_username() for m in reviewers],
        "api": _api_urls(project),
    })


@require_safe
def agreement_page(request, project_id: int):
    project = get_project_for(request.user, project_id, project_role(request))
    name = request.GET.get("label_set")
    label_set = None
    if name:
        try:
            label_set = label_set_named(project, name)
        except UnknownName as exc:
            raise Http404(exc.detail) from None
    return render(request, "review/agreement.html", {
        "project": project, "reports": quality.project_agreement(project, label_set),
        "can_settle": ROLE_RANK[project.role] >= ROLE_RANK[Role.CURATOR],
        "can_review": ROLE_RANK[project.role] >= ROLE_RANK[Role.REVIEWER],
    })


@require_POST
def settle_form(request, project_id: int):
    """The agreement page's settle form: a curator records the final label of a conflict."""
    project = get_project_for(request.user, project_id, project_role(request))
    back = reverse("review-agreement", args=[project.pk])
    try:
        _, nucleus = nucleus_for(request.user, int(request.POST.get("nucleus") or 0), project_role(request),
                                 project_id=project.pk)
        label_set = label_set_named(project, request.POST.get("label_set"))
        class_index = class_index_for(label_set, request.POST.get("class_name"))
        version = request.POST.get("version")
        expected = int(version) if version not in (None, "", "None") else None
    except (UnknownName, ValueError, Http404) as exc:  # a form naming no nucleus of this project
        messages.error(request, f"Not settled: {exc}")
        return redirect(back)
    try:
        operations.do_settle(nucleus, label_set, class_index, curator=request.user, expected_label_id=expected,
                             client_id=(request.POST.get("client_id") or "")[:64])
    except StaleLabel:
        messages.error(request, f"Not settled: the label of nucleus {nucleus.instance_id} in {nucleus.image.name} "
                                "changed meanwhile; look again.")
        return redirect(back)
    except BeingDeleted as exc:
        messages.error(request, f"Not settled: {exc.detail}")
        return redirect(back)
    name = queue.class_name_of(queue.label_set_classes(label_set), class_index)
    messages.success(request, f"Nucleus {nucleus.instance_id} in {nucleus.image.name} settled as {quoted(name)} "
                              f"in {label_set.name}.")
    return redirect(back)


@require_safe
def nucleus_page(request, project_id: int, nucleus_id: int):
    _, nucleus = nucleus_for(request.user, nucleus_id, project_role(request), project_id=project_id)
    project = get_project_for(request.user, project_id, project_role(request))
    version = active_version(project)
    image = nucleus.image
    region = queue.region_around(nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1, nucleus.centroid_x,
                                 nucleus.centroid_y, image.width, image.height)
    predictions = {}
    if version is not None:
        predictions = {p.label_set_id: p for p in Prediction.objects.filter(model_version=version, nucleus=nucleus)}
    label_sets = []
    for info in _label_sets(project):
        current = queue.current_label(nucleus.pk, LabelSet(pk=info["id"]))
        prediction = predictions.get(info["id"])
        current_dict = queue.current_label_dict(current, info["classes"])
        label_sets.append({
            **info, "current": current_dict,
            "current_color": info["classes"][current_dict["class_index"]]["color"] if current_dict else None,
            "prediction": queue.prediction_dict(prediction, info["classes"], version) if prediction else None,
        })
    outline = " ".join(f"{x},{y}" for x, y in nucleus.outline)
    return render(request, "review/nucleus.html", {
        "project": project, "nucleus": nucleus, "image": image, "region": region,
        "viewbox": f"{region[0] - 0.5} {region[1] - 0.5} {region[2] - region[0]} {region[3] - region[1]}",
        "crop_url": queue.region_url(image.pk, region), "outline": outline, "label_sets": label_sets,
        "history": list(reversed(queue.history(nucleus))), "version": version,
        "can_review": ROLE_RANK[project.role] >= ROLE_RANK[Role.REVIEWER],
    })


def _safe_next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return ""


@require_http_methods(["GET", "HEAD", "POST"])
def keys_page(request):
    """Your review keys: class keys in class order, one character each, and the actions' keys."""
    chosen = review_keys.keys_for(request.user)
    form = {"classes": "".join(chosen["classes"]), **chosen["actions"], "character_keys": chosen["character_keys"]}
    errors: dict[str, str] = {}
    if request.method == "POST":
        if request.POST.get("reset"):
            operations.do_set_review_keys(request.user, None)
            messages.success(request, "Your review keys are the defaults again.")
            return redirect(_safe_next(request) or reverse("review-keys"))
        form = {"classes": request.POST.get("classes", "").replace(" ", ""),
                **{action: request.POST.get(action, "") for action in review_keys.ACTIONS},
                "character_keys": bool(request.POST.get("character_keys"))}
        try:
            operations.do_set_review_keys(request.user, {
                "classes": list(form["classes"]),
                "actions": {action: form[action] for action in review_keys.ACTIONS},
                "character_keys": form["character_keys"]})
        except review_keys.InvalidKeys as exc:
            errors = exc.errors
        else:
            messages.success(request, "Your review keys are saved: the review page and the gallery use them now.")
            return redirect(_safe_next(request) or reverse("review-keys"))
    rows = [{"action": action, "about": about, "value": form[action], "default": default,
             "error": errors.get(f"actions.{action}")} for action, (default, about) in review_keys.ACTIONS.items()]
    classes_error = errors.get("classes") or errors.get("keys")
    # The first field in error gets the focus (its error is announced with the summary, role="alert").
    first = next((row for row in rows if row["error"]), None) if not classes_error else None
    if first is not None:
        first["first_error"] = True
    return render(request, "review/keys.html", {
        "form": form, "rows": rows, "errors": errors, "classes_error": classes_error,
        "has_row_errors": any(row["error"] for row in rows),
        "defaults": "".join(review_keys.defaults()["classes"]), "next": _safe_next(request),
        "max_class_keys": review_keys.MAX_CLASS_KEYS,
    }, status=400 if errors else 200)
