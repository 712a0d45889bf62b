"""The train API's default schedule (scaled to the project), the time estimate, and resume refusals."""

import re
from pathlib import Path

import pytest

from mlcore.config import TrainConfig
from mlcore.estimate import default_schedule, estimate_seconds
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project, do_set_membership
from webapp.training.models import ModelVersion
from webapp.training.runner import training_config

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_project(owner, tmp_path):
    # Two generated datasets of 2 tiles each: a few hundred nuclei, like the 600-nucleus project.
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=150)
    project.nuclei = Nucleus.objects.filter(image__project=project).count()
    assert 300 < project.nuclei < 1000
    return project


def test_a_training_without_epochs_gets_the_schedule_scaled_to_the_project(small_project, api_client_for, owner):
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{small_project.pk}/train/", {"stages": ["sparse"]}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    # One draw per nucleus an epoch (not the CLI's 32,768) and 10 epochs: a few thousand draws in all.
    n = small_project.nuclei
    assert job.params["options"] == {"stages": ["sparse"], "samples_per_epoch": n, "epochs": 10}
    assert default_schedule(n) == {"samples_per_epoch": n, "epochs": 10}
    client.post(f"/api/jobs/{job.pk}/cancel/")


def test_options_given_are_kept(small_project, api_client_for, owner):
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{small_project.pk}/train/",
                           {"epochs": 3, "samples_per_epoch": 2048, "stain_jitter": 0.05}, format="json")
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["options"] == {"epochs": 3, "samples_per_epoch": 2048, "stain_jitter": 0.05}
    client.post(f"/api/jobs/{job.pk}/cancel/")

    too_strong = client.post(f"/api/projects/{small_project.pk}/train/", {"stain_jitter": 0.8}, format="json")
    assert too_strong.status_code == 400
    assert too_strong.json()["detail"] == "stain_jitter: Ensure this value is less than or equal to 0.5."

    response = client.post(f"/api/projects/{small_project.pk}/train/", {"crop_context_view": 2}, format="json")
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["options"]["crop_context_view"] == 2
    client.post(f"/api/jobs/{job.pk}/cancel/")
    no_such_view = client.post(f"/api/projects/{small_project.pk}/train/", {"crop_context_view": 1}, format="json")
    assert no_such_view.status_code == 400
    assert no_such_view.json()["detail"] == 'crop_context_view: "1" is not a valid choice; one of: 0, 2, 3, 4.'


@pytest.mark.slow  # times real training steps
def test_estimate_from_a_probe_before_any_training_then_from_recorded_speed(small_project, api_client_for, owner):
    from django.core.cache import cache

    # Only this key (the default stain jitter is on): the cache's Redis is the broker's too.
    cache.delete("training-speed-probe:auto:64:3:True")
    client = api_client_for(owner)
    url = f"/api/projects/{small_project.pk}/train/estimate/"
    first = client.get(url)
    assert first.status_code == 200, first.content
    estimate = first.json()
    n = small_project.nuclei
    assert estimate["nuclei"] == n and estimate["labelled_nuclei"] == n
    assert estimate["epochs"] == 10 and estimate["samples_per_epoch"] == n
    assert estimate["defaults"]["epochs"] == 10 and "one draw per nucleus" in estimate["defaults"]["rule"]
    assert estimate["stages"] == ["sparse", "correlation", "completion"]
    assert estimate["speed"]["source"] == "probe" and "timed on this web server" in estimate["speed"]["text"]
    assert estimate["speed"]["train_samples_per_s"] > 0
    assert estimate["seconds"] == pytest.approx(sum(estimate["per_stage"].values()), abs=0.5)

    # A finished training's recorded throughput takes over: 100 crops/s training, 500 inference. It is
    # looked up by the backbone chosen ("auto", the default) and the crops: the same choice on the same workers.
    history = [{"stage": stage, "epoch": 1, "loss": 1.0, "samples": 1000, "seconds": 10.0,
                "val_rows": 500, "val_seconds": 1.0} for stage in ("sparse", "correlation", "completion")]
    # A version from before the context view field trained on plain RGB crops, faster than today's default.
    ModelVersion.objects.create(project=small_project, number=1, checkpoint_file="projects/x/v1.pt",
                                config={"backbone": "auto"}, history=history, data_snapshot_at="2026-01-01T00:00Z")
    assert client.get(url).json()["speed"]["source"] == "probe"
    assert client.get(url, {"crop_context_view": 0}).json()["speed"]["source"] == "recorded"
    ModelVersion.objects.create(project=small_project, number=2, checkpoint_file="projects/x/v2.pt",
                                config={"backbone": "auto", "crop_context_view": 2}, history=history,
                                data_snapshot_at="2026-01-02T00:00Z")
    recorded = client.get(url, {"epochs": 4, "stages": "sparse,completion"}).json()
    assert recorded["speed"]["source"] == "recorded"
    assert recorded["speed"]["train_samples_per_s"] == 100 and recorded["speed"]["infer_samples_per_s"] == 500
    assert "last 1 finished training" in recorded["speed"]["text"]
    expected = estimate_seconds(nuclei=n, labelled=n, stages=["sparse", "completion"],
                                epochs={"sparse": 4, "completion": 4}, samples_per_epoch=n,
                                train_samples_per_s=100, infer_samples_per_s=500)
    assert recorded["per_stage"] == pytest.approx(expected["per_stage"], abs=0.1)
    assert recorded["seconds"] == pytest.approx(expected["total"], abs=0.1)
    # At 100 crops/s the default takes minutes, not the hours the CLI's epochs would.
    assert 30 < client.get(url).json()["seconds"] < 5 * 60


@pytest.mark.parametrize("active_stain_jitter, shown", [(None, 0.025), (0.0, 0.0), (0.05, 0.05)])
def test_the_form_shows_the_stain_jitter_a_training_would_get(small_project, owner, client, active_stain_jitter,
                                                               shown):
    # A training without the option inherits the active version's setting; 0 (off) included, not the default.
    if active_stain_jitter is not None:
        ModelVersion.objects.create(project=small_project, number=1, checkpoint_file="projects/x/v1.pt",
                                    is_active=True, data_snapshot_at="2026-01-01T00:00Z",
                                    config=TrainConfig(stain_jitter=active_stain_jitter).to_dict())
    client.force_login(owner)
    page = client.get(f"/projects/{small_project.pk}/")
    assert page.status_code == 200
    field = re.search(r'<input type="number" name="stain_jitter"[^>]*value="([^"]*)"', page.content.decode())
    assert float(field.group(1)) == shown == training_config({}, ModelVersion.objects.filter(
        project=small_project, is_active=True).first())[0].stain_jitter


@pytest.mark.parametrize("active_view, shown", [(None, "2"), (0, "0"), (2, "2"), (3, "3")])
def test_the_form_shows_the_context_view_a_training_would_get(small_project, owner, client, active_view, shown):
    if active_view is not None:
        ModelVersion.objects.create(project=small_project, number=1, checkpoint_file="projects/x/v1.pt",
                                    is_active=True, data_snapshot_at="2026-01-01T00:00Z",
                                    config=TrainConfig(crop_context_view=active_view).to_dict())
    client.force_login(owner)
    page = client.get(f"/projects/{small_project.pk}/").content.decode()
    select = re.search(r'<select name="crop_context_view"[^>]*>(.*?)</select>', page).group(1)
    assert re.findall(r'<option value="(\d)" selected>', select) == [shown]


def test_estimate_refuses_bad_options_and_viewers(small_project, api_client_for, owner, member):
    url = f"/api/projects/{small_project.pk}/train/estimate/"
    bad = api_client_for(owner).get(url, {"epochs": 0})
    assert bad.status_code == 400 and "epochs" in bad.json()["detail"]
    do_set_membership(small_project, member, "viewer", actor=owner)
    assert api_client_for(member).get(url).status_code == 403


def media_root_of(project):
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / f"projects/{project.pk}"


def test_resume_is_refused_with_a_reason(owner, api_client_for, tmp_path, media_root):
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=5)
    other = do_create_project("other", actor=owner)
    client = api_client_for(owner)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, state=Job.State.CANCELLED, params={"options": {}})
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": job.pk}, format="json")
    assert response.status_code == 409 and "finished no epoch" in response.json()["detail"]
    job.result = {"resume": {"stage": "sparse", "checkpoint": f"projects/{project.pk}/models/gone.pt",
                             "remaining": ["correlation", "completion"]}}
    job.save()
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": job.pk}, format="json")
    assert response.status_code == 409 and "checkpoint of job" in response.json()["detail"]
    # A label set that joined since its stage was trained: refused now, with the 202's place taken by a 409 (the
    # job failed later with an internal error).
    (media_root_of(project) / "models").mkdir(parents=True, exist_ok=True)
    (media_root_of(project) / "models" / "kept.pt").write_bytes(b"checkpoint")
    job.result = {"resume": {"stage": "sparse", "checkpoint": f"projects/{project.pk}/models/kept.pt",
                             "remaining": ["correlation", "completion"], "label_sets": ["colon"]}}
    job.save()
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": job.pk}, format="json")
    assert response.status_code == 409
    assert response.json()["detail"] == (f"the project's label sets changed since job {job.pk} trained its stage "
                                         "sparse (colon; now colon, breast): start a new training")
    done = Job.objects.create(kind=Job.Kind.TRAIN, project=project, state=Job.State.SUCCEEDED)
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": done.pk}, format="json")
    assert response.status_code == 409 and "only a cancelled or failed training" in response.json()["detail"]
    response = client.post(f"/api/projects/{other.pk}/train/", {"resume_from": job.pk}, format="json")
    assert response.status_code == 404
    # Options besides the device would be quietly ignored by the resumed training: refused, naming them.
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": job.pk, "epochs": 5,
                                                                  "device": "cpu"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == ("resume_from: a resumed training keeps the options it started with; "
                                         "leave out epochs (only device may be given with resume_from)")
    assert not Job.objects.filter(project=project, state=Job.State.QUEUED).exists()
    assert Dataset.objects.filter(project=project).count() == 2
