"""A project's activity: its audit rows for its members, by kind, without what only the admin site may show."""

import pytest
from django.db import connection
from django.test import Client

from webapp.core import audit
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Dataset, LabelClass, LabelSet
from webapp.datasets.operations import do_edit_dataset
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_edit_project, do_remove_member, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("Lung", actor=owner)
    do_set_membership(project, member, Role.VIEWER, actor=owner)
    return project


@pytest.fixture
def dataset(project, owner):
    label_set = LabelSet.objects.create(project=project, name="consep")
    LabelClass.objects.create(label_set=label_set, index=0, name="tumour", color="#ff0000")
    dataset = Dataset.objects.create(project=project, name="consep", label_set=label_set, format="hovernet",
                                     storage_dir="nowhere")
    # A slide import's row names the server's slide folder: for the admin site, not for members.
    audit.record("dataset.imported", actor=owner, target=dataset, name="consep", images=3, nuclei=40,
                 slide_root="/srv/slides/secret")
    return dataset


def test_members_read_who_did_what_newest_first(project, dataset, owner, member, api_client_for):
    do_edit_dataset(dataset, actor=owner, name="CoNSeP")
    do_create_project("elsewhere", actor=owner)   # another project's rows stay out
    body = api_client_for(member).get(f"/api/projects/{project.pk}/activity/").json()
    actions = [row["action"] for row in body["results"]]
    assert actions == ["dataset.edited", "dataset.imported", "project.member_set", "project.created"]
    edited, imported = body["results"][0], body["results"][1]
    assert edited["actor"] == "owner" and edited["words"] == "edited a dataset"
    assert edited["target"] == f"datasets.dataset:{dataset.pk}"
    assert edited["details"] == {"name": "CoNSeP", "name_before": "consep"}
    assert imported["details"] == {"name": "consep", "images": 3, "nuclei": 40}   # no slide_root


def test_kinds_and_routine_rows(project, dataset, owner, api_client_for, make_user):
    from webapp.jobs.models import Job

    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner)
    audit.record("job.enqueued", actor=owner, target=job, kind="train")
    audit.record("job.started", target=job, worker="celery@gpu-host-7", attempt=1)
    client = api_client_for(owner)
    url = f"/api/projects/{project.pk}/activity/"

    def actions(query=""):
        return [row["action"] for row in client.get(url + query).json()["results"]]

    assert actions() == ["job.enqueued", "dataset.imported", "project.member_set", "project.created"]
    assert actions("?kind=models") == ["job.enqueued"]
    assert actions("?kind=team") == ["project.member_set", "project.created"]
    assert actions("?kind=all")[:2] == ["job.started", "job.enqueued"]
    started = client.get(url + "?kind=all").json()["results"][0]
    assert started["actor"] is None and started["details"] == {}   # the worker's name is not shown
    refused = client.get(url + "?kind=everything")
    assert refused.status_code == 400
    assert refused.json()["detail"] == ("kind: unknown kind 'everything'; one of: all, team, datasets, models, labels, "
                                        "changes")


def test_outsiders_get_404_and_removed_members_lose_it(project, outsider, api_client_for):
    assert api_client_for(outsider).get(f"/api/projects/{project.pk}/activity/").status_code == 404
    page = Client()
    page.force_login(outsider)
    assert page.get(f"/projects/{project.pk}/activity/").status_code == 404


def test_the_activity_page_shows_edits_as_before_and_after(project, dataset, owner, member):
    do_edit_project(project, actor=owner, name="Lung <script>")
    client = Client()
    client.force_login(member)
    html = client.get(f"/projects/{project.pk}/activity/").content.decode()
    assert "edited the project" in html
    assert "Lung → Lung &lt;script&gt;" in html and "<script>" not in html.split("<main", 1)[-1].split("</main>")[0]
    assert "/srv/slides" not in html
    assert f'href="/projects/{project.pk}/activity/"' in client.get(f"/projects/{project.pk}/").content.decode()


def make_nucleus(project, dataset):
    from webapp.datasets.models import Image, Nucleus

    image = Image.objects.create(dataset=dataset, project=project, name="a.png", width=8, height=8,
                                 file="a.png", mask_file="a.npy", thumbnail_file="t.png", checksum="c")
    return Nucleus.objects.create(image=image, instance_id=1, x0=0, y0=0, x1=2, y1=2, centroid_x=1,
                                  centroid_y=1, area=4, outline=[])


def test_rows_about_nuclei_belong_to_their_project(project, dataset, owner):
    from webapp.datasets.operations import do_record_label

    nucleus = make_nucleus(project, dataset)
    do_record_label(nucleus, dataset.label_set, 0, author=owner, source="review")
    entry = AuditLogEntry.objects.get(action="label.recorded")
    assert entry.project_id == project.pk
    # The page names the nucleus as the review pages do, with a link to it, not by its database id.
    client = Client()
    client.force_login(owner)
    html = client.get(f"/projects/{project.pk}/activity/?kind=labels").content.decode()
    assert f'<a href="/projects/{project.pk}/nuclei/{nucleus.pk}/">nucleus 1 in a.png</a>' in html
    assert f"nucleus {nucleus.pk})" not in html


def test_the_migration_fills_the_project_of_earlier_rows(project, dataset, owner):
    """Rows written before the column: the migration's backfill finds their project from their target."""
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    from webapp.jobs.models import Job

    migration = importlib.import_module("webapp.core.migrations.0002_audit_project")
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner)
    nucleus = make_nucleus(project, dataset)
    for target in (f"projects.project:{project.pk}", f"datasets.dataset:{dataset.pk}", f"jobs.job:{job.pk}",
                   f"datasets.nucleus:{nucleus.pk}", "datasets.dataset:999999", "auth.user:1"):
        AuditLogEntry.objects.create(action="old.row", target=target)
    AuditLogEntry.objects.update(project_id=None)
    migration.fill_project_ids(apps, SimpleNamespace(connection=connection))
    filled = dict(AuditLogEntry.objects.filter(action="old.row").values_list("target", "project_id"))
    assert filled == {f"projects.project:{project.pk}": project.pk, f"datasets.dataset:{dataset.pk}": project.pk,
                      f"jobs.job:{job.pk}": project.pk, f"datasets.nucleus:{nucleus.pk}": project.pk,
                      "datasets.dataset:999999": None, "auth.user:1": None}


def test_job_rows_go_with_what_the_job_was_about_and_read_as_words(project, owner, api_client_for):
    from webapp.jobs import operations as job_operations
    from webapp.jobs.models import Job

    imported = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner, state=Job.State.RUNNING)
    job_operations.do_fail_job(imported.pk, "nucls.zip: no images found")
    trained = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner, state=Job.State.RUNNING)
    job_operations.do_finish_job(trained.pk, {"version": 1})
    client = api_client_for(owner)
    url = f"/api/projects/{project.pk}/activity/"
    datasets = client.get(url + "?kind=datasets").json()["results"]
    assert [(row["action"], row["words"]) for row in datasets] == [("job.failed", "An import failed")]
    assert datasets[0]["details"]["error"] == "nucls.zip: no images found"
    models = client.get(url + "?kind=models").json()["results"]
    assert [(row["action"], row["words"], row["details"]) for row in models] == [
        ("job.succeeded", "A training succeeded", {"kind": "train"})]   # no empty error
    # A row no person wrote is a sentence of its own: it begins with a capital ("automatic | a worker took...").
    queued = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner)
    job_operations.do_start_job(queued.pk, "worker@host")
    everything = client.get(url + "?kind=all").json()["results"]
    assert [row["words"] for row in everything if row["action"] == "job.started"] == ["A worker took an import"]



def test_a_policys_training_and_an_added_member_read_as_what_happened(project, owner, member, make_user,
                                                                     api_client_for, monkeypatch):
    """An unattended training said "— started a training", and adding a member "set a member's role"."""
    from webapp.jobs import operations as job_operations
    from webapp.training.operations import do_set_retrain_policy, maybe_retrain
    from tests.workers.training_helpers import labelled_dataset_row

    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    labelled_dataset_row(project)
    do_set_retrain_policy(project, actor=owner, cron="0 3 * * 0")
    job = maybe_retrain(project, reason="schedule")
    do_set_membership(project, make_user("nina"), Role.REVIEWER, actor=owner)
    rows = api_client_for(owner).get(f"/api/projects/{project.pk}/activity/").json()["results"]
    words = {(row["action"], row["details"].get("user")): row for row in rows}
    started = next(row for row in rows if row["action"] == "job.enqueued")
    assert started["words"] == "The retraining policy started a training (its schedule)" and started["actor"] is None
    assert started["details"] == {"kind": "train", "reason": "schedule"} and job.params["reason"] == "schedule"
    assert words[("project.member_set", "nina")]["words"] == "added a member"
    assert words[("project.member_set", "member")]["words"] == "added a member"

def test_the_page_shows_changes_but_single_labels_first_and_says_automatic_rows(project, dataset, owner, member):
    """One row per label buried the uploads and trainings under pages of decisions; "—" read as a missing name."""
    from webapp.datasets.operations import do_record_label

    from webapp.datasets.models import Nucleus

    nucleus = make_nucleus(project, dataset)
    for instance_id in (2, 3):
        Nucleus.objects.create(image=nucleus.image, instance_id=instance_id, x0=0, y0=0, x1=2, y1=2, centroid_x=1,
                               centroid_y=1, area=4, outline=[])
    for each in Nucleus.objects.filter(image=nucleus.image):
        do_record_label(each, dataset.label_set, 0, author=owner, source="review")
    audit.record("job.succeeded", target=project, kind="train")
    client = Client()
    client.force_login(member)
    html = client.get(f"/projects/{project.pk}/activity/").content.decode()
    assert 'data-action="label.recorded"' not in html and 'data-action="dataset.imported"' in html
    assert '<option value="changes" selected>' in html
    assert '<span class="muted">automatic</span>' in html and "A training succeeded" in html
    # What "automatic" means is said under the table, which it describes (it was a tooltip no keyboard reached).
    assert 'aria-describedby="activity-automatic"' in html
    assert 'id="activity-automatic">Who “automatic”: no person, but a worker, the retraining policy or a training.' in html
    labels = client.get(f"/projects/{project.pk}/activity/?kind=labels").content.decode()
    assert labels.count('data-action="label.recorded"') == 3
    every = client.get(f"/projects/{project.pk}/activity/?kind=").content.decode()
    assert every.count('data-action="label.recorded"') == 3 and 'data-action="dataset.imported"' in every


def test_the_page_writes_values_as_words_and_classes_by_name(project, dataset, owner, member):
    from webapp.datasets.operations import do_record_label

    do_record_label(make_nucleus(project, dataset), dataset.label_set, 0, author=owner, source="review")
    audit.record("model.published", actor=owner, target=project, number=1, parent=None, active=True)
    audit.record("training.resume_points_discarded", actor=owner, target=project, jobs=[4, 5])
    client = Client()
    client.force_login(member)
    html = client.get(f"/projects/{project.pk}/activity/?kind=").content.decode()
    assert "<span class=\"muted\">class:</span> tumour" in html and "class index" not in html
    assert "<span class=\"muted\">parent:</span> none" in html and "<span class=\"muted\">active:</span> yes" in html
    assert "<span class=\"muted\">jobs:</span> 4, 5" in html and "None" not in html


def test_setting_the_role_a_member_has_writes_nothing(project, owner, member):
    rows = AuditLogEntry.objects.count()
    do_set_membership(project, member, Role.VIEWER, actor=owner)
    assert AuditLogEntry.objects.count() == rows


def test_a_retraining_policy_change_of_interval_stages_or_epochs_reads_as_that_change(project, owner, member,
                                                                                    api_client_for):
    """The row kept only enabled, threshold, cron and the guard: a curator who changed the scheduled runs' epochs
    or the check's interval left a row that read exactly as the one before it."""
    client = api_client_for(owner)
    url = f"/api/projects/{project.pk}/retrain-policy/"
    assert client.put(url, {"enabled": True, "min_new_reviews": 5}, format="json").status_code == 200
    assert client.patch(url, {"check_every_minutes": 30, "options": {"stages": ["sparse", "completion"],
                                                                    "epochs": 2}},
                        format="json").status_code == 200
    rows = api_client_for(member).get(f"/api/projects/{project.pk}/activity/?kind=team").json()["results"]
    latest, first = [row for row in rows if row["action"] == "project.retrain_policy_set"]
    assert latest["details"]["check_every_minutes"] == 30 and first["details"]["check_every_minutes"] == 15
    assert latest["details"]["options"] == {"stages": ["sparse", "completion"], "epochs": 2}
    assert first["details"]["options"] == {}
    page = Client()
    page.force_login(member)
    html = page.get(f"/projects/{project.pk}/activity/?kind=team").content.decode()
    assert '<span class="muted">check every minutes:</span> 30' in html
    assert '<span class="muted">options:</span> epochs 2; stages sparse, completion' in html
    assert '<span class="muted">check every minutes:</span> 15' in html
    assert '<span class="muted">options:</span> defaults' in html


def test_a_deleted_accounts_changes_still_name_them(project, dataset, owner, member, make_user, api_client_for):
    """The audit row's actor key is emptied when the account is deleted: everything a colleague who left had done
    read "automatic", as if no person had done it."""
    leaver = make_user("leaver")
    do_set_membership(project, leaver, Role.CURATOR, actor=owner)
    do_edit_dataset(dataset, actor=leaver, name="renamed by leaver")
    do_remove_member(project, leaver, actor=owner)
    leaver.delete()

    rows = api_client_for(member).get(f"/api/projects/{project.pk}/activity/").json()["results"]
    edit = next(row for row in rows if row["action"] == "dataset.edited")
    assert (edit["actor"], edit["actor_deleted"]) == ("leaver", True)
    removal = next(row for row in rows if row["action"] == "project.member_removed")
    assert (removal["actor"], removal["actor_deleted"]) == ("owner", False)

    client = Client()
    client.force_login(member)
    page = client.get(f"/projects/{project.pk}/activity/").content.decode()
    edit_row = page.split('data-action="dataset.edited"', 1)[1].split("</tr>", 1)[0]
    assert "leaver <span class=\"muted small\">(deleted account)</span>" in edit_row and "automatic" not in edit_row


def test_the_migration_names_the_actors_of_earlier_rows(project, owner):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    migration = importlib.import_module("webapp.core.migrations.0003_auditlogentry_actor_name")
    AuditLogEntry.objects.update(actor_name="")
    AuditLogEntry.objects.create(action="old.row", target="x")   # no person
    migration.fill_actor_names(apps, SimpleNamespace(connection=connection))
    names = set(AuditLogEntry.objects.values_list("action", "actor_name"))
    assert ("project.created", "owner") in names and ("old.row", "") in names
