"""The example archive the upload form links, for every format, downloaded from the app and uploaded back
through the real import path (API, Redis, Celery worker) with the format left on "auto": it imports, and
the job says which format it found. Detection itself is tested per layout in tests/mlcore."""

import io
import zipfile

import pytest

from mlcore.examples import EXAMPLE_CLASSES
from mlcore.readers import FORMATS
from mlcore.readers.pannuke import PANNUKE_CLASSES
from tests.webapp.dataset_helpers import upload_and_wait, zip_entries
from webapp.datasets.models import Dataset, LabelClass, Nucleus
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_every_example_archive_imports_with_its_format_detected(api_client_for, owner, celery_worker_process):
    client = api_client_for(owner)
    project = do_create_project("examples", actor=owner)
    for format in FORMATS:
        response = client.get(f"/api/formats/{format}/example.zip")
        assert response.status_code == 200 and response["Content-Type"] == "application/zip"
        assert response["Content-Disposition"] == f'attachment; filename="example-{format}.zip"'
        archive = io.BytesIO(b"".join(response.streaming_content))
        with zipfile.ZipFile(archive) as opened:
            assert all(name.startswith(f"example-{format}/") for name in opened.namelist())
        archive.seek(0)
        archive.name = f"example-{format}.zip"

        job = upload_and_wait(client, project.pk, archive, celery_worker_process, name=f"ex-{format}", format="auto")
        assert job.state == "succeeded", job.error
        assert job.result["format"] == format and job.result["format_detected"] is True
        assert f"format detected from the files: {format}" in job.log_tail
        dataset = Dataset.objects.get(pk=job.result["dataset_id"])
        assert dataset.format == format and dataset.image_count == 2
        assert Nucleus.objects.filter(image__dataset=dataset).count() == dataset.nucleus_count == 12
        expected = PANNUKE_CLASSES if format == "pannuke" else EXAMPLE_CLASSES
        assert sorted(LabelClass.objects.filter(label_set=dataset.label_set).values_list("name", flat=True)) == \
            sorted(expected)


def test_a_layout_no_format_fits_fails_with_what_was_looked_for(api_client_for, owner, celery_worker_process):
    client = api_client_for(owner)
    project = do_create_project("undetectable", actor=owner)
    job = upload_and_wait(client, project.pk, zip_entries({"notes/readme.txt": b"no dataset here"}),
                          celery_worker_process, name="nothing", format="auto")
    assert job.state == "failed"
    assert "could not be told from the files" in job.error and "choose the format" in job.error, job.error
    assert "/staging/" not in job.error and "extracted" not in job.error
    assert not Dataset.objects.filter(project=project).exists()


def test_an_unknown_example_format_is_a_json_404(api_client_for, owner):
    response = api_client_for(owner).get("/api/formats/tiff/example.zip")
    assert response.status_code == 404 and "seed" in response.json()["detail"]


def test_fold_arrays_at_the_archives_top_are_named_after_the_archive(api_client_for, owner, celery_worker_process,
                                                                     tmp_path):
    """PanNuke's images are named by their folder: unpacked on the server, they were "extracted_00000"."""
    from mlcore.synthetic import generate_dataset
    from webapp.datasets.models import Image

    root = generate_dataset(tmp_path / "fold", "pannuke", n_images=2, nuclei_per_image=3, seed=1, size=(32, 32),
                            class_names=list(PANNUKE_CLASSES))
    archive = zip_entries({path.name: path.read_bytes() for path in root.iterdir() if path.is_file()})
    archive.name = "Fold 1.zip"
    job = upload_and_wait(api_client_for(owner), do_create_project("folds", actor=owner).pk, archive,
                          celery_worker_process, name="fold", format="pannuke")
    assert job.state == "succeeded", job.error
    assert sorted(Image.objects.filter(dataset_id=job.result["dataset_id"]).values_list("name", flat=True)) == [
        "Fold_1_00000", "Fold_1_00001"]
