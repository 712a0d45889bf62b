"""This app's files in the sweep of what killed jobs left behind (:mod:`webapp.jobs.sweep`, which sits below
this app: registered in DatasetsConfig.ready):

- ``projects/<p>/datasets/<id>``: an imported dataset's files; kept while a Dataset row names it, or while
  an import of that project is running (its rows are not committed yet);
- ``DATA_DIR/uploads/slides/<id>`` (host-local, not media): a chunked slide upload
  (:mod:`webapp.datasets.slide_uploads`); kept until untouched for a day (``slide_uploads.MAX_AGE``), so that
  an interrupted upload can be resumed;
- ``slide-uploads/<id>``: a chunked upload that an import which did not succeed gave back
  (``slide_uploads.STORED_FOLDER``); kept until a day after it was given back.
"""

from __future__ import annotations

from webapp.jobs.models import Job
from webapp.jobs.sweep import Sweep, project_id_of

from .models import Dataset


def sweep_dataset_files(run: Sweep) -> None:
    from . import slide_uploads

    # Chunked slide uploads (a folder each) live longer than GRACE: a user may resume one the next morning.
    run.removed += slide_uploads.sweep_abandoned(run.now)
    run.remove_unless(slide_uploads.STORED_FOLDER, "*", lambda relative: False, max_age=slide_uploads.MAX_AGE)

    stored = set(Dataset.objects.values_list("storage_dir", flat=True))
    importing = set(Job.objects.filter(kind=Job.Kind.IMPORT, state=Job.State.RUNNING)
                    .values_list("project_id", flat=True))
    run.remove_unless("projects", "*/datasets/*",
                      lambda relative: relative in stored or project_id_of(relative) in importing)


def dataset_folders(paths: list[str]) -> set[str]:
    """Which of these storage names a Dataset row names (its files stay)."""
    return set(Dataset.objects.filter(storage_dir__in=paths).values_list("storage_dir", flat=True))
