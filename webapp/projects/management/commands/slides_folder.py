from django.core.management.base import BaseCommand, CommandError

from mlcore.types import quoted
from webapp.core.domain_errors import Invalid
from webapp.projects.slides_folder import do_set_slides_folder
from webapp.projects.models import Project


class Command(BaseCommand):
    help = ("Show or grant the folder under SLIDES_ROOT from which a project's curators may register slides by path "
            "('.' all of it; --none takes the grant back). Without a grant they upload slides instead.")

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or name")
        parser.add_argument("folder", nargs="?", help="a folder relative to SLIDES_ROOT, or '.' for all of it")
        parser.add_argument("--none", action="store_true", help="take the project's grant back")

    def handle(self, *args, project, folder, none, **options):
        target = self._project(project)
        if folder is not None and none:
            raise CommandError("give a folder or --none, not both")
        if folder is None and not none:
            shown = repr(target.slides_folder) if target.slides_folder else "none"
            self.stdout.write(f"Project {quoted(target.name)} (id {target.pk}): slides folder {shown}")
            return
        try:
            do_set_slides_folder(target, "" if none else folder)
        except Invalid as exc:
            raise CommandError(str(exc)) from None
        granted = repr(target.slides_folder) if target.slides_folder else "none: its curators upload slides"
        self.stdout.write(self.style.SUCCESS(
            f"Project {quoted(target.name)} (id {target.pk}): slides folder {granted}"))

    def _project(self, key: str) -> Project:
        if key.isdigit() and (found := Project.objects.filter(pk=int(key)).first()):
            return found
        named = list(Project.objects.filter(name=key)[:2])
        if len(named) != 1:
            raise CommandError(f"no project with id or name {key!r}" if not named else
                               f"several projects are named {key!r}: give the id")
        return named[0]
