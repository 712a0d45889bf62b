"""Decisions: recorded through do_record_label with a version check (409 on a concurrent change),
idempotent replays, undo (append-only), history, the gallery's bulk accept, and reviewed labels
feeding the next training run."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.webapp.review_project import unlabelled_in
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import CurrentLabel, Label, LabelSource, Nucleus
from webapp.review.models import ReviewLease, ReviewUndo

pytestmark = pytest.mark.django_db


def claim(client, rp, label_set="breast", **params):
    query = "&".join(f"{k}={v}" for k, v in {"label_set": label_set, **params}.items())
    response = client.get(f"/api/projects/{rp.project.pk}/review/next/?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def decide(client, nucleus_id, class_name, version, label_set="breast", **extra):
    return client.post(f"/api/nuclei/{nucleus_id}/labels/",
                       {"label_set": label_set, "class_name": class_name, "version": version, **extra}, format="json")


def test_a_decision_is_a_review_label_with_the_model_version_and_releases_the_lease(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    item = claim(client, rp)
    nucleus_id = item["nucleus"]["id"]
    predicted = item["prediction"]["class_name"]
    other = next(c["name"] for c in item["label_set"]["classes"] if c["name"] != predicted)
    response = decide(client, nucleus_id, other, None, client_id="c-1")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["class_name"] == other and body["source"] == "review" and body["author"] == "rita"
    assert body["predicted_class"] == item["prediction"]["class_index"] and body["agrees_with_prediction"] is False
    label = Label.objects.get(pk=body["version"])
    assert label.source == LabelSource.REVIEW and label.author == users["reviewer"]
    assert label.model_version_id == rp.version.pk and label.client_id == "c-1" and label.previous is None
    current = CurrentLabel.objects.get(nucleus_id=nucleus_id, label_set=rp.breast_set)
    assert current.label_id == label.pk and current.source == "review"
    # The lease ended; its row stays, marked decided by this reviewer (the claim never takes it again).
    lease = ReviewLease.objects.get(nucleus_id=nucleus_id, label_set=rp.breast_set)
    assert lease.decided and lease.user == users["reviewer"] and lease.expires_at <= timezone.now()
    assert AuditLogEntry.objects.filter(action="label.recorded", target=f"datasets.nucleus:{nucleus_id}").count() == 1
    # Accepting the prediction is the same POST with the predicted class (the next item here).
    nxt = claim(client, rp)
    accepted = decide(client, nxt["nucleus"]["id"], nxt["prediction"]["class_name"], nxt["version"]).json()
    assert accepted["agrees_with_prediction"] is True
    progress = client.get(f"/api/projects/{rp.project.pk}/review/progress/?label_set=breast").json()
    assert progress["reviewed_today"] == 2 and progress["compared_with_model"] == 2
    assert progress["agreement_with_model"] == 0.5


def test_concurrent_change_answers_409_with_the_current_label(rp, users, api_client_for):
    rita, rob = api_client_for(users["reviewer"]), api_client_for(users["reviewer2"])
    # A nucleus with ground truth: both see version = the ground-truth row.
    nucleus = Nucleus.objects.filter(image__dataset=rp.breast).order_by("id").first()
    seen = CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set).label_id
    first = decide(rob, nucleus.pk, "dead", seen)
    assert first.status_code == 201
    late = decide(rita, nucleus.pk, "connective", seen)
    assert late.status_code == 409
    body = late.json()
    assert "rob" in body["detail"] and "dead" in body["detail"]
    assert body["current"]["class_name"] == "dead" and body["current"]["author"] == "rob"
    assert body["current"]["version"] == first.json()["version"] == body["version"]
    assert Label.objects.filter(nucleus=nucleus, author=users["reviewer"]).count() == 0
    # rob's decision stands: deciding again, even with the version now seen, is refused...
    again = decide(rita, nucleus.pk, "connective", body["version"])
    assert again.status_code == 409 and again.json()["already_decided"] is True
    assert "rob already decided" in again.json()["detail"]
    assert Label.objects.filter(nucleus=nucleus, author=users["reviewer"]).count() == 0
    # ...unless rita says she gives a second opinion.
    assert decide(rita, nucleus.pk, "connective", body["version"], second_opinion=True).status_code == 201
    # null means "it had no label": stale too when it has one now.
    assert decide(rob, nucleus.pk, "dead", None).status_code == 409


def test_replaying_the_same_request_creates_one_row(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    item = claim(client, rp)
    nucleus_id = item["nucleus"]["id"]
    first = decide(client, nucleus_id, "neoplastic", None, client_id="same-key")
    second = decide(client, nucleus_id, "neoplastic", None, client_id="same-key")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["version"] == second.json()["version"] and second.json()["replayed"] is True
    assert Label.objects.filter(client_id="same-key").count() == 1
    assert Label.objects.filter(nucleus_id=nucleus_id, label_set=rp.breast_set).count() == 1
    # The key belongs to that decision: another nucleus or reviewer cannot reuse it.
    other = Nucleus.objects.exclude(pk=nucleus_id).first()
    assert decide(client, other.pk, "dead", None, client_id="same-key").status_code == 409


def test_validation_and_roles(rp, users, api_client_for):
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).first()
    body = {"label_set": "breast", "class_name": "dead", "version": None}
    assert api_client_for(users["viewer"]).post(f"/api/nuclei/{nucleus.pk}/labels/", body, format="json").status_code == 403
    response = api_client_for(users["outsider"]).post(f"/api/nuclei/{nucleus.pk}/labels/", body, format="json")
    assert response.status_code == 404
    client = api_client_for(users["reviewer"])
    assert client.post("/api/nuclei/99999999/labels/", body, format="json").status_code == 404
    bad = client.post(f"/api/nuclei/{nucleus.pk}/labels/", {**body, "class_name": "tumour"}, format="json")
    assert bad.status_code == 400 and "neoplastic" in bad.json()["detail"]
    assert client.post(f"/api/nuclei/{nucleus.pk}/labels/", {**body, "label_set": "x"}, format="json").status_code == 400
    missing = client.post(f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": "breast", "class_name": "dead"}, format="json")
    assert missing.status_code == 400 and "version" in missing.json()["detail"]
    by_index = client.post(f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": "breast", "class_index": 1, "version": None},
                           format="json")
    assert by_index.status_code == 201 and by_index.json()["class_name"] == "connective"
    assert Label.objects.filter(source="review").count() == 1
    # Viewers read the history; outsiders do not.
    assert api_client_for(users["viewer"]).get(f"/api/nuclei/{nucleus.pk}/labels/").status_code == 200
    assert api_client_for(users["outsider"]).get(f"/api/nuclei/{nucleus.pk}/labels/").status_code == 404


def test_undo_appends_a_row_restoring_the_previous_class(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.breast).order_by("id").first()
    ground_truth = CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set).label
    new_class = next(c for c in ("neoplastic", "connective", "dead")
                     if c != ["neoplastic", "connective", "dead"][ground_truth.class_index])
    decision = decide(client, nucleus.pk, new_class, ground_truth.pk).json()
    response = client.post(f"/api/nuclei/{nucleus.pk}/labels/undo/", {"label_set": "breast", "client_id": "u-1"},
                           format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["undone"]["id"] == decision["version"]
    restored = Label.objects.get(pk=body["restored"]["id"])
    assert restored.class_index == ground_truth.class_index and restored.source == LabelSource.GROUND_TRUTH
    # The restored label is the ground truth again, in its author's name; the undo is the reviewer's.
    assert restored.previous_id == decision["version"] and restored.author == ground_truth.author
    assert body["restored"]["source"] == "ground_truth" and body["restored"]["author"] == (
        ground_truth.author.get_username() if ground_truth.author else None)
    undone = AuditLogEntry.objects.filter(action="label.undone").get()
    assert undone.actor == users["reviewer"] and undone.details["label"] == decision["version"]
    assert body["version"] == restored.pk
    # Append-only: three rows, nothing deleted; the current label is the restoring row.
    assert list(Label.objects.filter(nucleus=nucleus, label_set=rp.breast_set).order_by("id")
                .values_list("id", flat=True)) == [ground_truth.pk, decision["version"], restored.pk]
    assert CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set).label_id == restored.pk
    # Replaying the undo does nothing more; undoing the undo is refused.
    again = client.post(f"/api/nuclei/{nucleus.pk}/labels/undo/", {"label_set": "breast", "client_id": "u-1"},
                        format="json")
    assert again.status_code == 200 and ReviewUndo.objects.count() == 1
    refused = client.post(f"/api/nuclei/{nucleus.pk}/labels/undo/", {"label_set": "breast"}, format="json")
    assert refused.status_code == 409


def test_only_the_authors_own_decision_can_be_undone(rp, users, api_client_for):
    rita, rob = api_client_for(users["reviewer"]), api_client_for(users["reviewer2"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()
    decide(rob, nucleus.pk, "dead", None)
    response = rita.post(f"/api/nuclei/{nucleus.pk}/labels/undo/", {"label_set": "breast"}, format="json")
    assert response.status_code == 409 and "your own" in response.json()["detail"]
    # Ground truth is nobody's decision.
    gt_nucleus = Nucleus.objects.filter(image__dataset=rp.breast).first()
    assert rita.post(f"/api/nuclei/{gt_nucleus.pk}/labels/undo/", {"label_set": "breast"},
                     format="json").status_code == 409
    assert api_client_for(users["viewer"]).post(f"/api/nuclei/{nucleus.pk}/labels/undo/", {"label_set": "breast"},
                                                format="json").status_code == 403


def test_undo_last_of_a_first_label_makes_the_nucleus_unlabelled_and_brings_it_back(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    item = claim(client, rp)
    nucleus_id = item["nucleus"]["id"]
    label = decide(client, nucleus_id, "dead", None).json()
    following = claim(client, rp)
    assert following["nucleus"]["id"] != nucleus_id
    response = client.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["nucleus"] == nucleus_id and body["restored"] is None and body["current"] is None
    assert not CurrentLabel.objects.filter(nucleus_id=nucleus_id, label_set=rp.breast_set).exists()
    assert Label.objects.filter(pk=label["version"]).exists()  # the history keeps the undone row
    assert AuditLogEntry.objects.filter(action="label.undone").count() == 1
    # The queue shows the undone nucleus to the reviewer again, with version null.
    again = claim(client, rp)
    assert again["nucleus"]["id"] == nucleus_id and again["version"] is None
    # Its history shows both facts.
    history = client.get(f"/api/nuclei/{nucleus_id}/labels/?label_set=breast").json()["history"]
    assert [(h["class_name"], h["undone"]) for h in history] == [("dead", True)]
    # Nothing left to undo now: the undone decision is not "the last decision" any more.
    assert client.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast"},
                       format="json").status_code == 409
    progress = client.get(f"/api/projects/{rp.project.pk}/review/progress/?label_set=breast").json()
    assert progress["reviewed_today"] == 0


def test_undo_last_refuses_when_someone_changed_it_since(rp, users, api_client_for):
    rita, rob = api_client_for(users["reviewer"]), api_client_for(users["reviewer2"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()
    mine = decide(rita, nucleus.pk, "dead", None).json()
    assert decide(rob, nucleus.pk, "neoplastic", mine["version"], second_opinion=True).status_code == 201
    response = rita.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast"}, format="json")
    assert response.status_code == 409
    assert response.json()["current"]["author"] == "rob"


def test_history_shows_who_when_and_from_what_to_what(rp, users, api_client_for, client):
    rita, rob = api_client_for(users["reviewer"]), api_client_for(users["reviewer2"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.breast).order_by("id").first()
    gt = CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set).label
    names = ["neoplastic", "connective", "dead"]
    first = decide(rita, nucleus.pk, names[(gt.class_index + 1) % 3], gt.pk).json()
    second = decide(rob, nucleus.pk, names[(gt.class_index + 2) % 3], first["version"], second_opinion=True).json()
    history = rita.get(f"/api/nuclei/{nucleus.pk}/labels/").json()["history"]
    assert [h["id"] for h in history] == [gt.pk, first["version"], second["version"]]
    assert [h["author"] for h in history] == ["owner", "rita", "rob"]  # ground truth: the uploader
    assert [h["source"] for h in history] == ["ground_truth", "review", "review"]
    assert history[1]["previous"]["class_name"] == names[gt.class_index]
    assert history[2]["previous"]["class_name"] == history[1]["class_name"]
    assert all(h["created_at"] for h in history)
    # The nucleus page shows the same table.
    client.force_login(users["viewer"])
    page = client.get(f"/projects/{rp.project.pk}/nuclei/{nucleus.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('data-label-id="') == 3
    assert "rita" in html and "rob" in html and f"{names[gt.class_index]} → <strong>{history[1]['class_name']}" in html
    # Another project's id in the URL, or an outsider: 404.
    client.force_login(users["outsider"])
    assert client.get(f"/projects/{rp.project.pk}/nuclei/{nucleus.pk}/").status_code == 404
    client.force_login(users["viewer"])
    assert client.get(f"/projects/{rp.project.pk + 1}/nuclei/{nucleus.pk}/").status_code == 404


def test_gallery_lists_one_predicted_class_and_bulk_accepts(rp, users, api_client_for):
    client = api_client_for(users["reviewer"])
    url = f"/api/projects/{rp.project.pk}/review/gallery/?label_set=breast&class_name=dead"
    body = client.get(url + "&counts=1").json()
    free = set(unlabelled_in(rp, rp.breast_set))
    # Most confident first (least confidence = 1 - probability of the predicted class).
    expected = sorted((p for (n, ls), p in rp.predictions.items() if ls == rp.breast_set.pk and n in free
                       and p.class_index == 2), key=lambda p: (p.least_confidence, p.pk))
    assert [p.probability for p in expected] == sorted((p.probability for p in expected), reverse=True)
    assert [i["nucleus"] for i in body["items"]] == [p.nucleus_id for p in expected]
    assert body["counts"]["dead"] == len(expected)
    assert sum(body["counts"].values()) == len(free)
    assert all(i["crop_url"].startswith(f"/api/images/{i['image']}/region.png") for i in body["items"])
    # Accept two, move one to another class: one request, one status per nucleus.
    items = body["items"][:3]
    decisions = [{"nucleus": i["nucleus"], "class_name": "dead", "version": i["version"], "client_id": f"g{k}"}
                 for k, i in enumerate(items[:2])]
    decisions.append({"nucleus": items[2]["nucleus"], "class_name": "neoplastic", "version": items[2]["version"]})
    decisions.append({"nucleus": 99999999, "class_name": "dead", "version": None})
    response = client.post(f"/api/projects/{rp.project.pk}/review/bulk/", {"label_set": "breast",
                                                                            "decisions": decisions}, format="json")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 201, 404]
    assert response.json()["saved"] == 3
    assert dict(CurrentLabel.objects.filter(nucleus_id__in=[i["nucleus"] for i in items], label_set=rp.breast_set)
                .values_list("nucleus_id", "class_index")) == {items[0]["nucleus"]: 2, items[1]["nucleus"]: 2,
                                                                items[2]["nucleus"]: 0}
    # Replaying the same bulk request saves nothing new; the accepted nuclei left the gallery.
    again = client.post(f"/api/projects/{rp.project.pk}/review/bulk/", {"label_set": "breast",
                                                                         "decisions": decisions[:2]}, format="json")
    assert [r["status"] for r in again.json()["results"]] == [200, 200]
    after = client.get(url).json()
    assert after["counts"] is None  # counted only when asked
    remaining = [i["nucleus"] for i in after["items"]]
    assert not set(remaining) & {i["nucleus"] for i in items}
    assert api_client_for(users["viewer"]).get(url).status_code == 403


def test_a_review_in_another_taxonomy_becomes_a_known_label_for_training(rp, users, api_client_for):
    from webapp.training.operations import new_reviews_since_active
    from webapp.training.runner import known_labels

    client = api_client_for(users["reviewer"])
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).order_by("id").first()  # dataset A (colon)
    labels, counts = known_labels(rp.project)
    assert nucleus.instance_id not in labels[nucleus.image_id].get("breast", {})
    before = new_reviews_since_active(rp.project)
    assert decide(client, nucleus.pk, "connective", None).status_code == 201  # label set B (breast)
    labels, counts = known_labels(rp.project)
    assert labels[nucleus.image_id]["breast"][nucleus.instance_id] == 1
    assert counts["breast"]["review"] == 1
    assert new_reviews_since_active(rp.project) == before + 1


def test_a_decision_taken_back_is_not_a_new_reviewed_label(rp, users, api_client_for):
    """The count that the project page shows and the retraining policy's threshold reads: an undone decision is
    no supervision, and deciding the same nucleus again and again is one new label, not one per decision."""
    from webapp.training.operations import new_reviews_since_active

    client = api_client_for(users["reviewer"])
    nuclei = list(Nucleus.objects.filter(image__dataset=rp.colon).order_by("id")[:2])   # unlabelled in "breast"
    before = new_reviews_since_active(rp.project)
    first = decide(client, nuclei[0].pk, "connective", None)
    second = decide(client, nuclei[1].pk, "connective", None)
    assert (first.status_code, second.status_code) == (201, 201)
    assert new_reviews_since_active(rp.project) == before + 2
    undo = client.post(f"/api/projects/{rp.project.pk}/review/undo/", {"label_set": "breast"}, format="json")
    assert undo.status_code == 200 and undo.json()["nucleus"] == nuclei[1].pk
    assert new_reviews_since_active(rp.project) == before + 1
    version = first.json()["version"]
    for class_name in ("dead", "neoplastic", "connective"):
        response = decide(client, nuclei[0].pk, class_name, version)
        assert response.status_code == 201, response.content
        version = response.json()["version"]
    assert Label.objects.filter(nucleus=nuclei[0], source=LabelSource.REVIEW).count() == 4
    assert new_reviews_since_active(rp.project) == before + 1


def test_impossible_ids_and_two_different_classes_are_400s_naming_the_field(rp, users, api_client_for):
    """Numbers no id can be are a 400 naming the field, not a 500 from the database driver or a 409 a script
    would retry; a class given by name and by a different index is refused, not stored as one of them."""
    client = api_client_for(users["reviewer"])
    item = claim(client, rp)
    nucleus_id = item["nucleus"]["id"]
    huge = 10**25
    for version in (huge, -3, 0):
        response = decide(client, nucleus_id, "dead", version)
        assert response.status_code == 400 and "version" in response.json()["detail"], response.content
    bulk = client.post(f"/api/projects/{rp.project.pk}/review/bulk/", {"label_set": "breast", "decisions": [
        {"nucleus": huge, "class_name": "dead", "version": None}]}, format="json")
    assert bulk.status_code == 400 and "nucleus" in bulk.json()["detail"], bulk.content
    excluded = client.get(f"/api/projects/{rp.project.pk}/review/next/?label_set=breast&exclude={huge}")
    assert excluded.status_code == 400 and "exclude" in excluded.json()["detail"], excluded.content
    both = client.post(f"/api/nuclei/{nucleus_id}/labels/", {"label_set": "breast", "class_name": "dead",
                                                              "class_index": 0, "version": item["version"]},
                       format="json")
    assert both.status_code == 400, both.content
    assert "class_name 'dead' is class 2, not class_index 0" in both.json()["detail"]
    assert not Label.objects.filter(nucleus_id=nucleus_id, source=LabelSource.REVIEW).exists()
    agreeing = client.post(f"/api/nuclei/{nucleus_id}/labels/", {"label_set": "breast", "class_name": "dead",
                                                                  "class_index": 2, "version": item["version"]},
                           format="json")
    assert agreeing.status_code == 201 and agreeing.json()["class_name"] == "dead"


def test_a_decision_without_version_says_which_version_to_send(rp, users, api_client_for):
    # "version: This field is required." did not say that it is the version the queue or the gallery handed out.
    nucleus = Nucleus.objects.filter(image__dataset=rp.colon).first()
    client = api_client_for(users["reviewer"])
    single = client.post(f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": "breast", "class_name": "dead"},
                         format="json")
    assert single.status_code == 400
    assert single.json()["errors"]["version"] == [
        "send the nucleus's 'version' as review/next or the gallery gave it (the id of its current label, null when "
        "it has none), so that a label changed since is not overwritten"]
    bulk = client.post(f"/api/projects/{rp.project.pk}/review/bulk/",
                       {"label_set": "breast", "decisions": [{"nucleus": nucleus.pk, "class_name": "dead"}]},
                       format="json")
    assert bulk.status_code == 400
    assert "review/next or the gallery gave it" in bulk.json()["detail"]
