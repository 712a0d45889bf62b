"""Looking up what a request names (nucleus, label set, class), with the project's role checks.

Non-members get 404 (a project's existence is private), members with too low a role 403, like
:func:`webapp.projects.access.get_project_for`, the one home of the project check (and
:func:`webapp.datasets.queries.get_image_for` that of the image check).
"""

from __future__ import annotations

from django.http import Http404

from mlcore.types import quoted

from webapp.core import sql
from webapp.core.domain_errors import Invalid
from webapp.datasets.models import Image, LabelClass, LabelSet, Nucleus
from webapp.datasets.queries import label_set_choices
from webapp.projects.access import get_project_for
from webapp.projects.models import ROLE_RANK, Membership, Project, Role


class UnknownName(Invalid, ValueError):
    """A label set or class name that does not exist, on the user's ``field`` (the API answers 400)."""

    default_code = "unknown_name"


def nucleus_for(user, nucleus_id: int, role: str = Role.VIEWER, project_id: int | None = None) -> tuple[Project, Nucleus]:
    """The nucleus and its project, with the user's role checked; one plain statement. ``nucleus.image``
    is loaded when first used (the hot paths use only the nucleus)."""
    missing = Http404("No such nucleus, or you are not a member of its project.")
    if not user.is_authenticated:
        raise missing
    nucleus = sql.first(Nucleus.objects.raw(
        f"SELECT n.*, i.project_id AS project_id, m.role AS member_role FROM {sql.table(Nucleus)} n "
        f"JOIN {sql.table(Image)} i ON i.id = n.image_id "
        f"JOIN {sql.table(Membership)} m ON m.project_id = i.project_id AND m.user_id = %s WHERE n.id = %s",
        [user.pk, nucleus_id]))
    if nucleus is None or (project_id is not None and nucleus.project_id != project_id):
        raise missing
    if ROLE_RANK[nucleus.member_role] < ROLE_RANK[role]:
        get_project_for(user, nucleus.project_id, role)  # raises PermissionDenied with the usual message
    project = Project(pk=nucleus.project_id)
    project.role = nucleus.member_role
    return project, nucleus


def label_set_named(project: Project, name: str | None, *, default_first: bool = False) -> LabelSet:
    if not name:
        if default_first:
            first = LabelSet.objects.filter(project=project).order_by("id").first()
            if first is not None:
                return first
        raise UnknownName("name a label set of the project" + label_set_choices(project), field="label_set")
    label_set = LabelSet.objects.filter(project=project, name=name).first()
    if label_set is None:
        raise UnknownName(f"no label set named {name!r} in this project" + label_set_choices(project),
                          field="label_set")
    return label_set


def label_set_and_version(project: Project, name: str | None, *, default_first: bool = False):
    """The named label set (or with ``default_first`` the project's first) and the project's active
    model version (or None), in one plain statement."""
    from webapp.training.models import ModelVersion

    if not name and not default_first:
        label_set_named(project, name)  # raises UnknownName with the choices
    which = "ls.name = %s" if name else "1 = 1"
    label_set = sql.first(LabelSet.objects.raw(
        f"SELECT ls.*, v.id AS active_version_id, v.number AS active_version_number, "
        f"v.created_at AS active_version_created FROM {sql.table(LabelSet)} ls "
        f"LEFT JOIN {sql.table(ModelVersion)} v ON v.project_id = ls.project_id AND v.is_active "
        f"WHERE ls.project_id = %s AND {which} ORDER BY ls.id LIMIT 1",
        [project.pk, name] if name else [project.pk]))
    if label_set is None:
        label_set_named(project, name, default_first=default_first)  # raises UnknownName with the choices
    version = None
    if label_set.active_version_id is not None:
        version = ModelVersion(pk=label_set.active_version_id, number=label_set.active_version_number,
                               project_id=project.pk, is_active=True,
                               created_at=sql.datetime_value(label_set.active_version_created))
    return label_set, version


def class_index_for(label_set: LabelSet, class_name: str | None = None, class_index: int | None = None,
                    class_list: list[dict] | None = None) -> int:
    """The index of a class named (or numbered) in a request; ``class_list`` saves the query."""
    if class_list is not None:
        classes = {c["name"]: c["index"] for c in class_list}
    else:
        classes = dict(LabelClass.objects.filter(label_set=label_set).values_list("name", "index"))
    if class_name not in (None, ""):
        if class_name not in classes:
            raise UnknownName(f"{quoted(class_name)} is not a class of {quoted(label_set.name)} "
                              f"(classes: {', '.join(sorted(classes, key=classes.get))})", field="class_name")
        if class_index is not None and class_index != classes[class_name]:
            raise UnknownName(f"class_name {quoted(class_name)} is class {classes[class_name]}, not class_index "
                              f"{class_index}: give one of them", field="class_index")
        return classes[class_name]
    if class_index is not None:
        if class_index not in classes.values():
            raise UnknownName(f"{class_index} is outside label set {quoted(label_set.name)} "
                              f"(0 to {len(classes) - 1})", field="class_index")
        return class_index
    raise UnknownName("which class? (or class_index)", field="class_name")
