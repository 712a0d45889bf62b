"""Changes that two clients make at once (real threads on PostgreSQL, each its own connection): renames of two
datasets to one name (or "Same" and "same"), two projects of one name by one user, and an admin's member change
after another admin demoted them. Each passed its check before the other committed; under the row locks the
second now sees the first."""

import time

import pytest
from django.db import connection

from tests.generated_datasets import generated_dataset
from tests.threads import at_once
from webapp.core.domain_errors import Conflict, Invalid
from webapp.datasets import operations as dataset_operations
from webapp.datasets.importing import ImportRejected, do_import_dataset
from webapp.datasets.models import Dataset
from webapp.projects import operations as project_operations
from webapp.projects.models import Membership, Project, Role
from webapp.projects.operations import do_change_member_role, do_create_project, do_set_membership

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql",
                                 reason="SQLite runs one write transaction at a time: no such race there")]


def slowed(monkeypatch, module, name):
    """The check passes, then waits: the other request's check runs meanwhile unless a lock orders them."""
    real = getattr(module, name)

    def check(*args, **kwargs):
        answer = real(*args, **kwargs)
        time.sleep(0.3)
        return answer

    monkeypatch.setattr(module, name, check)


def test_two_datasets_renamed_to_one_name_at_once(owner, media_root, tmp_path, monkeypatch, settings):
    settings.IMPORT_PROCESSES = 1
    project = do_create_project("renames", actor=owner)
    datasets = [do_import_dataset(project, name=name, format="seed", actor=owner,
                                  path=generated_dataset(tmp_path / name, "seed", n_images=1, nuclei_per_image=3,
                                                         seed=i, size=(48, 48)))
                for i, name in enumerate(("a", "b"))]
    slowed(monkeypatch, dataset_operations, "refuse_taken_name")
    results = at_once(lambda: dataset_operations.do_edit_dataset(datasets[0], actor=owner, name="Same"),
                      lambda: dataset_operations.do_edit_dataset(datasets[1], actor=owner, name="same"))
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], ImportRejected), results
    names = list(Dataset.objects.filter(project=project).values_list("name", flat=True))
    assert len({name.lower() for name in names}) == 2 and "same" in {name.lower() for name in names}, names


def test_one_user_creating_two_projects_of_one_name_at_once(owner, monkeypatch):
    slowed(monkeypatch, project_operations, "clean_project_name")
    results = at_once(lambda: do_create_project("Lab", actor=owner), lambda: do_create_project("lab", actor=owner))
    assert sum(isinstance(r, Invalid) for r in results) == 1, results
    assert Project.objects.filter(memberships__user=owner).count() == 1


def test_an_admin_demoted_meanwhile_changes_no_role(owner, make_user, monkeypatch):
    project = do_create_project("team", actor=owner)
    second, third = make_user("second"), make_user("third")
    do_set_membership(project, second, Role.ADMIN, actor=owner)
    do_set_membership(project, third, Role.ADMIN, actor=owner)
    # The owner demotes second while second demotes third: the view checked second's role before the lock.
    results = at_once(lambda: do_change_member_role(project, second, Role.REVIEWER, actor=owner),
                      lambda: (time.sleep(0.2), do_change_member_role(project, third, Role.REVIEWER, actor=second))[1])
    assert isinstance(results[1], Conflict) and "changed meanwhile" in str(results[1].detail), results
    assert dict(Membership.objects.filter(project=project).values_list("user__username", "role")) == {
        "owner": Role.ADMIN, "second": Role.REVIEWER, "third": Role.ADMIN}
