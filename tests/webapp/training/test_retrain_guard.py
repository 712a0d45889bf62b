"""The retraining policy's guard: a scheduled training's version becomes active only where it is not lower than
the active version on any label set (both scored on the new version's validation nuclei)."""

import pytest
from django.test import Client
from django.utils import timezone

from tests.workers.training_helpers import FAST, labelled_dataset_row, two_taxonomy_project
from webapp.core.models import AuditLogEntry
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training import runner
from workers.tasks import run_job
from webapp.training.comparison import lower_label_sets
from webapp.training.models import ModelVersion, RetrainPolicy
from webapp.training.operations import do_set_retrain_policy, do_start_training, maybe_retrain

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


def version_in_api(client, project, number: int) -> dict:
    return next(v for v in client.get(f"/api/projects/{project.pk}/versions/").json() if v["number"] == number)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def train(project, owner, guarded: bool = False) -> Job:
    """Queue a training the way the API and the policy do, run it as a worker does; the finished job."""
    job = do_start_training(project, actor=owner, options={**FAST, "stages": ["sparse"]},
                            activate_only_if_not_lower=guarded)
    assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
    return Job.objects.get(pk=job.pk)


def rigged_comparison(monkeypatch, colon: tuple, breast: tuple) -> None:
    """The comparison's outcome, set: per label set the interval of the new model's macro-F1 minus the replaced
    one's. The rest (publishing, activation, predictions, the log) runs for real."""
    real = runner.compare_models

    def compare(model, previous, table, rows, **options):
        rigged = real(model, previous, table, rows, **options)
        for name, interval in (("colon", colon), ("breast", breast)):
            rigged[name]["difference_interval"] = list(interval)
        return rigged
    monkeypatch.setattr(runner, "compare_models", compare)


@pytest.fixture
def trained(owner, media_root, tmp_path):
    """A two-taxonomy project with v1 trained and active."""
    project = two_taxonomy_project(owner, tmp_path)
    train(project, owner)
    return project


def test_a_guarded_training_lower_on_one_label_set_publishes_its_version_beside_the_active_one(
        trained, owner, monkeypatch):
    rigged_comparison(monkeypatch, colon=(-0.09, -0.01), breast=(-0.02, 0.05))
    job = train(trained, owner, guarded=True)
    result = job.result
    v1, v2 = ModelVersion.objects.filter(project=trained).order_by("number")
    assert (v1.is_active, v2.is_active, result["active"]) == (True, False, False)
    assert v2.training_data["compared_with"]["version"] == 1
    assert "did not make it active: it is lower than v1 on colon" in job.log_tail, job.log_tail
    assert "95% interval -0.090 to -0.010" in job.log_tail
    published = AuditLogEntry.objects.filter(action="model.published").order_by("id").last()
    assert published.details["number"] == 2 and published.details["active"] is False
    # Its predictions are made all the same, so that it has them if a curator makes it active.
    assert Job.objects.get(pk=result["prediction_job"]).params["model_version"] == v2.pk


def test_an_unguarded_training_becomes_active_even_where_it_is_lower(trained, owner, monkeypatch):
    rigged_comparison(monkeypatch, colon=(-0.09, -0.01), breast=(-0.3, -0.2))
    assert train(trained, owner).result["active"] is True
    assert ModelVersion.objects.get(project=trained, is_active=True).number == 2


def test_a_guarded_training_lower_only_within_chance_becomes_active(trained, owner, monkeypatch):
    rigged_comparison(monkeypatch, colon=(-0.05, 0.0), breast=(-0.2, 0.01))
    assert train(trained, owner, guarded=True).result["active"] is True
    assert ModelVersion.objects.get(project=trained, is_active=True).number == 2


def test_the_guard_follows_the_real_comparison(trained, owner):
    result = train(trained, owner, guarded=True).result
    v2 = ModelVersion.objects.get(project=trained, number=2)
    compared = v2.training_data["compared_with"]
    assert set(compared["label_sets"]) == {"colon", "breast"}
    assert v2.is_active is (not lower_label_sets(compared)) is result["active"]


def test_the_policy_stores_the_guard_and_its_trainings_carry_it(api_client_for, owner, media_root):
    project = do_create_project("guard", actor=owner)
    labelled_dataset_row(project)
    client = api_client_for(owner)
    response = client.put(f"/api/projects/{project.pk}/retrain-policy/",
                          {"enabled": True, "cron": "0 3 * * 0", "activate_only_if_not_lower": True}, format="json")
    assert response.status_code == 200 and response.json()["activate_only_if_not_lower"] is True, response.content
    assert RetrainPolicy.objects.get(project=project).activate_only_if_not_lower is True
    assert client.get(f"/api/projects/{project.pk}/retrain-policy/").json()["activate_only_if_not_lower"] is True
    job = maybe_retrain(project, reason="schedule")
    assert job.params["activate_only_if_not_lower"] is True

    # Off again: a scheduled training activates its version as before, and its params do not mention the guard.
    job.delete()
    client.put(f"/api/projects/{project.pk}/retrain-policy/", {"enabled": True, "cron": "0 3 * * 0"}, format="json")
    assert RetrainPolicy.objects.get(project=project).activate_only_if_not_lower is False
    assert "activate_only_if_not_lower" not in maybe_retrain(project, reason="schedule").params


def test_a_resumed_guarded_training_stays_guarded(owner, media_root):
    project = do_create_project("guard", actor=owner)
    labelled_dataset_row(project)
    (media_root / "x.pt").write_bytes(b"checkpoint")
    failed = Job.objects.create(kind=Job.Kind.TRAIN, project=project, state=Job.State.FAILED, created_by=owner,
                                params={"options": {"epochs": 2}, "activate_only_if_not_lower": True},
                                result={"resume": {"stage": "sparse", "checkpoint": "x.pt", "done": ["sparse"],
                                                   "remaining": ["correlation", "completion"]}})
    resumed = do_start_training(project, actor=owner, resume_from=failed)
    assert resumed.params["activate_only_if_not_lower"] is True and resumed.params["reason"] == "resume"


def test_the_review_threshold_counts_from_the_newest_version_not_the_active_one(rp, users, api_client_for):
    """Else a version the guard left inactive would start the same training again at every check."""
    from webapp.datasets.models import Nucleus

    project = rp.project
    do_set_retrain_policy(project, actor=users["owner"], min_new_reviews=1)
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()
    review = api_client_for(users["reviewer"]).post(
        f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": "breast", "class_name": "connective", "version": None},
        format="json")
    assert review.status_code == 201, review.content
    assert maybe_retrain(project, reason="threshold") is not None   # a review since v1, the only version
    Job.objects.filter(project=project, kind=Job.Kind.TRAIN).delete()

    ModelVersion.objects.create(project=project, number=2, checkpoint_file="models/v2.pt", is_active=False,
                                data_snapshot_at=timezone.now())
    assert ModelVersion.objects.get(project=project, is_active=True).number == 1
    assert maybe_retrain(project, reason="threshold") is None      # v2 saw that review, though it is not active


@pytest.mark.parametrize("ended", [Job.State.CANCELLED, Job.State.FAILED])
def test_a_policy_training_cancelled_or_failed_is_not_started_again_until_new_reviews_come(rp, users,
                                                                                            api_client_for, ended):
    """A person cancelled the policy's training (or it failed on the data): the next check started it again,
    at every check, unless the policy was switched off."""
    from webapp.datasets.models import Nucleus

    project = rp.project
    do_set_retrain_policy(project, actor=users["owner"], min_new_reviews=1)
    reviewer = api_client_for(users["reviewer"])
    nuclei = list(Nucleus.objects.filter(image__dataset=rp.colon).order_by("id")[:2])

    def decide(nucleus) -> None:
        response = reviewer.post(f"/api/nuclei/{nucleus.pk}/labels/",
                                 {"label_set": "breast", "class_name": "connective", "version": None}, format="json")
        assert response.status_code == 201, response.content

    decide(nuclei[0])
    started = maybe_retrain(project, reason="threshold")
    assert started is not None
    Job.objects.filter(pk=started.pk).update(state=ended, finished_at=timezone.now())
    assert maybe_retrain(project, reason="threshold") is None     # the same reviews: it stays stopped
    decide(nuclei[1])                                             # a new one after it ended
    again = maybe_retrain(project, reason="threshold")
    assert again is not None and again.pk != started.pk
    Job.objects.filter(pk=again.pk).update(state=Job.State.CANCELLED, finished_at=timezone.now())
    assert maybe_retrain(project, reason="schedule") is not None  # the schedule is the schedule


def test_a_replaced_version_whose_checkpoint_is_gone_is_not_compared_and_does_not_fail_the_training(
        trained, owner, media_root):
    v1 = ModelVersion.objects.get(project=trained, number=1)
    job = do_start_training(trained, actor=owner, options={**FAST, "stages": ["sparse"]},
                            activate_only_if_not_lower=True)
    # The fine-tuning reads v1 at the start; the file goes while the training runs (a storage outage, a cleanup).
    real_train_all = runner.train_all

    def train_all_then_lose_v1(*args, **kwargs):
        result = real_train_all(*args, **kwargs)
        (media_root / v1.checkpoint_file).unlink()
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "train_all", train_all_then_lose_v1)
        assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
    v2 = ModelVersion.objects.get(project=trained, number=2)
    assert v2.training_data["compared_with"] == {"version": 1, "skipped": "the checkpoint file of v1 could not be read"}
    # Published, but the guard lets through only what it has checked: v1 stays active.
    assert not v2.is_active and ModelVersion.objects.get(project=trained, number=1).is_active
    log = Job.objects.get(pk=job.pk).log_tail
    assert "did not make it active: it could not be compared with v1 (the checkpoint file of v1" in log, log
    assert str(media_root) not in log


def test_a_guarded_training_that_cannot_be_compared_stays_inactive_and_the_project_page_says_why(
        trained, owner, api_client_for):
    """A scheduled training with other crops starts a new network that v1 cannot score: a collapsed model would
    have gone live unattended. It is published inactive, and the pages say it is a new network, not v1's."""
    job = do_start_training(trained, actor=owner, options={**FAST, "stages": ["sparse"], "crop_context_view": 3},
                            activate_only_if_not_lower=True)
    assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
    job.refresh_from_db()
    v1, v2 = ModelVersion.objects.filter(project=trained).order_by("number")
    assert (v1.is_active, v2.is_active, job.result["active"]) == (True, False, False)
    assert v2.parent == v1 and v2.fine_tuned_from is None
    assert "a new network, not fine-tuned from v1: it cut 64 px crops with a wider view at 1/2 resolution; this " \
           "training cuts 64 px crops with a wider view at 1/3 resolution" in job.log_tail, job.log_tail
    skipped = v2.training_data["compared_with"]["skipped"]
    assert skipped == ("v1 cannot score these nuclei: it cuts 64 px crops with a wider view at 1/2 resolution, "
                       "where this model cuts 64 px crops with a wider view at 1/3 resolution")  # not a Python dict
    assert f"did not make it active: it could not be compared with v1 ({skipped})" in job.log_tail

    page = logged_in(owner).get(f"/projects/{trained.pk}/").content.decode()
    assert "v2, the newest version, is not the active one: it could not" in page
    assert 'data-number="2">Make v2 active</button>' in page
    version_page = logged_in(owner).get(f"/projects/{trained.pk}/versions/2/").content.decode()
    assert "trained from scratch (replacing" in version_page and "fine-tuned from" not in version_page
    assert version_in_api(api_client_for(owner), trained, 2)["fine_tuned_from"] is None


def test_a_training_with_the_same_inputs_fine_tunes_the_active_version_and_says_so(trained, owner, api_client_for):
    job = train(trained, owner)
    v2 = ModelVersion.objects.get(project=trained, number=2)
    assert v2.fine_tuned_from == 1 and v2.training_data["fine_tuned_from"] == 1
    assert "fine-tuning v1's network" in job.log_tail
    assert "fine-tuned from v1" in logged_in(owner).get(f"/projects/{trained.pk}/").content.decode()
    assert version_in_api(api_client_for(owner), trained, 2)["fine_tuned_from"] == 1


def test_a_training_resumed_from_a_point_kept_before_the_upgrade_still_says_what_it_fine_tuned(trained, owner,
                                                                                              monkeypatch):
    """Resume points kept by the previous release do not record fine_tuned_from: the version says its parent, as
    versions of that release do, not "a new network" (an upgrade test found v3 shown trained from scratch)."""
    from webapp.jobs.operations import do_cancel_job
    from webapp.training import operations

    job = do_start_training(trained, actor=owner, options={**FAST, "stages": ["sparse", "correlation"]})
    keep = operations.do_keep_stage_checkpoint

    def keep_then_cancel(job_row, **kwargs):
        kept = keep(job_row, **kwargs)
        do_cancel_job(Job.objects.get(pk=job_row.pk), actor=owner)   # cancelled once stage 1 is kept
        return kept

    monkeypatch.setattr(operations, "do_keep_stage_checkpoint", keep_then_cancel)
    assert run_job(job.pk) == "cancelled"
    monkeypatch.setattr(operations, "do_keep_stage_checkpoint", keep)
    job.refresh_from_db()
    assert job.result["resume"]["fine_tuned_from"] == 1
    del job.result["resume"]["fine_tuned_from"]   # as the previous release kept it
    job.save(update_fields=["result"])

    resumed = do_start_training(trained, actor=owner, resume_from=job)
    assert run_job(resumed.pk) == "succeeded", Job.objects.get(pk=resumed.pk).error
    v2 = ModelVersion.objects.get(project=trained, number=2)
    assert "fine_tuned_from" not in v2.training_data and v2.fine_tuned_from == 1


def test_a_version_made_active_while_a_training_runs_stays_active(trained, owner, media_root):
    """A curator rolled back to v1 while a training from v2 ran: its publish made the new version active over
    the person's choice."""
    from webapp.training.operations import do_activate_version

    train(trained, owner)   # v2, active
    job = do_start_training(trained, actor=owner, options={**FAST, "stages": ["sparse"]})
    real_train_all = runner.train_all

    def rollback_meanwhile(*args, **kwargs):
        result = real_train_all(*args, **kwargs)
        do_activate_version(ModelVersion.objects.get(project=trained, number=1), actor=owner)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "train_all", rollback_meanwhile)
        assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
    v3 = ModelVersion.objects.get(project=trained, number=3)
    assert not v3.is_active and ModelVersion.objects.get(project=trained, number=1).is_active
    assert v3.parent.number == 2
    assert "published v3 but did not make it active: v1 was made active while it trained (it went on from v2)" \
        in Job.objects.get(pk=job.pk).log_tail
