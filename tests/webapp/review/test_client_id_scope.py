"""An idempotency key (client_id) is its user's own: another user's request with the same key, in another
project, neither gets their answer (it showed a foreign project's nucleus, labels and authors) nor blocks or
silently cancels their request."""

import pytest

from tests.webapp.review_project import build_review_project, unlabelled_in
from webapp.datasets.models import CurrentLabel, Label

pytestmark = pytest.mark.django_db


@pytest.fixture
def eves_project(users, media_root, tmp_path):
    """A review project of the outsider's own (they are its admin)."""
    return build_review_project(users["outsider"], tmp_path / "eve", name="eve's")


def decide(client, rp, nucleus: int, key: str):
    return client.post(f"/api/nuclei/{nucleus}/labels/", {"label_set": "breast", "class_index": 1, "version": None,
                                                           "client_id": key}, format="json")


def undo(client, rp, key: str):
    return client.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast", "client_id": key},
                       format="json")


def test_another_users_undo_key_neither_answers_nor_blocks(rp, eves_project, users, api_client_for):
    rita, eve = api_client_for(users["reviewer"]), api_client_for(users["outsider"])
    ritas = unlabelled_in(rp, rp.breast_set)[0]
    eves = unlabelled_in(eves_project, eves_project.breast_set)[0]
    assert decide(rita, rp, ritas, "dec-1").status_code == 201
    assert undo(rita, rp, "undo-1").status_code == 200

    # Eve, in her own project, with Rita's keys: her own decision and her own undo, nothing of Rita's.
    assert decide(eve, eves_project, eves, "dec-1").status_code == 201
    answer = undo(eve, eves_project, "undo-1")
    assert answer.status_code == 200 and answer.json()["nucleus"] == eves
    assert "rita" not in answer.content.decode()
    assert not CurrentLabel.objects.filter(nucleus_id=eves, label_set=eves_project.breast_set).exists()

    # And the other way round: a key Eve used first still undoes Rita's next decision.
    assert decide(eve, eves_project, eves, "dec-2").status_code == 201
    assert undo(eve, eves_project, "undo-X").status_code == 200
    second = unlabelled_in(rp, rp.breast_set)[1]
    assert decide(rita, rp, second, "dec-2").status_code == 201
    answer = undo(rita, rp, "undo-X")
    assert answer.status_code == 200 and answer.json()["nucleus"] == second
    assert not CurrentLabel.objects.filter(nucleus_id=second, label_set=rp.breast_set).exists()


def test_a_users_replay_is_answered_and_their_key_on_another_label_set_is_refused(rp, users, api_client_for):
    rita = api_client_for(users["reviewer"])
    nucleus = unlabelled_in(rp, rp.breast_set)[0]
    decide(rita, rp, nucleus, "dec-1")
    first = undo(rita, rp, "undo-1")
    again = undo(rita, rp, "undo-1")
    assert again.status_code == 200 and again.json()["undone"]["id"] == first.json()["undone"]["id"]
    other = rita.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "colon", "client_id": "undo-1"},
                      format="json")
    assert other.status_code == 409 and "already used for another undo" in other.json()["detail"]
    assert Label.objects.filter(author=users["reviewer"], source="review").count() == 1
