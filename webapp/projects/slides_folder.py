"""A project's place in the server's slide share (SLIDES_ROOT), and the paths a request names there.

SLIDES_ROOT is one share for the whole server, often every lab's slides, mounted on every host that reads
slides. A project registers slides by path only from the folder a server administrator granted it
(:attr:`Project.slides_folder`: the admin site, ``manage.py slides_folder``); staff may register from all of
it. Before the grant, the curator of any project (anyone may make one) registered any slide of the share and
read it in the viewer. Every path a request names goes through :func:`resolve_slides_path`, which refuses
what would leave the share or the folder, and whose errors never show a server path.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction

from webapp.core import audit
from webapp.core.domain_errors import Invalid

from .models import Project


class SlidePathRefused(Invalid):
    """A path under SLIDES_ROOT that cannot be used (absent root, absolute, '..', a link out of it, outside the
    project's folder)."""

    default_code = "slide_path_refused"


def _slides_root(field: str) -> Path:
    root = getattr(settings, "SLIDES_ROOT", None)
    if not root:
        raise SlidePathRefused("this server has no SLIDES_ROOT (a folder of slides it may read), so a "
                               "slide cannot be registered by path; upload the file instead, or ask the "
                               "administrator to set SLIDES_ROOT", field=field)
    return Path(root).resolve()


def _relative_parts(relative: str, field: str) -> tuple[str, ...]:
    """``relative``'s parts as a path under SLIDES_ROOT (either slash); refuses absolute paths and '..'."""
    text = str(relative or "").replace("\\", "/")
    parts = PurePosixPath(text).parts
    if not text or text.startswith("/") or (parts and ":" in parts[0]) or "\x00" in text:
        raise SlidePathRefused(f"{relative!r} must be a path relative to SLIDES_ROOT, not an absolute one", field=field)
    if ".." in parts:
        raise SlidePathRefused(f"{relative!r} must stay inside SLIDES_ROOT ('..' is not allowed)", field=field)
    return parts


def registrable_folder(project, actor) -> str:
    """The folder under SLIDES_ROOT from which ``actor`` may register slides into ``project`` by path: the
    project's grant (:attr:`Project.slides_folder`, "" for none), or all of it ("."), for staff."""
    return "." if getattr(actor, "is_staff", False) else project.slides_folder


def resolve_slides_path(relative: str, field: str, *, folder: str) -> Path:
    """The file ``relative`` names under ``settings.SLIDES_ROOT``, inside ``folder`` (a project's grant, see
    :func:`registrable_folder`; "." all of SLIDES_ROOT); refuses what could reach outside it.

    Errors start with ``field`` (the request field) and never show the server's paths."""
    root = _slides_root(field)
    if not folder:
        raise SlidePathRefused("this project has no folder of the server's slide share (SLIDES_ROOT) to register "
                               "slides from: upload the slide and its detections instead, or ask a server "
                               "administrator to grant the project a folder there (admin site, or manage.py "
                               "slides_folder)", field=field)
    parts = _relative_parts(relative, field)
    granted = PurePosixPath(folder).parts
    outside = SlidePathRefused(f"{relative!r} is outside this project's folder of the slide share, {folder!r}: "
                               f"give a path that starts with {folder + '/'!r}", field=field)
    # The path as written first: whether a file exists in another lab's folder is not this project's to learn.
    if tuple(parts[:len(granted)]) != granted:
        raise outside
    try:
        resolved = root.joinpath(*parts).resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        where = "under SLIDES_ROOT" if not granted else f"in this project's folder {folder!r}"
        raise SlidePathRefused(f"there is no file {relative!r} {where}", field=field) from None
    if not resolved.is_relative_to(root):
        raise SlidePathRefused(f"{relative!r} links to a file outside SLIDES_ROOT, which is not allowed", field=field)
    if not resolved.is_relative_to(root.joinpath(*granted).resolve()):
        raise outside   # a link in the folder that leads out of it
    if not resolved.is_file():
        raise SlidePathRefused(f"{relative!r} under SLIDES_ROOT is not a file", field=field)
    return resolved


def clean_slides_folder(folder: str) -> str:
    """A project's grant as stored: "" (none), "." (all of SLIDES_ROOT) or a folder's path relative to
    SLIDES_ROOT with forward slashes, which must exist there (Invalid on ``slides_folder``)."""
    text = str(folder or "").strip().replace("\\", "/")
    if len(text) > 1:
        text = text.rstrip("/")
    if not text:
        return ""
    root = _slides_root("slides_folder")
    if text == ".":
        return text
    parts = _relative_parts(text, "slides_folder")
    resolved = root.joinpath(*parts).resolve()
    if not resolved.is_relative_to(root):
        raise SlidePathRefused(f"{folder!r} links to a folder outside SLIDES_ROOT, which is not allowed",
                               field="slides_folder")
    if not resolved.is_dir():
        raise SlidePathRefused(f"there is no folder {folder!r} under SLIDES_ROOT", field="slides_folder")
    return "/".join(parts)


def do_set_slides_folder(project, folder: str, *, actor=None):
    """Grant ``project`` the folder under SLIDES_ROOT its curators may register slides from ("" takes the
    grant back; slides registered before stay readable). Server administrators only: the admin site and
    ``manage.py slides_folder`` call it. One audit row, in the project's activity."""
    folder = clean_slides_folder(folder)
    with transaction.atomic():
        current = Project.objects.select_for_update().get(pk=project.pk)
        if current.slides_folder != folder:
            audit.record("project.slides_folder_set", actor=actor, target=current, slides_folder=folder,
                         previous=current.slides_folder)
            current.slides_folder = folder
            current.save(update_fields=["slides_folder"])
    project.slides_folder = folder
    return current
