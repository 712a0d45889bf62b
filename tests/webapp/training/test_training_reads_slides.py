"""A training reads the labelled nuclei of the project's whole-slide images: a reviewer's decisions on a slide
are supervision as they are on a tile. The reviews come first within SLIDE_TRAINING_MAX_NUCLEI, the same labels
give the same table, squares of the slide are the validation split's groups, and a slide that cannot be read is
left out and named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webapp.slide_world import build_slide_world
from tests.workers.training_helpers import FAST, resume_job, stopped_after_stage_1
from webapp.datasets.models import CurrentLabel, Image, LabelSource, Nucleus
from webapp.jobs.models import Job
from webapp.training import slide_data
from webapp.training.models import ModelVersion
from webapp.training.runner import run_training, table_names

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_crop_cache(settings, tmp_path):
    """A DATA_DIR of the test's own: the slide crops a training caches there belong to rows that go with the
    test, and the orphan sweep of a later test would find them gone and remove them (or count them)."""
    settings.DATA_DIR = tmp_path / "own-data"


def read(world, limit: int, settings, tmp_path) -> slide_data.SlideTrainingData:
    from mlcore.crops import CropSpec

    settings.SLIDE_TRAINING_MAX_NUCLEI = limit
    slides = slide_data.labelled_slides(world.project)
    return slide_data.slide_training_data(slides, {world.alpha.name, world.beta.name}, CropSpec(),
                                          cache_dir=tmp_path / "cache", split_names=table_names([world.image]))


def test_the_shares_of_the_slides_within_the_limit():
    assert slide_data.shares([5, 100, 100], 105) == [5, 50, 50]
    assert slide_data.shares([5, 100, 100], 1000) == [5, 100, 100]
    assert slide_data.shares([30, 30, 30], 10) == [3, 3, 4]
    assert slide_data.shares([], 10) == []


def test_the_reviews_come_first_and_the_same_labels_give_the_same_nuclei(owner, media_root, settings, tmp_path):
    world = build_slide_world(owner, tiles_x=9, tiles_y=2)    # 2304 x 512 px: two squares of the split
    reviewed = len(world.beta_reviews)
    assert reviewed > 100
    data = read(world, 100, settings, tmp_path)
    instance_ids = dict(Nucleus.objects.filter(image=world.image).values_list("instance_id", "pk"))
    taken = [instance_ids[int(i)] for record in data.records for i in record.ids]
    assert len(taken) == 100 and set(taken) <= set(world.beta_reviews)   # every one of them reviewed
    assert {k: dict(v) for k, v in data.counts.items()} == {"alpha-types": {"ground_truth": 100},
                                                            "beta-types": {"review": 100}}
    assert data.nuclei == {world.image.pk: 100}
    assert data.notes == [f"slide 'slide-1.tif': 100 of its {len(world.truth)} labelled nuclei taken (100 reviewed), "
                          "within the SLIDE_TRAINING_MAX_NUCLEI limit of 100 for the project's slides"]
    # Each record holds its nuclei's labels and crops, named by its square of the slide.
    assert sorted(record.group.rsplit("/", 1)[1] for record in data.records) == ["block 0,0", "block 1,0"]
    for record in data.records:
        assert record.crops.shape == (len(record.ids), 64, 64, 3) and record.crops.any()
        by_id = {n.instance_id: n.pk for n in Nucleus.objects.filter(image=world.image, instance_id__in=record.ids.tolist())}
        assert record.labels["beta-types"] == {i: world.beta_reviews[by_id[i]] for i in record.ids.tolist()}
        assert record.labels["alpha-types"] == {i: world.truth[by_id[i]] for i in record.ids.tolist()}

    again = read(world, 100, settings, tmp_path)
    assert [r.ids.tolist() for r in again.records] == [r.ids.tolist() for r in data.records]

    # Over the reviews, the ground truth fills the rest; within the limit, every labelled nucleus is read.
    data = read(world, reviewed + 50, settings, tmp_path)
    assert {k: dict(v) for k, v in data.counts.items()} == {"alpha-types": {"ground_truth": reviewed + 50},
                                                            "beta-types": {"review": reviewed}}
    everything = read(world, 10**6, settings, tmp_path)
    assert everything.nuclei == {world.image.pk: len(world.truth)} and not everything.notes


def test_a_training_learns_a_slides_reviews_and_validates_on_another_square(owner, media_root, settings, tmp_path):
    settings.SLIDE_TRAINING_MAX_NUCLEI = 400
    world = build_slide_world(owner, tiles_x=9, tiles_y=2)
    logs = []
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=world.project, created_by=owner,
                             params={"options": {**FAST, "predict_tta": False}})
    result = run_training(job, lambda percent, log=None, **details: logs.append(log) if log else None, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert [s["name"] for s in version.label_sets] == ["alpha-types", "beta-types"]
    assert result["stages"] == ["sparse", "correlation", "completion"]   # two taxonomies: the whole method
    assert result["trained_on"] == {"alpha-types": {"ground_truth": 400},
                                    "beta-types": {"review": len(world.beta_reviews)}, "unlabelled_nuclei": 0}
    split = version.training_data["split"]
    assert split["train"] + split["validation"] == 400 and split["train"] > 0 and split["validation"] > 0
    assert version.metrics["beta-types"]["n"] > 0                           # scored on reviewed nuclei
    assert any("400 of its" in line and "SLIDE_TRAINING_MAX_NUCLEI" in line for line in logs), logs


def test_a_slide_that_cannot_be_read_is_left_out_and_named(owner, media_root, settings, tmp_path):
    world = build_slide_world(owner, tiles_x=4, tiles_y=2)
    Path(world.path).unlink()
    data = read(world, 1000, settings, tmp_path)
    assert not data.records and not data.nuclei
    assert data.notes == ["slide 'slide-1.tif' left out: it could not be read here (slide-1.tif: the slide file is "
                          "missing)"]
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=world.project, created_by=owner,
                             params={"options": {**FAST, "predict_tta": False}})
    with pytest.raises(ValueError, match="the project has no image to train on"):
        run_training(job, lambda *a, **k: None, lambda: False)


def test_slides_are_not_read_with_a_limit_of_zero(owner, media_root, settings, tmp_path):
    from webapp.training.operations import labelled_label_sets

    world = build_slide_world(owner, tiles_x=4, tiles_y=2)
    assert labelled_label_sets(world.project) == ["alpha-types", "beta-types"]
    settings.SLIDE_TRAINING_MAX_NUCLEI = 0
    assert labelled_label_sets(world.project) == []
    assert CurrentLabel.objects.filter(source=LabelSource.REVIEW).exists()


def test_reviews_of_a_slides_unlabelled_nuclei_after_a_cancel_do_not_stop_its_resume(owner, media_root, settings,
                                                                                     tmp_path):
    """A slide's unlabelled nuclei are not in a training, so a review of one adds a nucleus to the next one; a
    resume (asked for, or a lost worker's own) must read the nuclei the stopped training read, as of its data
    snapshot, as a tile's review changes a label and never the nuclei. It failed with "the project has N+1 nuclei,
    job J trained on N: its data changed"."""
    from webapp.datasets.models import Label
    from webapp.datasets.operations import do_record_label

    settings.SLIDE_TRAINING_MAX_NUCLEI = 10**6
    world = build_slide_world(owner, tiles_x=9, tiles_y=2)
    # As a QuPath export without a class on every detection: some nuclei have no label at all.
    unlabelled = [pk for pk in sorted(world.truth) if pk not in world.beta_reviews][::4]
    Label.objects.filter(nucleus_id__in=unlabelled).delete()
    options = {**FAST, "stages": ["sparse", "completion"], "predict_tta": False}
    first, trained = stopped_after_stage_1(world.project, owner, options)
    # Meanwhile a reviewer labels two of the unlabelled nuclei, and changes a reviewed one.
    for pk in unlabelled[:2]:
        do_record_label(Nucleus.objects.get(pk=pk), world.beta, 1, author=owner)
    reviewed = sorted(world.beta_reviews)[0]
    do_record_label(Nucleus.objects.get(pk=reviewed), world.beta, 1 - world.beta_reviews[reviewed], author=owner)

    result = run_training(resume_job(first, owner, options), lambda *a, **k: None, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.training_data["nuclei"] == trained == len(world.truth) - len(unlabelled)
    # The labels are the current ones (the changed review), as a tile's; the new nuclei wait for the next training.
    assert result["trained_on"]["beta-types"] == {"review": len(world.beta_reviews)}

    fresh = Job.objects.create(kind=Job.Kind.TRAIN, project=world.project, created_by=owner,
                               params={"options": {**options, "stages": ["sparse"]}})
    result = run_training(fresh, lambda *a, **k: None, lambda: False)
    assert result["trained_on"]["beta-types"] == {"review": len(world.beta_reviews) + 2}
    assert ModelVersion.objects.get(pk=result["model_version_id"]).training_data["nuclei"] == trained + 2


def test_the_estimate_runs_the_stages_a_training_runs_when_the_slides_are_not_read(owner, media_root, settings,
                                                                                 tmp_path):
    """With SLIDE_TRAINING_MAX_NUCLEI 0 a label set labelled on slides only is left out of the training, which then
    runs stage 1 alone: the train form's estimate costed the three stages of two label sets."""
    from tests.workers.training_helpers import two_taxonomy_project
    from webapp.datasets.models import Label, LabelSet
    from webapp.training.estimate import training_estimate

    project = two_taxonomy_project(owner, tmp_path / "tiles", images=1, nuclei=10)
    colon, breast = LabelSet.objects.get(project=project, name="colon"), LabelSet.objects.get(project=project,
                                                                                            name="breast")
    Label.objects.filter(label_set=breast).delete()         # breast is labelled on the slide only
    build_slide_world(owner, project=project, label_sets=(breast, colon), tiles_x=4, tiles_y=2)
    assert training_estimate(project, {"epochs": 1})["stages"] == ["sparse", "correlation", "completion"]
    settings.SLIDE_TRAINING_MAX_NUCLEI = 0
    estimate = training_estimate(project, {"epochs": 1})
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "predict_tta": False}})
    result = run_training(job, lambda *a, **k: None, lambda: False)
    assert result["stages"] == ["sparse"] and set(result["trained_on"]) == {"colon", "unlabelled_nuclei"}
    assert estimate["stages"] == ["sparse"] and list(estimate["per_stage"]) == ["sparse"]
    assert estimate["label_sets"] == 1


def test_a_slide_in_two_projects_keeps_its_cached_crops_for_each(owner, media_root, settings, tmp_path, monkeypatch):
    """The same slide (same checksum) trained in two projects, each on its own labelled nuclei: each project's
    retraining reads its crops from the cache. The cache kept one entry per slide, so each project's training
    replaced the other's and every retraining cut its crops again."""
    import mlcore.infer

    settings.SLIDE_TRAINING_MAX_NUCLEI = 10**6
    first = build_slide_world(owner, name="pilot", tiles_x=4, tiles_y=2)
    second = build_slide_world(owner, name="main", tiles_x=4, tiles_y=2)
    Image.objects.filter(pk=second.image.pk).update(checksum=first.image.checksum)
    # The main project has only some of the slide's nuclei labelled.
    CurrentLabel.objects.filter(nucleus__image=second.image, nucleus_id__in=sorted(second.truth)[::2]).delete()

    def read_again(world):
        return read(world, 10**6, settings, tmp_path)

    assert read_again(first).nuclei != read_again(second).nuclei
    cut = []
    original = mlcore.infer._slide_batch_inputs
    monkeypatch.setattr(mlcore.infer, "_slide_batch_inputs", lambda *a, **k: cut.append(1) or original(*a, **k))
    read_again(first)
    read_again(second)
    assert cut == []   # both from the cache


def test_the_loading_progress_gives_the_slides_crops_their_share_by_nuclei(owner, media_root, settings, tmp_path):
    """Loading is 5 % of a training's progress. A slide counted as one image beside the tiles: with 10 tiles the
    cutting of 20,000 slide crops (minutes) moved the bar from 4.5 % to 5 %. Tiles and slides share it by nuclei."""
    from tests.workers.training_helpers import two_taxonomy_project
    from webapp.datasets.models import LabelSet

    project = two_taxonomy_project(owner, tmp_path / "tiles", images=2, nuclei=10)
    colon, breast = LabelSet.objects.get(project=project, name="colon"), LabelSet.objects.get(project=project,
                                                                                            name="breast")
    world = build_slide_world(owner, project=project, label_sets=(breast, colon), tiles_x=4, tiles_y=2)
    tiles = sum(Image.objects.filter(project=project, slide_file="").values_list("nucleus_count", flat=True))
    slide = len(world.truth)
    assert slide > 5 * tiles
    reports = []
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "predict_tta": False, "stages": ["sparse"]}})
    run_training(job, lambda percent, **details: reports.append((percent, details.get("message") or "")),
                 lambda: False)
    images = [percent for percent, message in reports if message.startswith("image ")]
    cut = [percent for percent, message in reports if "labelled nuclei cut" in message]
    assert images and cut
    assert images[-1] == pytest.approx(5.0 * tiles / (tiles + slide))
    assert cut[-1] == pytest.approx(5.0) and cut == sorted(cut)


def test_reviews_undone_after_a_cancel_do_not_stop_its_resume_but_a_deleted_dataset_does(owner, media_root, settings,
                                                                                        tmp_path):
    """A resume reads the nuclei as of the stopped training's data snapshot; a reviewer's undo after the stop changes
    labels, not that data. The undo of a slide nucleus's first review (its current label removed, no row appended)
    dropped the nucleus from the nuclei labelled as of the snapshot, and a nucleus whose review had been undone before
    the snapshot came back with a new review: each failed the resume with "the project has N nuclei, job J trained
    on M: its data changed". Tile nuclei beside them are all read whatever their labels."""
    from tests.workers.training_helpers import two_taxonomy_project
    from webapp.datasets.models import Dataset, Label, LabelSet
    from webapp.review.operations import do_decide, do_undo
    from webapp.training.operations import NotResumable

    settings.SLIDE_TRAINING_MAX_NUCLEI = 10**6
    project = two_taxonomy_project(owner, tmp_path / "tiles", images=2, nuclei=12)
    breast, colon = LabelSet.objects.get(project=project, name="breast"), LabelSet.objects.get(project=project,
                                                                                               name="colon")
    world = build_slide_world(owner, project=project, label_sets=(breast, colon), tiles_x=4, tiles_y=2)

    def current(nucleus, label_set):
        row = CurrentLabel.objects.filter(nucleus=nucleus, label_set=label_set).first()
        return row.label_id if row else None

    # Slide nuclei labelled only by a review of theirs (no ground truth, as from an instance mask).
    only_reviewed = [Nucleus.objects.get(pk=pk) for pk in sorted(world.beta_reviews)[:3]]
    Label.objects.filter(nucleus__in=only_reviewed, label_set=world.alpha).delete()
    first_review, undone_before = only_reviewed[0], only_reviewed[1]
    Label.objects.filter(nucleus=undone_before).delete()
    # Before the training: a first review of a nucleus, taken back (it is unlabelled at the snapshot).
    label = do_decide(undone_before, world.beta, 1, user=owner, expected_label_id=None).label
    do_undo(undone_before, world.beta, user=owner)
    assert not CurrentLabel.objects.filter(nucleus=undone_before).exists() and Label.objects.get(pk=label.pk)

    options = {**FAST, "stages": ["sparse", "completion"], "predict_tta": False}
    first, trained = stopped_after_stage_1(project, owner, options)
    tile_nuclei = Nucleus.objects.filter(image__project=project, image__slide_file="").count()
    assert trained == tile_nuclei + len(world.truth) - 1   # the slide's unlabelled nucleus is not read

    # After the stop: the first review of a nucleus labelled by it alone is undone (the nucleus unlabelled now)...
    do_undo(first_review, world.beta, user=owner)
    assert not CurrentLabel.objects.filter(nucleus=first_review).exists()
    # ...the nucleus unlabelled at the snapshot is reviewed again...
    do_decide(undone_before, world.beta, 0, user=owner, expected_label_id=None)
    # ...and reviews of a tile's and a slide's labelled nuclei are made and undone.
    tile_nucleus = Nucleus.objects.filter(image__project=project, image__slide_file="").order_by("id").first()
    slide_nucleus = Nucleus.objects.get(pk=sorted(world.truth)[-1])
    for nucleus in (tile_nucleus, slide_nucleus):
        for label_set in (breast, colon):
            do_decide(nucleus, label_set, 1, user=owner, expected_label_id=current(nucleus, label_set))
            do_undo(nucleus, label_set, user=owner)

    resumed = resume_job(first, owner, options)
    result = run_training(resumed, lambda *a, **k: None, lambda: False)
    assert ModelVersion.objects.get(pk=result["model_version_id"]).training_data["nuclei"] == trained

    # A real change of the data is still refused, saying so: the slide's dataset deleted.
    Job.objects.filter(pk=resumed.pk).update(state=Job.State.SUCCEEDED)
    again, _ = stopped_after_stage_1(project, owner, options)
    Dataset.objects.filter(pk=world.dataset.pk).delete()
    refused = resume_job(again, owner, options)
    with pytest.raises(NotResumable, match=f"the project has {tile_nuclei} nuclei, job {again.pk} trained on "
                                           f"{trained}: its data changed, so start a new training"):
        run_training(refused, lambda *a, **k: None, lambda: False)
