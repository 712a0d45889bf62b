"""A registered slide classified by the active model (one prediction per nucleus and label set, streamed
through the slide) and exported per slide: QuPath GeoJSON whose classes read back as they were stored, and
the merged CSV of its nuclei only. A training reads the slide's labelled nuclei, cut from the slide."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.utils import timezone

from mlcore.slide_nuclei import iter_geojson_nuclei
from tests.mlcore.helpers import random_model
from tests.webapp.slide_helpers import CLASSES, build_fixture_slide
from webapp.datasets.models import Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture(autouse=True)
def own_crop_cache(settings, tmp_path):
    """A DATA_DIR of the test's own: the slide crops a training caches there belong to rows that go with the
    test, and the orphan sweep of a later test would find them gone and remove them (or count them)."""
    settings.DATA_DIR = tmp_path / "own-data"


@pytest.fixture
def slide_project(owner, settings, tmp_path, monkeypatch):
    from webapp.datasets.slide_import import import_slide
    from webapp.projects.slides_folder import do_set_slides_folder

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.SLIDES_ROOT = (tmp_path / "share").resolve()
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    fixture = build_fixture_slide(settings.SLIDES_ROOT)
    project = do_create_project("slide classes", actor=owner)
    do_set_slides_folder(project, ".")
    dataset = import_slide(project, name="case", slide_source=fixture.slide, slide_root="slides",
                           slide_name="case-1.tif", detections=fixture.geojson, detections_name="case-1.geojson",
                           label_set_name="qupath", actor=owner)
    return project, dataset.images.get(), fixture


def _active_model(project, settings):
    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.types import LabelSet as MLLabelSet
    from webapp.training.models import ModelVersion

    model = random_model([MLLabelSet("qupath", CLASSES)])  # one view and eight give different probabilities
    save_checkpoint(Path(settings.MEDIA_ROOT) / "models" / "v1.pt", model, "sparse", 0, True, TrainConfig())
    return ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                       data_snapshot_at=timezone.now(), is_active=True)


def _export(client, project, image, **params):
    response = client.get(f"/api/projects/{project.pk}/slides/{image.pk}/export/detections.geojson", params)
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    return b"".join(response.streaming_content)


def test_the_ground_truth_geojson_round_trips_the_classes_and_shapes(client, owner, slide_project, tmp_path):
    project, image, fixture = slide_project
    client.force_login(owner)
    text = _export(client, project, image, label_set="qupath", source="ground_truth")
    path = tmp_path / "export.geojson"
    path.write_bytes(text)
    read_back = list(iter_geojson_nuclei(path, "export.geojson"))
    assert [n.class_name for n in read_back] == fixture.classes
    stored = list(Nucleus.objects.filter(image=image).order_by("id").values_list("x0", "y0", "x1", "y1", "area"))
    assert [(*n.bbox, n.area) for n in read_back] == [tuple(s) for s in stored]


def test_the_merged_csv_of_a_slide_has_a_row_per_nucleus(client, owner, slide_project):
    project, image, fixture = slide_project
    client.force_login(owner)
    response = client.get(f"/api/projects/{project.pk}/slides/{image.pk}/export/merged.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = rows[0], rows[1:]
    assert len(body) == len(fixture.boxes) and {r[2] for r in body} == {image.name}
    truth = header.index("qupath:ground_truth")
    assert [r[truth] or None for r in sorted(body, key=lambda r: int(r[3]))] == fixture.classes


def test_slide_routes_refuse_a_tile_image_and_outsiders(api_client_for, owner, outsider, member, slide_project):
    project, image, _ = slide_project
    assert api_client_for(outsider).get(
        f"/api/projects/{project.pk}/slides/{image.pk}/export/merged.csv").status_code == 404
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    assert api_client_for(member).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/").status_code == 403
    no_model = api_client_for(owner).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/")
    assert no_model.status_code == 409 and "train one first" in no_model.json()["detail"]


def test_slide_inference_stores_one_prediction_per_nucleus(api_client_for, owner, slide_project, settings, client):
    from webapp.training.models import Prediction
    from workers.tasks import run_job

    project, image, fixture = slide_project
    version = _active_model(project, settings)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/")
    assert response.status_code == 202, response.content
    # Asked again while the first is queued (a second click): the same job answers, no second one.
    twice = api_client_for(owner).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/")
    assert twice.status_code == 409 and twice.json()["job_id"] == response.json()["id"]
    assert "is being classified by model v1 already" in twice.json()["detail"]
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get(pk=response.json()["id"]).error
    job = Job.objects.get(pk=response.json()["id"])
    predictions = Prediction.objects.filter(model_version=version, nucleus__image=image)
    assert predictions.count() == len(fixture.boxes)
    assert set(predictions.values_list("nucleus_id", flat=True)) == set(image.nuclei.values_list("id", flat=True))
    assert set(predictions.values_list("class_index", flat=True)) <= {0, 1}
    assert job.result["nuclei"] == len(fixture.boxes) and job.result["nuclei_per_s"] > 0
    assert job.params["tta"] is False and job.result["tta"] is False  # a slide: one view per nucleus by default
    one_view = dict(predictions.values_list("nucleus_id", "base_probs"))
    assert job.progress["nuclei_done"] == len(fixture.boxes) and job.progress["region"]["height"] == image.height

    # Run again, with test-time augmentation asked for: the version's predictions of the slide are replaced,
    # not doubled, by the mean over the 8 views.
    again = api_client_for(owner).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/", {"tta": True},
                                       format="json")
    assert run_job(again.json()["id"]) == "succeeded"
    assert Job.objects.get(pk=again.json()["id"]).result["tta"] is True
    assert predictions.count() == len(fixture.boxes)
    eight_views = dict(predictions.values_list("nucleus_id", "base_probs"))
    assert eight_views.keys() == one_view.keys() and eight_views != one_view

    client.force_login(owner)
    path = settings.MEDIA_ROOT / "predicted.geojson"
    path.write_bytes(_export(client, project, image, label_set="qupath", source="prediction"))
    by_id = dict(predictions.values_list("nucleus__instance_id", "class_index"))
    assert [n.class_name for n in iter_geojson_nuclei(path)] == [CLASSES[by_id[i]] for i in sorted(by_id)]



def test_a_slide_is_not_classified_while_a_deletion_of_the_project_is_pending(api_client_for, owner, slide_project,
                                                                               settings):
    """Accepted, the job failed later with a library's error while the deletion removed the slide's rows."""
    project, image, _ = slide_project
    _active_model(project, settings)
    deleting = Job.objects.create(kind=Job.Kind.DELETE, project=project, created_by=owner, state=Job.State.QUEUED,
                                  params={"target": "dataset", "dataset": image.dataset_id, "name": image.dataset.name})
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/")
    assert response.status_code == 409, response.content
    assert response.json()["detail"].startswith("A slide's classification cannot start now: dataset ")
    assert f"(job {deleting.pk}, queued)" in response.json()["detail"]
    assert not Job.objects.filter(project=project, kind=Job.Kind.PREDICT).exists()

def test_a_project_of_one_slide_trains_on_its_labelled_nuclei(owner, slide_project, settings):
    """A project whose only image is a slide trains on the slide's labelled nuclei (the detections' classes),
    not on its unclassified ones; the version lists the slide's dataset with the nuclei it read."""
    from tests.workers.training_helpers import FAST
    from webapp.training.models import ModelVersion
    from webapp.training.runner import run_training

    project, image, fixture = slide_project
    labelled = sum(1 for name in fixture.classes if name)
    logs = []
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "predict_tta": False}})
    result = run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.training_data["nuclei"] == labelled < len(fixture.boxes)
    assert result["trained_on"]["qupath"] == {"ground_truth": labelled}
    assert [s["name"] for s in version.label_sets] == ["qupath"]
    assert version.training_data["datasets"] == [
        {"name": "case", "format": "slide", "label_set": "qupath", "images": 1, "nuclei": labelled}]
    assert any(f"loaded 0 images and {labelled} labelled nuclei of 1 slide(s)" in line for line in logs), logs


def test_the_project_page_lists_slides_and_offers_registration_to_curators(client, owner, member, slide_project,
                                                                           settings):
    project, image, _ = slide_project
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="slide-form"' in page and f"/api/projects/{project.pk}/slides/{image.pk}/infer/" in page
    assert f"/api/projects/{project.pk}/slides/{image.pk}/export/merged.csv" in page and "js/slides.js" in page
    assert '<input type="checkbox" id="slide-tta" aria-describedby="slide-help-tta" >' in page  # offered, off by default
    # The slide's name opens the viewer; no model, no predictions export.
    assert f'<a href="/images/{image.pk}/slide/">{image.name}</a>' in page
    assert "source=prediction" not in page
    # The predictions export shows a label set the active model predicts: the slide's own when it does...
    from webapp.training.models import ModelVersion

    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True,
                                          label_sets=[{"name": "tiles", "classes": ["a"]},
                                                      {"name": "qupath", "classes": list(CLASSES)}])
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "?source=prediction&amp;label_set=qupath" in page and "GeoJSON (v1 predictions)" in page
    # ... else the model's first (a version trained before the slide came has no output for its label set).
    version.label_sets = [{"name": "tiles", "classes": ["a"]}]
    version.save()
    assert "?source=prediction&amp;label_set=tiles" in client.get(f"/projects/{project.pk}/").content.decode()
    # COCO holds tiles (its export answers 400 for a slide): neither page offers it for the slide's dataset.
    assert f"/api/datasets/{image.dataset_id}/export/coco.zip" not in page
    dataset_page = client.get(f"/projects/{project.pk}/datasets/{image.dataset_id}/").content.decode()
    assert "GeoJSON for QuPath" in dataset_page and "coco.zip" not in dataset_page and "COCO zip" not in dataset_page
    settings.SLIDES_ROOT = None
    assert "SLIDES_ROOT is not set" in client.get(f"/projects/{project.pk}/").content.decode()
    do_set_membership(project, member, Role.VIEWER, actor=owner)
    client.force_login(member)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert image.name in page and 'id="slide-form"' not in page and "slide-infer" not in page


@pytest.mark.slow  # a real training, then the prediction job over the slide
def test_training_with_tiles_and_a_slide_trains_on_the_tiles_and_then_classifies_the_slide(owner, settings, tmp_path,
                                                                                            slide_project):
    """The slide's labelled nuclei join the tiles' in the training table, its label set becomes one of the
    model's; the prediction job that follows a training classifies every nucleus of the slide."""
    from tests.workers.training_helpers import FAST
    from mlcore.synthetic import generate_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.training.models import ModelVersion, Prediction
    from webapp.training.runner import run_prediction, run_training

    settings.IMPORT_PROCESSES = 1
    project, image, fixture = slide_project
    root = generate_dataset(tmp_path / "tiles", format="seed", n_images=2, nuclei_per_image=12,
                            class_names=["epithelial", "inflammatory"], seed=0, size=(128, 128))
    tiles = do_import_dataset(project, name="tiles", format="seed", path=root, actor=owner)
    logs = []
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"]}})
    result = run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)
    labelled = sum(1 for name in fixture.classes if name)
    assert any(f"loaded 2 images and {labelled} labelled nuclei of 1 slide(s)" in line for line in logs), logs
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.training_data["nuclei"] == tiles.nucleus_count + labelled
    assert result["trained_on"]["qupath"] == {"ground_truth": labelled}
    assert [s["name"] for s in version.label_sets] == ["qupath", "tiles"]  # in the order they were made
    assert [d["name"] for d in version.training_data["datasets"]] == ["case", "tiles"]

    prediction = Job.objects.get(pk=result["prediction_job"])
    outcome = run_prediction(prediction, lambda *a, **k: None, lambda: False)
    assert outcome["predictions"] == Prediction.objects.filter(model_version=version).count()
    on_slide = Prediction.objects.filter(model_version=version, nucleus__image=image)
    assert on_slide.values("nucleus_id").distinct().count() == len(fixture.boxes)


def test_a_slide_that_cannot_be_read_is_left_out_of_the_projects_predictions_and_named(owner, settings, tmp_path,
                                                                                       slide_project, monkeypatch):
    """A slide moved away from SLIDES_ROOT: the project's prediction job still stores every tile's
    predictions and succeeds, naming the slide it could not read; a job for that slide alone fails with
    the user's slide name, without a code location."""
    from mlcore.synthetic import generate_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.training.models import Prediction
    from webapp.training.operations import do_start_slide_prediction
    from webapp.training.runner import run_prediction
    from workers.tasks import run_job

    settings.IMPORT_PROCESSES = 1
    project, image, fixture = slide_project
    root = generate_dataset(tmp_path / "tiles", format="seed", n_images=2, nuclei_per_image=8,
                            class_names=list(CLASSES), seed=0, size=(96, 96))
    tiles = do_import_dataset(project, name="tiles", format="seed", path=root, actor=owner)
    version = _active_model(project, settings)
    fixture.slide.rename(fixture.slide.with_name("moved-away.tif"))

    logs = []
    job = Job.objects.create(kind=Job.Kind.PREDICT, project=project, created_by=owner,
                             params={"model_version": version.pk})
    outcome = run_prediction(job, lambda percent, log=None, **details: logs.append(log) if log else None,
                             lambda: False)
    assert outcome["unreadable_slides"] == [f"{image.name}: the slide file is missing"]
    assert Prediction.objects.filter(model_version=version, nucleus__image__dataset=tiles).values(
        "nucleus_id").distinct().count() == tiles.nucleus_count
    assert not Prediction.objects.filter(model_version=version, nucleus__image=image).exists()
    assert any("1 slide could not be read and has no predictions of this version: "
               f"{image.name}: the slide file is missing" in line for line in logs), logs

    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    alone = do_start_slide_prediction(version, image, actor=owner)
    assert run_job(alone.pk) == "failed"
    alone.refresh_from_db()
    assert alone.error == f"{image.name}: the slide file is missing", alone.error
