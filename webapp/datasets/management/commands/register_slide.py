from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from tqdm import tqdm

from mlcore.types import DataError, quoted
from webapp.core.domain_errors import Invalid
from webapp.datasets.slide_import import import_slide
from webapp.projects.slides_folder import resolve_slides_path

from .import_dataset import Command as ImportCommand


class Command(ImportCommand):
    help = ("Register a whole-slide image under SLIDES_ROOT with its QuPath GeoJSON detections as a new dataset "
            "(the same code path as the API's slide import, run here).")

    def add_arguments(self, parser):
        parser.add_argument("project", help="project name or id (created when missing, owned by --user)")
        parser.add_argument("path", help="the slide: a path relative to SLIDES_ROOT, or an absolute one inside it")
        parser.add_argument("--detections", required=True, type=Path,
                            help="its QuPath GeoJSON detections: a file path, or one relative to SLIDES_ROOT")
        parser.add_argument("--name", required=True, help="the new dataset's name")
        parser.add_argument("--label-set", help="label set of the detections' classes (joined when it exists)")
        parser.add_argument("--user", help="who registers it (default: the first superuser)")
        parser.add_argument("--provenance", default="")

    def handle(self, *args, project, path, detections, name, label_set, user, provenance, **options):
        if not settings.SLIDES_ROOT:
            raise CommandError("SLIDES_ROOT is not set: the web app reads registered slides from there; set it to "
                               "the folder (share) that holds the slide")
        relative = path
        if Path(path).is_absolute():
            try:
                relative = str(Path(path).resolve().relative_to(Path(settings.SLIDES_ROOT).resolve()))
            except ValueError:
                raise CommandError(f"{path} is not inside SLIDES_ROOT ({settings.SLIDES_ROOT})") from None
        beside = Path(settings.SLIDES_ROOT) / detections
        if not detections.is_file() and not detections.is_absolute() and beside.is_file():
            detections = beside   # as the API takes it: relative to SLIDES_ROOT, like the slide
        if not detections.is_file():
            raise CommandError(f"--detections: no such file {detections}, nor under SLIDES_ROOT")
        actor = self._user(user)
        target = self._project(project, actor)
        bar = tqdm(total=100, desc=f"registering {name}", unit="%",
                   bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

        def progress(percent, message):
            bar.n = percent
            bar.set_postfix_str(message, refresh=True)

        try:
            slide = resolve_slides_path(relative, "path", folder=".")  # a server administrator's command
            dataset = import_slide(target, name=name, slide_source=slide, slide_root="slides",
                                   slide_name=Path(relative).name, detections=detections.resolve(),
                                   detections_name=detections.name, label_set_name=label_set, actor=actor,
                                   provenance=provenance or f"registered from {relative}", progress=progress,
                                   log=lambda line: None)
        except (DataError, Invalid) as exc:
            raise CommandError(f"nothing was registered: {exc}") from None
        finally:
            bar.close()
        image = dataset.images.get()
        label_set_name = dataset.label_set.name if dataset.label_set else "none (unclassified)"
        self.stdout.write(self.style.SUCCESS(
            f"Registered slide {relative!r} as dataset {quoted(dataset.name)} (image id {image.pk}) in project "
            f"{quoted(target.name)} (id {target.pk}): {image.width} x {image.height} px, mpp {image.mpp}, "
            f"{dataset.nucleus_count} nuclei, label set {label_set_name}"))
