"""A stopped training resumes on its data as of its snapshot: the label sets it learnt are those labelled then. A
label set whose only review was undone after the stop was refused ("the project's label sets changed"), although
the resume reads the nuclei as they were at that snapshot, undos included."""

import pytest

from tests.workers.training_helpers import FAST, stopped_after_stage_1, two_taxonomy_project
from webapp.datasets.models import LabelClass, LabelSet, Nucleus
from webapp.jobs.models import Job
from webapp.review.operations import do_decide, do_undo
from webapp.training.models import ModelVersion
from webapp.training.operations import labelled_label_sets
from webapp.training.runner import run_training

pytestmark = pytest.mark.django_db


def label_set_with_classes(project, name: str, classes: list[str]) -> LabelSet:
    label_set = LabelSet.objects.create(project=project, name=name)
    for index, class_name in enumerate(classes):
        LabelClass.objects.create(label_set=label_set, index=index, name=class_name, color=f"#00000{index}")
    return label_set


def test_a_label_set_whose_only_review_was_undone_after_the_stop_is_resumed(owner, api_client_for, media_root,
                                                                             tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2, nuclei=12)
    grade = label_set_with_classes(project, "grade", ["low", "high"])
    nucleus = Nucleus.objects.filter(image__project=project).order_by("id").first()
    do_decide(nucleus, grade, 1, user=owner, expected_label_id=None)   # the only human label of "grade"
    options = {**FAST, "stages": ["sparse", "completion"], "predict_tta": False}
    first, trained = stopped_after_stage_1(project, owner, options)
    first.refresh_from_db()
    assert first.result["resume"]["label_sets"] == ["colon", "breast", "grade"]

    # After the stop: the review is undone ("grade" has no label now), and a new label set gets its first review.
    do_undo(nucleus, grade, user=owner)
    stage = label_set_with_classes(project, "stage", ["i", "ii"])
    do_decide(nucleus, stage, 0, user=owner, expected_label_id=None)
    assert labelled_label_sets(project) == ["colon", "breast", "stage"]

    client = api_client_for(owner)
    estimate = client.get(f"/api/projects/{project.pk}/train/estimate/", {"resume_from": first.pk})
    assert estimate.status_code == 200, estimate.content
    assert estimate.json()["label_sets"] == 3 and estimate.json()["stages"] == ["completion"]
    response = client.post(f"/api/projects/{project.pk}/train/", {"resume_from": first.pk}, format="json")
    assert response.status_code == 202, response.content
    resumed = Job.objects.get(pk=response.json()["id"])
    assert resumed.params["resume"] == {"job": first.pk, "stage": "sparse"}

    result = run_training(resumed, lambda *a, **k: None, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    # The label sets the stopped stage learnt, on the same nuclei; "stage" waits for the next training.
    assert [s["name"] for s in version.label_sets] == ["colon", "breast", "grade"]
    assert version.training_data["nuclei"] == trained
    assert result["stages"] == ["completion"]
    assert set(result["trained_on"]) == {"colon", "breast", "unlabelled_nuclei"}
