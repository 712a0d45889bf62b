from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from mlcore.readers import FORMATS
from mlcore.types import DataError, quoted
from webapp.datasets.importing import ImportRejected, do_import_dataset
from webapp.projects.models import Project
from webapp.projects.operations import do_create_project


class Command(BaseCommand):
    help = "Import a dataset from a folder or file into a project (the same code path as an upload)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project name or id (created when missing, owned by --user)")
        parser.add_argument("name", help="dataset name")
        parser.add_argument("format", choices=FORMATS)
        parser.add_argument("path", type=Path)
        parser.add_argument("--label-set", help="join or create this label set (default: match by class names)")
        parser.add_argument("--unlabelled", action="store_true", help="import the masks only")
        parser.add_argument("--user", help="who imports (default: the first superuser)")
        parser.add_argument("--provenance", default="")

    def handle(self, *args, project, name, format, path, label_set, unlabelled, user, provenance, **options):
        actor = self._user(user)
        target = self._project(project, actor)
        bar = tqdm(total=100, desc=f"importing {name}", unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

        def progress(percent, message):
            bar.n = percent
            bar.set_postfix_str(message, refresh=True)

        try:
            dataset = do_import_dataset(target, name=name, format=format, path=path.resolve(), actor=actor,
                                        label_set_name=label_set, labelled=not unlabelled,
                                        provenance=provenance or f"imported from {path}", progress=progress)
        except (DataError, ImportRejected) as exc:
            raise CommandError(f"nothing was imported: {exc}") from None
        finally:
            bar.close()
        label_set_name = dataset.label_set.name if dataset.label_set else "none (unlabelled)"
        self.stdout.write(self.style.SUCCESS(
            f"Imported {quoted(dataset.name)} into project {quoted(target.name)} (id {target.pk}): {dataset.image_count} images, "
            f"{dataset.nucleus_count} nuclei, label set {label_set_name}"))

    def _user(self, username):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise CommandError(f"--user: no user named {username!r}") from None
        actor = User.objects.filter(is_superuser=True).order_by("id").first()
        if actor is None:
            raise CommandError("no superuser exists: pass --user or run `manage.py ensure_admin` first")
        return actor

    def _project(self, key, actor):
        found = Project.objects.filter(pk=int(key)).first() if key.isdigit() else None
        found = found or Project.objects.filter(name=key).first()
        if found is None:
            found = do_create_project(key, actor=actor)
            self.stdout.write(f"Created project {key!r} (id {found.pk}) with {actor.username} as admin.")
        return found
