"""A tile dataset imported into a project with an active model version gets that version's predictions at
once, in a prediction job of its own (webapp.training.operations.do_predict_dataset), made as the version's other
tiles were; the other datasets' predictions are left as they are. A version made active again predicts the
datasets imported since it last predicted."""

import pytest

from tests.generated_datasets import generated_dataset
from tests.webapp.dataset_helpers import upload, zip_folder
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion, Prediction
from webapp.training.operations import do_predict_dataset
from webapp.training.runner import run_training
from workers.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture(autouse=True)
def jobs_run_here(monkeypatch, settings):
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # each test runs its jobs itself


def import_more(client, project, tmp_path) -> tuple[Job, Dataset]:
    root = generated_dataset(tmp_path / "more", format="seed", n_images=2, nuclei_per_image=12,
                             class_names=["epithelial", "inflammatory"], seed=5, size=(160, 160))
    response = upload(client, project.pk, zip_folder(root), name="more", format="seed", label_set="colon")
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get(pk=response.json()["id"]).error
    return Job.objects.get(pk=response.json()["id"]), Dataset.objects.get(project=project, name="more")


def test_a_dataset_imported_beside_an_active_version_is_predicted_by_it(owner, media_root, tmp_path,
                                                                        api_client_for):
    project = two_taxonomy_project(owner, tmp_path)
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                                  params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
    trained = run_training(training, lambda *args, **details: None, lambda: False)
    version = ModelVersion.objects.get(pk=trained["model_version_id"])
    assert version.is_active and run_job(trained["prediction_job"]) == "succeeded"
    others = sorted(Prediction.objects.values_list("pk", "nucleus_id", "class_index"))
    assert others

    imported, dataset = import_more(api_client_for(owner), project, tmp_path)
    prediction = Job.objects.get(pk=imported.result["prediction_job"])
    # One view, as the version's tiles were predicted (its training's predict_tta was off); queued by the import,
    # not by the person who uploaded (as a training's predictions are its own: test_predictions_queued_by_a_training).
    assert (prediction.kind, prediction.params, prediction.created_by) == (Job.Kind.PREDICT, {
        "model_version": version.pk, "dataset": dataset.pk, "dataset_name": "more", "tta": False,
        "reason": "import", "started_by_job": imported.pk}, None)
    assert f"predictions of the new nuclei follow in job {prediction.pk}" in imported.log_tail
    assert not Prediction.objects.filter(nucleus__image__dataset=dataset).exists()

    assert run_job(prediction.pk) == "succeeded", Job.objects.get(pk=prediction.pk).error
    new = set(Nucleus.objects.filter(image__dataset=dataset).values_list("id", flat=True))
    predicted = Prediction.objects.filter(nucleus_id__in=new)
    assert len(new) > 10 and set(predicted.values_list("nucleus_id", flat=True)) == new
    assert set(predicted.values_list("model_version", flat=True)) == {version.pk}
    assert predicted.count() == 2 * len(new)   # both label sets of the model, colon and breast
    assert sorted(Prediction.objects.exclude(nucleus_id__in=new).values_list("pk", "nucleus_id", "class_index")) \
        == others
    done = Job.objects.get(pk=prediction.pk)
    assert done.result["predictions"] == 2 * len(new)
    assert "images of dataset 'more'" in done.log_tail

    # Delivered again (its worker lost after the commit): the same prediction job, not a second one.
    assert do_predict_dataset(dataset) == prediction
    assert Job.objects.filter(kind=Job.Kind.PREDICT, params__dataset=dataset.pk).count() == 1


def test_without_an_active_version_there_is_nothing_to_predict(owner, media_root, tmp_path, api_client_for):
    project = do_create_project("no model", actor=owner)
    imported, dataset = import_more(api_client_for(owner), project, tmp_path)
    assert "prediction_job" not in imported.result
    assert not Job.objects.filter(kind=Job.Kind.PREDICT).exists()


def test_a_version_made_active_again_predicts_the_datasets_imported_since(owner, media_root, tmp_path,
                                                                           api_client_for):
    project = two_taxonomy_project(owner, tmp_path)
    client = api_client_for(owner)

    def train() -> ModelVersion:
        job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                                 params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
        trained = run_training(job, lambda *args, **details: None, lambda: False)
        assert run_job(trained["prediction_job"]) == "succeeded"
        return ModelVersion.objects.get(pk=trained["model_version_id"])

    v1 = train()
    v2 = train()   # active now; it predicted every nucleus of the project
    imported, dataset = import_more(client, project, tmp_path)   # v2 predicts it
    assert run_job(imported.result["prediction_job"]) == "succeeded"
    new = set(Nucleus.objects.filter(image__dataset=dataset).values_list("id", flat=True))
    assert not Prediction.objects.filter(model_version=v1, nucleus_id__in=new).exists()

    response = client.post(f"/api/projects/{project.pk}/versions/1/activate/")
    assert response.status_code == 200, response.content
    [job_id] = response.json()["prediction_jobs"]   # "more" only: v1 predicted colon and breast after its training
    job = Job.objects.get(pk=job_id)
    assert job.params == {"model_version": v1.pk, "missing": True, "tta": False}
    assert run_job(job_id) == "succeeded"
    assert set(Prediction.objects.filter(model_version=v1, nucleus_id__in=new).values_list("nucleus_id", flat=True)) \
        == new

    # A dataset prediction that failed is queued again, not returned.
    Job.objects.filter(pk=job_id).update(state=Job.State.FAILED)
    again = do_predict_dataset(dataset, v1)
    assert again.pk != job_id and again.state == Job.State.QUEUED
    again.delete()

    # v2 has every dataset's predictions: made active again, it queues nothing.
    response = client.post(f"/api/projects/{project.pk}/versions/2/activate/")
    assert (response.status_code, response.json()["prediction_jobs"]) == (200, [])
    assert ModelVersion.objects.get(pk=v2.pk).is_active


def test_a_dataset_is_left_to_the_versions_prediction_of_the_whole_project_while_that_is_queued(owner, media_root,
                                                                                                tmp_path):
    project = two_taxonomy_project(owner, tmp_path)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"]}})
    trained = run_training(job, lambda *args, **details: None, lambda: False)   # its prediction job: queued
    dataset = Dataset.objects.filter(project=project).first()
    assert do_predict_dataset(dataset) is None
    Job.objects.filter(pk=trained["prediction_job"]).update(state=Job.State.SUCCEEDED)
    assert do_predict_dataset(dataset).params["dataset"] == dataset.pk
