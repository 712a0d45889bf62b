from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.db import transaction

from mlcore.types import name_key, name_problem, quoted, strip_invisible
from webapp.core import audit
from webapp.core.domain_errors import Conflict, Invalid, NotFound
from webapp.core.notes import clean_note

from .models import Membership, Project, Role


class UserNotFound(Invalid):
    """No single active account answers to the username or e-mail address given."""

    default_code = "unknown_user"


def find_user(identifier: str, *, actor=None):
    """The active account whose username, or else e-mail address, is ``identifier``.

    The exact username wins; then the username and the e-mail address are compared without regard to
    case. An e-mail address finds only someone who shares a project with ``actor`` (anyone, for staff and
    for a command without an actor): anyone may create a project and add members, and the answer named the
    account of any address, which the password reset form is built not to tell. Raises :class:`UserNotFound`
    with a sentence for the person adding a member when nothing, or more than one account, matches."""
    identifier = (identifier or "").strip()
    if not identifier:
        raise UserNotFound("Give a username or an e-mail address.")
    users = get_user_model().objects.filter(is_active=True)
    exact = users.filter(username=identifier).first()
    if exact is not None:
        return exact
    by_email = users
    if actor is not None and not getattr(actor, "is_staff", False):
        by_email = users.filter(memberships__project__memberships__user=actor).distinct()
    for field, what, among in (("username__iexact", "username", users), ("email__iexact", "e-mail address",
                                                                           by_email)):
        matches = list(among.filter(**{field: identifier})[:2])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UserNotFound(f"Several accounts have the {what} {identifier!r}: give the exact username.")
    raise UserNotFound(f"No account has the username {identifier!r}, and no one you share a project with has it as "
                       "their e-mail address. Ask for their username; an account is made by a staff member on the "
                       "admin site.")


NAME_MAX_LENGTH = Project._meta.get_field("name").max_length


def clean_project_name(name: str, *, actor, project: Project | None = None) -> str:
    """The name without invisible ends, or :class:`Invalid` naming the field: empty, too long, or the name
    (in any case) of another project the user is in, who would see two entries alike on their list. Other
    members' projects are not looked at: a refusal would tell the user what those are called."""
    name = strip_invisible(name or "")
    if not name:
        raise Invalid("A project needs a name.", field="name", code="blank")
    if (problem := name_problem(name, NAME_MAX_LENGTH)) is not None:
        raise Invalid(f"the name {problem}", field="name")
    mine = Project.objects.filter(memberships__user=actor)
    if project is not None:
        mine = mine.exclude(pk=project.pk)
    taken = next(((pk, other) for pk, other in mine.values_list("pk", "name").order_by("pk")
                  if name_key(other) == name_key(name)), None)
    if taken is not None:
        raise Invalid(f"You are already in a project named {quoted(taken[1])} (project {taken[0]}): choose another name.",
                      field="name", code="name_taken")
    return name


# Called as (project, user) inside the transaction that takes a member out of a project's review (removed, or made
# a viewer): the apps above release what the member held (webapp.review: their claims on nuclei, which kept those
# nuclei from everyone else for their 5 minutes). Registered by those apps as they load (their AppConfig.ready),
# so that this layer imports none of them.
MEMBER_LEFT_HOOKS: list[Callable] = []


def _member_left(project: Project, user) -> None:
    for hook in MEMBER_LEFT_HOOKS:
        hook(project, user)


def _lock_account(actor) -> None:
    """A user's project names are checked among their projects: two creations or renames by one user run one
    at a time (both of two at once were let through with one name)."""
    if getattr(actor, "pk", None) is not None:
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()


def _clean_description(description: str) -> str:
    return clean_note(description, field="description", what="A project description")


def do_create_project(name: str, *, actor, description: str = "") -> Project:
    """Create a project; its creator becomes its admin."""
    with transaction.atomic():
        _lock_account(actor)
        name = clean_project_name(name, actor=actor)
        project = Project.objects.create(name=name, description=_clean_description(description), created_by=actor)
        Membership.objects.create(project=project, user=actor, role=Role.ADMIN)
        audit.record("project.created", actor=actor, target=project, name=name)
    return project


def do_edit_project(project: Project, *, actor, name: str | None = None, description: str | None = None) -> Project:
    """Rename a project or change its description (admins); the audit row keeps what it was. A field
    left None stays as it is."""
    with transaction.atomic():
        if name is not None:
            _lock_account(actor)
        current = Project.objects.select_for_update().get(pk=project.pk)
        changes = {}
        if name is not None:
            name = clean_project_name(name, actor=actor, project=current)
            if name != current.name:
                changes["name"] = (current.name, name)
        if description is not None:
            description = _clean_description(description)
            if description != current.description:
                changes["description"] = (current.description, description)
        audit.save_edit(project, changes, "project.edited", actor=actor)
    return project


def _locked_membership(project: Project, user, actor=None) -> Membership | None:
    """Lock the project row (membership changes of one project run one at a time, so that two admins
    demoting each other cannot leave it with none) and return the user's membership, if any.

    The actor's role is checked again under the lock: the view checked it before, and an admin demoted
    meanwhile by another (each demoting the other at once) must not change members as an admin. Staff on the
    admin site act without a membership."""
    Project.objects.select_for_update().get(pk=project.pk)
    if actor is not None and getattr(actor, "pk", None) is not None:
        acting = Membership.objects.filter(project=project, user=actor).first()
        if acting is not None and acting.role != Role.ADMIN:
            raise Conflict(f"Your role in project {quoted(project.name)} changed meanwhile: you are a "
                           f"{Role(acting.role).label.lower()} now, and only admins change its members.",
                           code="role_changed")
    return Membership.objects.filter(project=project, user=user).first()


def _refuse_losing_last_admin(project: Project, membership: Membership | None, new_role: str | None, *,
                              leaving: bool = False) -> None:
    """Every project keeps at least one admin with an active account: nobody else could manage its members or
    delete it (a deactivated admin cannot sign in)."""
    if membership is None or membership.role != Role.ADMIN or new_role == Role.ADMIN:
        return
    if not Membership.objects.filter(project=project, role=Role.ADMIN, user__is_active=True).exclude(
            pk=membership.pk).exists():
        if leaving:
            raise Conflict(f"You are the last admin of project {quoted(project.name)} and cannot leave it: make "
                           "another member an admin first, or delete the project.", code="last_admin")
        change = "removed" if new_role is None else f"made a {Role(new_role).label.lower()}"
        raise Conflict(f"{membership.user.get_username()} is the last admin of project {quoted(project.name)} and cannot be "
                       f"{change}: make another member an admin first.", code="last_admin")


def do_set_membership(project: Project, user, role: str, *, actor) -> Membership:
    """Add ``user`` with ``role``, or change their role if they are a member already. The membership's
    ``added`` says which it was (the API answers a new member 201)."""
    with transaction.atomic():
        current = _locked_membership(project, user, actor)
        if current is not None and current.role == role:
            current.added = False
            return current   # nothing changes, so nothing is written
        _refuse_losing_last_admin(project, current, role)
        membership, created = Membership.objects.update_or_create(project=project, user=user,
                                                                  defaults={"role": role})
        membership.added = created
        if role == Role.VIEWER and current is not None:
            _member_left(project, user)
        audit.record("project.member_set", actor=actor, target=project, user=user.username, role=role,
                     created=created, previous=current.role if current else None)
    return membership


def do_add_member(project: Project, user, role: str, *, actor) -> Membership:
    """Add ``user`` to the project with ``role``; 409 when they are a member already."""
    with transaction.atomic():
        current = _locked_membership(project, user, actor)
        if current is not None:
            raise Conflict(f"{user.get_username()} is already a {Role(current.role).label.lower()} of project "
                           f"{quoted(project.name)}: change their role instead.", code="already_member")
        membership = Membership.objects.create(project=project, user=user, role=role)
        audit.record("project.member_added", actor=actor, target=project, user=user.username, role=role)
    return membership


def do_change_member_role(project: Project, user, role: str, *, actor) -> Membership:
    """Give a member another role; the last admin keeps theirs."""
    with transaction.atomic():
        membership = _locked_membership(project, user, actor)
        if membership is None:
            raise NotFound(f"{user.get_username()} is not a member of project {quoted(project.name)}.", code="not_a_member")
        _refuse_losing_last_admin(project, membership, role)
        previous = membership.role
        if previous != role:
            membership.role = role
            membership.save(update_fields=["role"])
            if role == Role.VIEWER:
                _member_left(project, user)
            audit.record("project.member_role_changed", actor=actor, target=project, user=user.username,
                         role=role, previous=previous)
    return membership


def do_remove_member(project: Project, user, *, actor) -> None:
    """Remove a member (they then get 404 for everything in the project); the last admin stays."""
    with transaction.atomic():
        membership = _locked_membership(project, user, actor)
        if membership is None:
            raise NotFound(f"{user.get_username()} is not a member of project {quoted(project.name)}.", code="not_a_member")
        _refuse_losing_last_admin(project, membership, None)
        membership.delete()
        _member_left(project, user)
        audit.record("project.member_removed", actor=actor, target=project, user=user.username,
                     role=membership.role)



def do_leave_project(project: Project, user) -> None:
    """``user`` leaves the project of their own accord, whatever their role (before, only an admin could take
    a member out, and a colleague moving on had to ask for it); the last admin stays, as for a removal."""
    with transaction.atomic():
        membership = _locked_membership(project, user)  # one's own membership: no admin role needed
        if membership is None:
            raise NotFound(f"You are not a member of project {quoted(project.name)}.", code="not_a_member")
        _refuse_losing_last_admin(project, membership, None, leaving=True)
        membership.delete()
        _member_left(project, user)
        audit.record("project.member_left", actor=user, target=project, user=user.username, role=membership.role)
