"""GET /api/images/<id>/nuclei/: every nucleus with its outline and its labels in every label set."""

import pytest

from tests.webapp.viewer_project import build_viewer_project
from webapp.datasets.models import CurrentLabel, Label, LabelSource, Nucleus

pytestmark = pytest.mark.django_db


def test_one_call_gives_every_nucleus_with_geometry_and_labels(api_client_for, viewer_project, member):
    vp = viewer_project
    response = api_client_for(member).get(f"/api/images/{vp.image.pk}/nuclei/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()

    assert data["image"] == {"id": vp.image.pk, "name": vp.image.name, "width": vp.image.width,
                             "height": vp.image.height, "dataset": {"id": vp.alpha.pk, "name": "alpha"},
                             "url": f"/media-files/images/{vp.image.pk}/image"}
    assert [ls["name"] for ls in data["label_sets"]] == ["alpha-types", "beta-types"]
    assert data["label_sets"][0]["classes"][0] == {"index": 0, "name": "tumour", "color": "#cc3311"}
    assert data["default_label_set"] == vp.alpha_set.pk
    sources = {s["key"]: s["labels"] for s in data["sources"]}
    assert list(sources) == ["current", "ground_truth", "review"]  # prediction only once there are predictions

    nuclei = list(Nucleus.objects.filter(image=vp.image).order_by("instance_id"))
    assert [n["id"] for n in data["nuclei"]] == [n.pk for n in nuclei]
    for got, nucleus in zip(data["nuclei"], nuclei):
        assert got["instance_id"] == nucleus.instance_id
        assert got["bbox"] == [nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1]
        assert got["centroid"] == [pytest.approx(nucleus.centroid_x, abs=0.0051),
                                   pytest.approx(nucleus.centroid_y, abs=0.0051)]
        assert got["area"] == nucleus.area
        assert got["outline"] == nucleus.outline and len(got["outline"]) >= 3
        xs, ys = [p[0] for p in got["outline"]], [p[1] for p in got["outline"]]
        assert nucleus.x0 <= min(xs) and max(xs) < nucleus.x1 and nucleus.y0 <= min(ys) and max(ys) < nucleus.y1

    alpha, beta = str(vp.alpha_set.pk), str(vp.beta_set.pk)
    ground_truth = dict(Label.objects.filter(nucleus__image=vp.image, label_set=vp.alpha_set,
                                             source=LabelSource.GROUND_TRUTH).values_list("nucleus_id", "class_index"))
    for got in data["nuclei"]:
        reviewed = vp.reviewed.get(got["id"], {})
        entry = got["labels"][alpha]
        assert entry["ground_truth"] == ground_truth[got["id"]]
        if vp.alpha_set.pk in reviewed:  # the re-classified nucleus: current = review, ground truth kept
            assert entry == {"class": reviewed[vp.alpha_set.pk], "source": "review",
                             "ground_truth": ground_truth[got["id"]], "review": reviewed[vp.alpha_set.pk]}
            assert entry["class"] != entry["ground_truth"]
        else:
            assert entry == {"class": ground_truth[got["id"]], "source": "ground_truth",
                             "ground_truth": ground_truth[got["id"]], "review": None}
        if vp.beta_set.pk in reviewed:  # labelled in the other taxonomy by review only
            assert got["labels"][beta] == {"class": reviewed[vp.beta_set.pk], "source": "review",
                                           "ground_truth": None, "review": reviewed[vp.beta_set.pk]}
        else:
            assert beta not in got["labels"]
    assert sources == {"current": len(nuclei) + 3, "ground_truth": len(nuclei), "review": 4}


def test_the_latest_ground_truth_wins(api_client_for, viewer_project, owner):
    vp = viewer_project
    nucleus = Nucleus.objects.filter(image=vp.image).order_by("instance_id").last()
    old = CurrentLabel.objects.get(nucleus=nucleus, label_set=vp.alpha_set)
    newer = Label.objects.create(nucleus=nucleus, label_set=vp.alpha_set, class_index=(old.class_index + 1) % 3,
                                 source=LabelSource.GROUND_TRUTH, previous=old.label)
    CurrentLabel.objects.filter(pk=old.pk).update(label=newer, class_index=newer.class_index)
    data = api_client_for(owner).get(f"/api/images/{vp.image.pk}/nuclei/").json()
    entry = next(n for n in data["nuclei"] if n["id"] == nucleus.pk)["labels"][str(vp.alpha_set.pk)]
    assert entry["ground_truth"] == entry["class"] == newer.class_index


def test_the_number_of_queries_does_not_grow_with_the_nuclei(client, owner, media_root, tmp_path,
                                                              django_assert_max_num_queries):
    small = build_viewer_project(owner, tmp_path / "a", name="Small", n_images=1, nuclei=3, size=64)
    large = build_viewer_project(owner, tmp_path / "b", name="Large", n_images=1, nuclei=40, size=160)
    client.force_login(owner)
    counts = []
    for vp in (small, large):
        with django_assert_max_num_queries(12) as captured:
            response = client.get(f"/api/images/{vp.image.pk}/nuclei/")
        assert response.status_code == 200
        counts.append(len(captured.captured_queries))
    assert len(large.image.nuclei.all()) > 25
    assert counts[0] == counts[1]


def test_session_and_token_authentication_both_work(client, api_client_for, viewer_project, member, outsider):
    vp = viewer_project
    url = f"/api/images/{vp.image.pk}/nuclei/"
    client.force_login(member)
    assert client.get(url).status_code == 200
    assert api_client_for(member).get(url).status_code == 200
    missing = api_client_for(member).get("/api/images/999999/nuclei/")
    assert missing.status_code == 404 and "not a member" in missing.json()["detail"]
    refused = api_client_for(outsider).get(url)
    assert refused.status_code == 404 and refused.json()["detail"] == missing.json()["detail"]


def test_predictions_of_the_active_model_version_are_a_source(api_client_for, client, viewer_project, member):
    from tests.webapp.viewer_project import add_predictions
    from webapp.training.models import ModelVersion

    vp = viewer_project
    expected = add_predictions(vp)
    data = api_client_for(member).get(f"/api/images/{vp.image.pk}/nuclei/").json()
    assert data["model_version"]["number"] == 1
    prediction = next(s for s in data["sources"] if s["key"] == "prediction")
    assert prediction == {"key": "prediction", "name": "Prediction (model v1)", "labels": 2 * len(data["nuclei"])}
    for nucleus in data["nuclei"]:
        for ls in (vp.alpha_set.pk, vp.beta_set.pk):
            index, probability = expected[nucleus["id"], ls]
            assert nucleus["labels"][str(ls)]["prediction"] == {"class": index, "probability": probability}
    # Predicted but not labelled in beta: the entry has the prediction and no current label.
    unreviewed = next(n for n in data["nuclei"] if n["id"] not in vp.reviewed)
    assert unreviewed["labels"][str(vp.beta_set.pk)]["class"] is None

    client.force_login(member)
    html = client.get(f"/projects/{vp.project.pk}/images/{vp.image.pk}/").content.decode()
    assert '<option value="prediction">Prediction (model v1)</option>' in html

    # A version that is not active is not shown.
    ModelVersion.objects.update(is_active=False)
    data = api_client_for(member).get(f"/api/images/{vp.image.pk}/nuclei/").json()
    assert "prediction" not in {s["key"] for s in data["sources"]} and data["model_version"] is None
    assert all("prediction" not in e for n in data["nuclei"] for e in n["labels"].values())


def test_an_image_without_reviews_needs_no_history_query_and_both_history_paths_agree(
        api_client_for, viewer_project, member, monkeypatch):
    from webapp.datasets import queries

    vp = viewer_project
    url = f"/api/images/{vp.image.pk}/nuclei/"
    client = api_client_for(member)
    by_id = client.get(url).json()
    monkeypatch.setattr(queries, "HISTORY_BY_ID_MAX", 0)  # the subquery used when many nuclei were reviewed
    assert client.get(url).json() == by_id
    reviewed = next(n for n in by_id["nuclei"] if n["id"] in vp.reviewed)
    assert reviewed["labels"][str(vp.alpha_set.pk)]["ground_truth"] is not None

    with_reviews = len(_queries(client, url))
    CurrentLabel.objects.filter(nucleus__image=vp.image).exclude(source=LabelSource.GROUND_TRUTH).delete()
    without = client.get(url).json()
    assert len(_queries(client, url)) == with_reviews - 1  # no ground-truth history to read
    assert all(e["source"] == "ground_truth" for n in without["nuclei"] for e in n["labels"].values())


def _queries(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return captured.captured_queries
