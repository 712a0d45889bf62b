"""Reviewer agreement: Cohen's kappa checked against hand-computed values, then the project's
agreement API and page, conflicts and their settling by a curator."""

from __future__ import annotations

import pytest

from webapp.datasets.models import CurrentLabel, Label, Nucleus
from webapp.review import agreement
from webapp.review.models import ConflictSettlement

# ----------------------------------------------------------------------------- the pure module


def test_kappa_of_the_textbook_two_by_two_table():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = .7, p_e = .5*.6 + .5*.4 = .5, kappa = .4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert agreement.observed_agreement(a, b) == pytest.approx(0.7)
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)
    assert agreement.confusion(a, b).tolist() == [[15, 10], [5, 20]]


def test_kappa_of_three_classes_and_one_vs_rest_by_hand():
    a = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    b = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]
    # p_o = 7/10; marginals a (3, 3, 4), b (3, 3, 4): p_e = (9 + 9 + 16) / 100 = .34; kappa = .36 / .66 = 6/11
    assert agreement.cohen_kappa(a, b) == pytest.approx(6 / 11)
    # class 2 vs rest: p_o = 8/10, p_e = .4*.4 + .6*.6 = .52, kappa = .28 / .48 = 7/12
    assert agreement.one_vs_rest_kappa(a, b, 2) == pytest.approx(7 / 12)
    # class 0 vs rest: p_o = 8/10, p_e = .3*.3 + .7*.7 = .58, kappa = .22 / .42 = 11/21
    assert agreement.one_vs_rest_kappa(a, b, 0) == pytest.approx(11 / 21)


def test_kappa_edge_cases():
    assert agreement.cohen_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert agreement.cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert agreement.cohen_kappa([1, 1, 1], [1, 1, 1]) is None     # p_e = 1: undefined
    assert agreement.cohen_kappa([], []) is None
    assert agreement.one_vs_rest_kappa([0, 0], [0, 0], 2) is None  # nobody used class 2
    with pytest.raises(ValueError):
        agreement.cohen_kappa([0, 1], [0])


def test_agreement_report_pairs_classes_and_conflicts():
    ratings = {
        "ann": {1: 0, 2: 0, 3: 1, 4: 1, 5: 2},
        "bob": {1: 0, 2: 1, 3: 1, 4: 1},
        "cat": {5: 2, 6: 0},
    }
    report = agreement.agreement_report(ratings, n_classes=3)
    pairs = {(p.a, p.b): p for p in report.pairs}
    assert set(pairs) == {("ann", "bob"), ("ann", "cat")}  # bob and cat share nothing
    ab = pairs["ann", "bob"]
    # ann [0,0,1,1], bob [0,1,1,1]: p_o = .75, p_e = .5*.25 + .5*.75 = .5, kappa = .5
    assert (ab.n, ab.observed, ab.kappa) == (4, 0.75, pytest.approx(0.5))
    assert pairs["ann", "cat"].n == 1 and pairs["ann", "cat"].kappa is None
    # Pooled: ann [0,0,1,1,2], other [0,1,1,1,2]: p_o = .8; marginals (.4,.4,.2) and (.2,.6,.2):
    # p_e = .08 + .24 + .04 = .36; kappa = .44 / .64 = .6875
    assert report.overall_n == 5 and report.overall_kappa == pytest.approx(0.6875)
    by_class = {c.index: c for c in report.classes}
    # class 2 vs rest pooled: both [0,0,0,0,1] -> perfect
    assert by_class[2].kappa == pytest.approx(1.0) and by_class[2].n == 1
    # class 0 vs rest pooled: ann [1,1,0,0,0], other [1,0,0,0,0]: p_o = .8, p_e = .4*.2 + .6*.8 = .56 -> .24/.44
    assert by_class[0].kappa == pytest.approx(0.24 / 0.44) and by_class[0].n == 2
    assert report.conflicts == [2]


def test_ratings_from_rows_keeps_each_reviewers_latest():
    rows = [("ann", 1, 0), ("bob", 1, 1), ("ann", 1, 1)]
    assert agreement.ratings_from_rows(rows) == {"ann": {1: 1}, "bob": {1: 1}}


# ----------------------------------------------------------------------------- in the project

def decide(client, nucleus_id, class_name, label_set="colon"):
    """A decision with the current version; two reviewers on one nucleus: the second asks for a second opinion."""
    current = CurrentLabel.objects.filter(nucleus_id=nucleus_id, label_set__name=label_set).first()
    response = client.post(f"/api/nuclei/{nucleus_id}/labels/", {"label_set": label_set, "class_name": class_name,
                                                                  "version": current.label_id if current else None,
                                                                  "second_opinion": True},
                           format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def two_reviews(rp, users, api_client_for):
    """rita and rob label the same four breast nuclei in the colon taxonomy; they disagree on one."""
    rita, rob = api_client_for(users["reviewer"]), api_client_for(users["reviewer2"])
    nuclei = [n.pk for n in Nucleus.objects.filter(image__dataset=rp.breast).order_by("id")[:5]]
    for nucleus_id, (r1, r2) in zip(nuclei, [("epithelial", "epithelial"), ("epithelial", "inflammatory"),
                                             ("inflammatory", "inflammatory"), ("inflammatory", "inflammatory")]):
        decide(rita, nucleus_id, r1)
        decide(rob, nucleus_id, r2)
    # An undone decision does not count.
    decide(rita, nuclei[4], "epithelial")
    assert rita.post(f"/api/nuclei/{nuclei[4]}/labels/undo/", {"label_set": "colon"}, format="json").status_code == 200
    decide(rob, nuclei[4], "inflammatory")
    return nuclei


@pytest.mark.django_db
def test_agreement_api_kappa_per_pair_and_class_and_conflicts(rp, users, api_client_for, two_reviews):
    body = api_client_for(users["viewer"]).get(f"/api/projects/{rp.project.pk}/review/agreement/?label_set=colon")
    assert body.status_code == 200
    report = body.json()["label_sets"][0]
    assert report["reviewers"] == ["rita", "rob"]
    # rita [e, e, i, i], rob [e, i, i, i]: p_o = .75, p_e = .5*.25 + .5*.75 = .5 -> kappa = .5
    assert report["pairs"] == [{"a": "rita", "b": "rob", "n": 4, "observed": 0.75, "kappa": pytest.approx(0.5)}]
    assert [c["kappa"] for c in report["per_class"]] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert [c["name"] for c in report["per_class"]] == ["epithelial", "inflammatory"]
    assert [c["nucleus"] for c in report["conflicts"]] == [two_reviews[1]]
    votes = {v["reviewer"]: v["class_name"] for v in report["conflicts"][0]["votes"]}
    assert votes == {"rita": "epithelial", "rob": "inflammatory"}
    assert report["conflicts"][0]["current"]["author"] == "rob"
    assert api_client_for(users["outsider"]).get(f"/api/projects/{rp.project.pk}/review/agreement/").status_code == 404


@pytest.mark.django_db
def test_a_curator_settles_a_conflict_with_the_same_domain_function(rp, users, api_client_for, two_reviews):
    url = f"/api/projects/{rp.project.pk}/review/conflicts/settle/"
    nucleus_id = two_reviews[1]
    version = CurrentLabel.objects.get(nucleus_id=nucleus_id, label_set=rp.colon_set).label_id
    body = {"nucleus": nucleus_id, "label_set": "colon", "class_name": "epithelial", "version": version}
    assert api_client_for(users["reviewer"]).post(url, body, format="json").status_code == 403
    assert api_client_for(users["curator"]).post(url, {**body, "version": None}, format="json").status_code == 409
    response = api_client_for(users["curator"]).post(url, body, format="json")
    assert response.status_code == 201, response.content
    label = Label.objects.get(pk=response.json()["version"])
    assert label.author == users["curator"] and label.source == "review" and label.previous_id == version
    assert ConflictSettlement.objects.get().label == label
    report = api_client_for(users["curator"]).get(
        f"/api/projects/{rp.project.pk}/review/agreement/?label_set=colon").json()["label_sets"][0]
    assert report["conflicts"] == [] and report["open_conflicts"] == 0 and report["settled_conflicts"] == 1
    assert report["pairs"][0]["kappa"] == pytest.approx(0.5)  # the curator's label is no reviewer vote
    assert report["reviewers"] == ["rita", "rob"]


@pytest.mark.django_db
def test_agreement_page_shows_kappa_and_settles_through_its_form(rp, users, client, two_reviews):
    client.force_login(users["curator"])
    page = client.get(f"/projects/{rp.project.pk}/review/agreement/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-pair="rita|rob"' in html and "0.500" in html
    assert f'data-nucleus-id="{two_reviews[1]}"' in html and "Settle" in html
    version = CurrentLabel.objects.get(nucleus_id=two_reviews[1], label_set=rp.colon_set).label_id
    response = client.post(f"/projects/{rp.project.pk}/review/agreement/settle/", {
        "nucleus": two_reviews[1], "label_set": "colon", "class_name": "inflammatory", "version": version})
    assert response.status_code == 302
    assert ConflictSettlement.objects.count() == 1
    after = client.get(f"/projects/{rp.project.pk}/review/agreement/").content.decode()
    assert f'data-nucleus-id="{two_reviews[1]}"' not in after and "settled as" in after
    # A viewer sees the figures but no settle form, and cannot post it.
    client.force_login(users["viewer"])
    html = client.get(f"/projects/{rp.project.pk}/review/agreement/").content.decode()
    assert 'data-pair="rita|rob"' in html and "settle-form" not in html
    assert client.post(f"/projects/{rp.project.pk}/review/agreement/settle/", {}).status_code == 403
