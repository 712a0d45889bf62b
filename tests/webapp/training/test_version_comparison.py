"""A new version is scored against the active version it replaces on the same validation nuclei, and the
pages say where it is lower (webapp.training.runner.compared_with_parent)."""

import pytest
from django.utils import timezone

from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db


def train(project, owner, logs: list, **options) -> dict:
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], **options}})
    return run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)


def test_a_retraining_scores_the_version_it_replaces_on_its_own_validation_nuclei(owner, media_root, tmp_path):
    project = two_taxonomy_project(owner, tmp_path)
    first_logs, logs = [], []
    first = train(project, owner, first_logs)
    assert first["compared_with"] is None and not any("against v" in line for line in first_logs)
    v1 = ModelVersion.objects.get(pk=first["model_version_id"])

    second = train(project, owner, logs, epochs=2, samples_per_epoch=512)   # enough to move its figures
    v2 = ModelVersion.objects.get(pk=second["model_version_id"])
    assert any(v2.metrics[name]["macro_f1"] != v1.metrics[name]["macro_f1"] for name in v1.metrics)
    compared = v2.training_data["compared_with"]
    assert compared == second["compared_with"] and compared["version"] == 1
    assert set(compared["label_sets"]) == {"colon", "breast"}
    for name, row in compared["label_sets"].items():
        # The data did not change, so v2's validation nuclei are v1's: v1 scores on them what it scored itself.
        assert row["n"] == v1.metrics[name]["n"] == v2.metrics[name]["n"]
        assert row["previous_macro_f1"] == pytest.approx(v1.metrics[name]["macro_f1"], abs=1e-9)
        assert row["macro_f1"] == pytest.approx(v2.metrics[name]["macro_f1"], abs=1e-9)
        low, high = row["difference_interval"]
        assert low <= row["macro_f1"] - row["previous_macro_f1"] <= high
    line = next(line for line in logs if "against v1" in line)
    assert f"colon {compared['label_sets']['colon']['macro_f1']:.3f} (v1 " in line


def comparison(version: ModelVersion, **label_sets) -> None:
    """Give ``version`` a stored comparison: label set name -> (its macro-F1, the replaced version's, interval)."""
    version.training_data = {**version.training_data, "compared_with": {"version": version.number - 1, "label_sets": {
        name: {"n": 40, "macro_f1": mine, "previous_macro_f1": theirs, "accuracy": mine, "previous_accuracy": theirs,
               "difference_interval": list(interval)}
        for name, (mine, theirs, interval) in label_sets.items()}}}
    version.save(update_fields=["training_data"])


@pytest.fixture
def project(owner):
    return do_create_project("compare", actor=owner)


def versions(project, count: int) -> list[ModelVersion]:
    made = []
    for number in range(1, count + 1):
        ModelVersion.objects.filter(project=project).update(is_active=False)
        made.append(ModelVersion.objects.create(project=project, number=number, parent=made[-1] if made else None,
                                                checkpoint_file=f"projects/{project.pk}/models/v{number}.pt",
                                                is_active=True, training_data={"nuclei": 100},
                                                data_snapshot_at=timezone.now()))
    return made


def test_the_version_page_shows_the_comparison_and_where_it_is_lower(client, owner, project):
    v1, v2 = versions(project, 2)
    comparison(v2, colon=(0.612, 0.655, (-0.081, -0.004)), breast=(0.802, 0.790, (-0.03, 0.05)),
               nucls=(0.5, 0.52, (-0.09, 0.04)))
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/versions/2/").content.decode()
    assert "Against v1, the version it replaced" in page
    assert '<tr class="lower"><td>colon</td><td class="num">40</td><td class="num">0.612</td><td class="num">0.655</td>' \
           '<td class="num">-0.043</td><td class="num">-0.081 to -0.004</td></tr>' in page
    assert "<tr><td>breast</td>" in page and "+0.012" in page
    assert "<tr><td>nucls</td>" in page   # lower, but within chance: not marked
    assert "v2 is lower than v1 beyond chance on colon." in page
    assert 'id="comparison"' not in client.get(f"/projects/{project.pk}/versions/1/").content.decode()


def test_a_comparison_that_could_not_be_made_says_why(client, owner, project):
    _, v2 = versions(project, 2)
    v2.training_data = {**v2.training_data, "compared_with": {
        "version": 1, "skipped": "v1 cannot score these nuclei: it cuts its crops differently"}}
    v2.save(update_fields=["training_data"])
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/versions/2/").content.decode()
    assert "Not compared: v1 cannot score these nuclei: it cuts its crops differently." in page
    assert 'class="table small comparison"' not in page


def test_the_project_page_warns_when_the_active_version_is_lower_and_offers_the_rollback_to_curators(
        client, owner, member, outsider, project):
    v1, v2 = versions(project, 2)
    comparison(v2, colon=(0.612, 0.655, (-0.081, -0.004)), breast=(0.802, 0.790, (-0.03, 0.05)),
               nucls=(0.5, 0.52, (-0.09, 0.04)))
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="newest-comparison"' in page
    assert "The active version v2" in page and "scored lower than v1, the version it replaced, beyond chance on" in page
    assert ("colon (macro-F1 0.612 against 0.655 on the same 40 validation nuclei; 95% interval of the difference "
            "-0.081 to -0.004)") in page
    assert "breast (macro-F1" not in page and "nucls (macro-F1" not in page
    assert 'class="secondary activate-version" data-number="1">Make v1 active</button>' in page

    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    client.force_login(member)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="newest-comparison"' in page and "Make v1 active" not in page

    client.force_login(outsider)
    assert client.get(f"/projects/{project.pk}/").status_code == 404

    # Kept inactive (the policy's guard, or a rollback): the warning says so and offers to make it active.
    v1.refresh_from_db()
    ModelVersion.objects.filter(pk=v2.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=v1.pk).update(is_active=True)
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "v2, the newest version, is not the active one. It" in page
    assert 'class="secondary activate-version" data-number="2">Make v2 active</button>' in page

    comparison(v2, colon=(0.7, 0.655, (0.0, 0.09)), nucls=(0.5, 0.52, (-0.09, 0.04)))
    assert 'id="newest-comparison"' not in client.get(f"/projects/{project.pk}/").content.decode()
