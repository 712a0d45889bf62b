"""Who may call what: one declared table for every route, page and API alike.

Each named route maps its HTTP methods to the least access that calling it needs:

- ``anonymous``: anyone, logged in or not;
- ``authenticated``: any logged-in user (what they then see is filtered to their projects);
- ``viewer`` / ``reviewer`` / ``curator`` / ``admin``: at least that role in the project the URL names
  (directly, or through its dataset, image, nucleus or job). Non-members, including members who were
  removed, get 404 so that a project's existence does not leak; members with too low a role get 403;
- ``staff``: users with ``is_staff`` (the admin site, worker diagnostics).

The table is applied in three places. :class:`PolicyPermission` (DRF's default permission) and
:class:`webapp.core.middleware.PolicyMiddleware` (pages) refuse anonymous callers and non-staff from
the routes the table reserves, and the API refuses every route the table does not declare. The views
check the project role with the project they look up, taking the role from here
(:func:`project_role`); jobs take the roles that start and cancel them from here too
(:mod:`webapp.jobs.access`). ``tests/webapp/core/test_authorization_matrix.py`` walks every route of the
URL configuration as every kind of user and checks each answer against this table, so a new route or
a view that disagrees with it fails CI.
"""

from __future__ import annotations

from enum import Enum

from rest_framework.permissions import BasePermission

from .roles import ROLE_RANK, Role


class Access(str, Enum):
    ANONYMOUS = "anonymous"
    AUTHENTICATED = "authenticated"
    VIEWER = Role.VIEWER.value
    REVIEWER = Role.REVIEWER.value
    CURATOR = Role.CURATOR.value
    ADMIN = Role.ADMIN.value
    STAFF = "staff"

    @property
    def project_role(self) -> str | None:
        """The project role this level needs, or None when it is not a project level."""
        return self.value if self.value in ROLE_RANK else None


ANONYMOUS, AUTHENTICATED, STAFF = Access.ANONYMOUS, Access.AUTHENTICATED, Access.STAFF
VIEWER, REVIEWER, CURATOR, ADMIN = Access.VIEWER, Access.REVIEWER, Access.CURATOR, Access.ADMIN

# route name (with its namespace) -> {method: least access}. HEAD follows GET.
ROUTES: dict[str, dict[str, Access]] = {
    # Accounts and the home page
    "login": {"GET": ANONYMOUS, "POST": ANONYMOUS},
    "logout": {"POST": ANONYMOUS},
    "home": {"GET": AUTHENTICATED},
    "account": {"GET": AUTHENTICATED},
    "regenerate-token": {"POST": AUTHENTICATED},
    "revoke-token": {"POST": AUTHENTICATED},  # your own token
    "account-email": {"POST": AUTHENTICATED},  # your own address, with your password
    # Passwords: Django's views. Resetting is for people who cannot log in; the e-mailed link is the key.
    "password_reset": {"GET": ANONYMOUS, "POST": ANONYMOUS},
    "password_reset_done": {"GET": ANONYMOUS},
    "password_reset_confirm": {"GET": ANONYMOUS, "POST": ANONYMOUS},
    "password_reset_complete": {"GET": ANONYMOUS},
    "password_change": {"GET": AUTHENTICATED, "POST": AUTHENTICATED},
    "password_change_done": {"GET": AUTHENTICATED},
    "favicon": {"GET": ANONYMOUS},
    # Service state and API documentation
    "api-health": {"GET": ANONYMOUS},  # worker names only for staff (webapp.core.health)
    "api-root": {"GET": AUTHENTICATED},
    "api-schema": {"GET": AUTHENTICATED},
    "api-docs": {"GET": AUTHENTICATED},
    "api-redoc": {"GET": AUTHENTICATED},
    # Jobs (webapp.jobs.access): a job follows its project's roles
    "api-job-list": {"GET": AUTHENTICATED, "POST": STAFF},  # POST queues worker diagnostics
    "api-job-detail": {"GET": VIEWER},
    "api-job-cancel": {"POST": CURATOR},  # or the member who started it, while their role could start it
    "job-detail": {"GET": VIEWER},
    "api-job-file": {"GET": VIEWER},
    # Projects and datasets
    "api-project-list": {"GET": AUTHENTICATED, "POST": AUTHENTICATED},
    "api-project-detail": {"GET": VIEWER, "PATCH": ADMIN, "DELETE": ADMIN},  # DELETE queues the deletion
    "api-project-datasets": {"GET": VIEWER, "POST": CURATOR},
    "api-project-dataset": {"GET": VIEWER, "PATCH": CURATOR, "DELETE": CURATOR},  # DELETE queues its deletion
    "api-project-dataset-images": {"GET": VIEWER},
    "api-project-members": {"GET": VIEWER, "POST": ADMIN},
    "api-project-activity": {"GET": VIEWER},
    "api-project-member": {"PATCH": ADMIN, "DELETE": ADMIN},
    "api-project-leave": {"POST": VIEWER},  # one's own membership: any member may leave (the last admin: 409)
    "project-create": {"POST": AUTHENTICATED},
    "project-detail": {"GET": VIEWER},
    "project-edit": {"POST": ADMIN},
    "project-activity": {"GET": VIEWER},  # members see who did what in the project, as they see its members
    "project-delete": {"POST": ADMIN},
    "project-members": {"GET": VIEWER, "POST": ADMIN},  # every member sees who else is in the project
    "project-member-role": {"POST": ADMIN},
    "project-member-remove": {"POST": ADMIN},
    "project-leave": {"POST": VIEWER},
    "dataset-detail": {"GET": VIEWER},
    "dataset-edit": {"POST": CURATOR},
    "dataset-delete": {"POST": CURATOR},
    "image-viewer": {"GET": VIEWER},
    "image-file": {"GET": VIEWER},
    "api-image-nuclei": {"GET": VIEWER},
    "api-image-region": {"GET": VIEWER},
    "slide-viewer": {"GET": VIEWER},
    "api-slide-dzi": {"GET": VIEWER},
    "api-slide-tile": {"GET": VIEWER},
    "api-image-density": {"GET": VIEWER},
    # Exports
    "api-image-geojson": {"GET": VIEWER},
    "api-image-types-npy": {"GET": VIEWER},
    "api-merged-csv": {"GET": VIEWER},
    "api-dataset-coco": {"GET": VIEWER},
    "api-dataset-geojson": {"GET": VIEWER},
    "api-project-geojson": {"GET": VIEWER},
    "api-format-example": {"GET": AUTHENTICATED},
    # Whole-slide images: registering one is an import (curators, like a dataset upload); classifying one
    # stores predictions for the whole project to review (curators, like a training's prediction job).
    "api-project-slides": {"POST": CURATOR},
    # Chunked, resumable uploads of a slide and its detections (curators, as registering); each upload is
    # its own user's alone (404 to anyone else, webapp.datasets.slide_uploads).
    "api-slide-uploads": {"POST": CURATOR},
    "api-slide-upload": {"GET": CURATOR, "PUT": CURATOR, "DELETE": CURATOR},
    "api-slide-infer": {"POST": CURATOR},
    "api-slide-geojson": {"GET": VIEWER},
    "api-slide-csv": {"GET": VIEWER},  # synthetic example uploads, no project data
    # Training and inference
    "api-train": {"POST": CURATOR},
    "api-train-estimate": {"GET": CURATOR},  # may time a few batches here: those who can train
    "api-versions": {"GET": VIEWER},
    "api-version-activate": {"POST": CURATOR},
    "api-version-checkpoint": {"GET": VIEWER},
    "api-retrain-policy": {"GET": VIEWER, "PUT": CURATOR, "PATCH": CURATOR},
    "api-infer": {"POST": REVIEWER},
    "version-detail": {"GET": VIEWER},
    # Review
    "api-review-next": {"GET": REVIEWER},
    "api-review-progress": {"GET": REVIEWER},
    "api-review-undo-last": {"POST": REVIEWER},
    "api-review-gallery": {"GET": REVIEWER},
    "api-review-bulk": {"POST": REVIEWER},
    "api-review-agreement": {"GET": VIEWER},
    "api-review-settle": {"POST": CURATOR},
    "api-nucleus-labels": {"GET": VIEWER, "POST": REVIEWER},
    "api-nucleus-undo": {"POST": REVIEWER},
    "api-nucleus-skip": {"POST": REVIEWER},
    "api-nucleus-release": {"POST": REVIEWER},
    "api-review-keys": {"GET": AUTHENTICATED, "PUT": AUTHENTICATED, "PATCH": AUTHENTICATED},  # your own keys
    "review-keys": {"GET": AUTHENTICATED, "POST": AUTHENTICATED},
    "review-page": {"GET": REVIEWER},
    "review-gallery": {"GET": REVIEWER},
    "review-agreement": {"GET": VIEWER},
    "review-settle": {"POST": CURATOR},
    "nucleus-detail": {"GET": VIEWER},
    # The admin site checks staff itself; its sign-in page is open.
    "admin:login": {"GET": ANONYMOUS, "POST": ANONYMOUS},
}

# Every route of these namespaces that ROUTES does not name (the admin site has one per model and action).
NAMESPACES: dict[str, dict[str, Access]] = {
    "admin": {"GET": STAFF, "POST": STAFF},
}

SAFE_FALLBACK = {"HEAD": "GET"}


def declared_methods(match) -> dict[str, Access] | None:
    """The table's entry for a resolved route (``request.resolver_match``), or None if it has none."""
    if match is None:
        return None
    if match.url_name and match.view_name in ROUTES:
        return ROUTES[match.view_name]
    for namespace in match.namespaces[:1]:
        if namespace in NAMESPACES:
            return NAMESPACES[namespace]
    return None


def access_for(match, method: str) -> Access | None:
    """The least access a request needs. A method the route does not declare gets the route's least
    level, so that whoever may use the route hears 405 from the view rather than a misleading 403."""
    methods = declared_methods(match)
    if methods is None:
        return None
    method = method.upper()
    access = methods.get(method) or methods.get(SAFE_FALLBACK.get(method, ""))
    if access is None:
        access = min(methods.values(), key=list(Access).index)
    return access


def user_meets(user, access: Access) -> bool:
    """Whether ``user`` passes the part of ``access`` that needs no project: anonymous, login, staff."""
    if access is ANONYMOUS:
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    if access is STAFF:
        return bool(user.is_staff)
    return True


class PolicyPermission(BasePermission):
    """DRF's default permission: the table's anonymous/authenticated/staff part for every API view.

    A route missing from the table is refused (403) rather than left open."""

    message = "This needs a staff account."

    def has_permission(self, request, view):
        access = access_for(getattr(request, "resolver_match", None), request.method)
        if access is None:
            self.message = ("No access policy is declared for this route, so it is refused "
                            "(add it to webapp.core.policy.ROUTES).")
            return False
        return user_meets(request.user, access)


def project_role(request) -> str:
    """The project role the current route and method need, from the table: views pass it to
    ``get_project_for`` and friends, so that the table is the one place where roles are declared."""
    access = access_for(getattr(request, "resolver_match", None), request.method)
    if access is None or access.project_role is None:
        raise LookupError(f"{request.method} {request.path}: the policy table declares no project role for "
                          "this route (webapp.core.policy.ROUTES)")
    return access.project_role
