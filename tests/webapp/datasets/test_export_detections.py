"""Dataset and project exports through the API: QuPath detections (GeoJSON), predictions in COCO, and
COCO in a label set that is not the dataset's own. Every test reads the downloaded file back and
compares it with the rows in the database."""

import io
import json
import zipfile

import pytest

from tests.qupath_geojson import check_qupath_feature_collection, covered_area
from tests.webapp.viewer_project import ALPHA_CLASSES, BETA_CLASSES, add_predictions, prediction_disagreement
from webapp.datasets import export
from webapp.datasets.models import CurrentLabel, LabelClass, Nucleus
from webapp.training.models import Prediction

pytestmark = pytest.mark.django_db


def download_geojson(client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/geo+json"
    assert response.streaming  # never built whole in memory
    return json.loads(b"".join(response.streaming_content))


def colors_of(label_set) -> dict[str, list[int]]:
    return {c.name: [int(c.color[i:i + 2], 16) for i in (1, 3, 5)]
            for c in LabelClass.objects.filter(label_set=label_set)}


def assert_outlines_match_the_database(features):
    """Each tile nucleus's shape is exact: its closed rings along its pixels' edges cover as many pixels as the
    nucleus has (the stored outlines, simplified for drawing, lost up to 60 % of a small nucleus)."""
    areas = dict(Nucleus.objects.filter(pk__in=[f["properties"]["nucleus_id"] for f in features])
                 .values_list("id", "area"))
    assert features
    for feature in features:
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        assert all(ring[0] == ring[-1] for polygon in polygons for ring in polygon)
        assert covered_area(geometry) == areas[feature["properties"]["nucleus_id"]], feature["properties"]


def test_dataset_geojson_is_qupath_detections_with_current_classes_and_prediction_measurements(
        api_client_for, viewer_project, member):
    vp = viewer_project
    expected_predictions = add_predictions(vp)
    collection = download_geojson(api_client_for(member), f"/api/datasets/{vp.alpha.pk}/export/detections.geojson")

    assert check_qupath_feature_collection(collection, "detection") == []
    features = collection["features"]
    nuclei = {n.pk: n for n in Nucleus.objects.filter(image__dataset=vp.alpha).select_related("image")}
    assert sorted(f["properties"]["nucleus_id"] for f in features) == sorted(nuclei)  # every nucleus, once
    assert_outlines_match_the_database(features)

    current = dict(CurrentLabel.objects.filter(label_set=vp.alpha_set).values_list("nucleus_id", "class_index"))
    colors = colors_of(vp.alpha_set)
    for feature in features:
        properties = feature["properties"]
        nucleus = nuclei[properties["nucleus_id"]]
        assert (properties["dataset"], properties["image"], properties["instance_id"]) == (
            "alpha", nucleus.image.name, nucleus.instance_id)
        name = ALPHA_CLASSES[current[nucleus.pk]]  # the reviews count: the current label
        assert properties["classification"] == {"name": name, "color": colors[name]}
        measurements = properties["measurements"]
        assert measurements[export.MEASUREMENT_AREA] == nucleus.area
        if nucleus.image_id == vp.image.pk:  # only the first image was predicted
            assert measurements[export.MEASUREMENT_PROBABILITY] == pytest.approx(
                expected_predictions[nucleus.pk, vp.alpha_set.pk][1])
            assert measurements[export.MEASUREMENT_DISAGREEMENT] == pytest.approx(
                prediction_disagreement(nucleus.instance_id))
        else:
            assert set(measurements) == {export.MEASUREMENT_AREA}
    # The reviewed nucleus shows its review, not its ground truth.
    first = next(f for f in features if f["properties"]["nucleus_id"] in vp.reviewed
                 and vp.alpha_set.pk in vp.reviewed[f["properties"]["nucleus_id"]])
    assert first["properties"]["classification"]["name"] == ALPHA_CLASSES[
        vp.reviewed[first["properties"]["nucleus_id"]][vp.alpha_set.pk]]


def test_project_geojson_of_predictions_in_another_label_set(api_client_for, viewer_project, member):
    vp = viewer_project
    expected = add_predictions(vp)
    url = f"/api/projects/{vp.project.pk}/export/detections.geojson?label_set=beta-types&source=prediction"
    response = api_client_for(member).get(url)
    assert response["Content-Disposition"] == 'attachment; filename="Colon_merge-beta-types-prediction.geojson"'
    collection = json.loads(b"".join(response.streaming_content))
    assert check_qupath_feature_collection(collection) == []
    features = collection["features"]
    assert len(features) == Nucleus.objects.filter(image__project=vp.project).count()
    assert {f["properties"]["dataset"] for f in features} == {"alpha", "beta"}
    assert_outlines_match_the_database(features)
    colors = colors_of(vp.beta_set)
    predicted = dict(Prediction.objects.filter(label_set=vp.beta_set).values_list("nucleus_id", "class_index"))
    assert predicted
    for feature in features:
        properties = feature["properties"]
        if properties["nucleus_id"] in predicted:
            name = BETA_CLASSES[expected[properties["nucleus_id"], vp.beta_set.pk][0]]
            assert properties["classification"] == {"name": name, "color": colors[name]}
            assert properties["measurements"][export.MEASUREMENT_PROBABILITY] == pytest.approx(
                expected[properties["nucleus_id"], vp.beta_set.pk][1])
        else:  # not predicted: no class from this source
            assert "classification" not in properties


def test_one_image_of_a_dataset_for_qupath(api_client_for, viewer_project, member):
    vp = viewer_project
    client = api_client_for(member)
    url = f"/api/datasets/{vp.alpha.pk}/export/detections.geojson?image={vp.image.name}"
    response = client.get(url)
    assert response["Content-Disposition"] == (
        f'attachment; filename="alpha-{vp.image.name}-alpha-types-current.geojson"')
    collection = json.loads(b"".join(response.streaming_content))
    assert check_qupath_feature_collection(collection) == []
    assert sorted(f["properties"]["nucleus_id"] for f in collection["features"]) == sorted(
        Nucleus.objects.filter(image=vp.image).values_list("id", flat=True))
    missing = client.get(f"/api/datasets/{vp.alpha.pk}/export/detections.geojson?image=nope")
    assert missing.status_code == 404 and "nope" in json.loads(missing.content)["detail"]


def test_review_and_ground_truth_sources_and_small_chunks(viewer_project):
    vp = viewer_project

    def classes(source, **kwargs):
        collection = json.loads("".join(export.detections_geojson_text(vp.project, vp.beta_set, source, vp.alpha,
                                                                       **kwargs)))
        return {f["properties"]["nucleus_id"]: f["properties"].get("classification", {}).get("name")
                for f in collection["features"]}

    reviewed = {n: BETA_CLASSES[per[vp.beta_set.pk]] for n, per in vp.reviewed.items() if vp.beta_set.pk in per}
    assert {n: c for n, c in classes("review").items() if c} == reviewed
    assert {n: c for n, c in classes("current").items() if c} == reviewed
    assert not any(classes("ground_truth").values())  # alpha has no ground truth in the beta taxonomy
    assert classes("current", chunk=5) == classes("current")


def test_detections_errors_are_json(api_client_for, viewer_project, member, outsider, owner):
    from webapp.projects.operations import do_create_project

    vp = viewer_project
    client = api_client_for(member)
    base = f"/api/projects/{vp.project.pk}/export/detections.geojson"
    bad_source = client.get(base + "?source=guess", HTTP_ACCEPT="application/geo+json")
    assert bad_source.status_code == 400 and "source" in json.loads(bad_source.content)["errors"]
    unknown = client.get(base + "?label_set=nope")
    # The same answer as the review API's: the parameter is wrong (400), and the label sets there are named.
    assert unknown.status_code == 400
    assert json.loads(unknown.content)["detail"].startswith(
        "label_set: no label set named 'nope' in this project (label sets: alpha-types")
    assert api_client_for(outsider).get(base).status_code == 404
    assert api_client_for(outsider).get(f"/api/datasets/{vp.alpha.pk}/export/detections.geojson").status_code == 404
    empty = do_create_project("Empty", actor=owner)   # no nucleus, no label set: an empty collection
    nothing = api_client_for(owner).get(f"/api/projects/{empty.pk}/export/detections.geojson")
    assert nothing.status_code == 200 and json.loads(b"".join(nothing.streaming_content))["features"] == []


def read_coco(response) -> dict:
    assert response.status_code == 200, getattr(response, "content", b"")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        return json.loads(archive.read("annotations.json"))


def test_coco_in_another_label_set_and_from_predictions(api_client_for, viewer_project, member):
    vp = viewer_project
    expected = add_predictions(vp)
    client = api_client_for(member)

    reviews = read_coco(client.get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip?label_set=beta-types&source=review"))
    assert [c["name"] for c in reviews["categories"]] == BETA_CLASSES
    assert reviews["info"]["label_set"] == "beta-types" and reviews["info"]["source"] == "review"
    assert len(reviews["annotations"]) == vp.alpha.nucleus_count
    labelled = sorted(reviews["categories"][a["category_id"] - 1]["name"]
                      for a in reviews["annotations"] if a["category_id"])
    assert labelled == sorted(BETA_CLASSES[per[vp.beta_set.pk]] for per in vp.reviewed.values()
                              if vp.beta_set.pk in per)

    predictions = read_coco(client.get(
        f"/api/datasets/{vp.alpha.pk}/export/coco.zip?label_set=beta-types&source=prediction"))
    first_image = next(r["id"] for r in predictions["images"] if r["file_name"].startswith(vp.image.name))
    boxes = {(n.x0, n.y0, n.x1 - n.x0, n.y1 - n.y0): n.pk for n in Nucleus.objects.filter(image=vp.image)}
    for annotation in predictions["annotations"]:
        if annotation["image_id"] == first_image:
            nucleus = boxes[tuple(annotation["bbox"])]
            assert annotation["category_id"] == expected[nucleus, vp.beta_set.pk][0] + 1
        else:  # the second image was not predicted
            assert annotation["category_id"] == 0
    assert sum(a["image_id"] == first_image for a in predictions["annotations"]) == len(boxes)


def test_a_project_of_unlabelled_nuclei_exports_them_without_classes(api_client_for, owner, media_root, tmp_path):
    """It answered 400 "this project has no label set yet": detections without classes are what QuPath shows of
    a StarDist or HoVer-Net segmentation before anyone classified it."""
    from django.test import override_settings

    from mlcore.synthetic import generate_dataset
    from webapp.datasets.importing import do_import_dataset
    from webapp.projects.operations import do_create_project

    project = do_create_project("masks only", actor=owner)
    root = generate_dataset(tmp_path / "d", "seed", n_images=2, nuclei_per_image=6, seed=3, size=(64, 64))
    with override_settings(IMPORT_PROCESSES=1):
        dataset = do_import_dataset(project, name="segmented", format="seed", path=root, actor=owner, labelled=False)
    client = api_client_for(owner)
    for url in (f"/api/datasets/{dataset.pk}/export/detections.geojson",
                f"/api/projects/{project.pk}/export/detections.geojson"):
        response = client.get(url)
        assert response.status_code == 200, response.content
        assert 'filename="segmented-nuclei.geojson"' in response["Content-Disposition"] or "project" in url
        collection = json.loads(b"".join(response.streaming_content))
        assert check_qupath_feature_collection(collection) == []
        features = collection["features"]
        assert len(features) == Nucleus.objects.filter(image__dataset=dataset).count() == dataset.nucleus_count
        assert not any("classification" in f["properties"] for f in features)
        assert all(f["properties"]["measurements"]["Area px^2"] > 0 for f in features)


def test_a_tile_whose_mask_is_missing_is_exported_with_its_stored_outlines(api_client_for, viewer_project, member):
    """Its mask unreadable, the streamed export stopped after '{"type":"FeatureCollection","features":[' with a 200."""
    from webapp.core import media
    from webapp.datasets.models import Image

    image = Image.objects.filter(project=viewer_project.project).order_by("id").first()
    media.local_path(image.mask_file).unlink()
    response = api_client_for(member).get(f"/api/projects/{viewer_project.project.pk}/export/detections.geojson")
    body = json.loads(b"".join(response.streaming_content))
    assert response.status_code == 200
    assert len(body["features"]) == Nucleus.objects.filter(image__project=viewer_project.project).count()
    # The stored outlines (OpenCV's, clockwise as written) run counter-clockwise as RFC 7946 asks, as the exact
    # shapes do.
    assert check_qupath_feature_collection(body) == []


def test_a_nucleus_in_two_pieces_exports_as_a_multipolygon_qupath_reads_back(api_client_for, owner, media_root,
                                                                              tmp_path):
    """A nucleus whose mask is in two pieces (cut by a fold, or two pieces that one id joined) is one Feature with
    a MultiPolygon, each of its polygons held to the rules of a Polygon (closed rings, the outer one
    counter-clockwise, holes clockwise); pieces that touch only at a corner are two polygons too. Both GeoJSON
    exports read back to the same pixels."""
    import numpy as np
    from django.test import override_settings

    from mlcore.readers import read_dataset
    from mlcore.writers import save_rgb
    from webapp.datasets.importing import do_import_dataset
    from webapp.projects.operations import do_create_project

    mask = np.zeros((24, 24), np.int32)
    mask[2:6, 2:6] = mask[10:14, 12:16] = 1      # two pieces far apart
    mask[16:23, 1:8] = 2
    mask[18:21, 3:6] = 0                          # a hole
    mask[19, 4] = 1                               # and a third piece of nucleus 1 inside it
    mask[20, 15] = mask[21, 16] = 3               # two pixels touching at a corner
    root = tmp_path / "pieces"
    for folder in ("images", "masks", "types"):
        (root / folder).mkdir(parents=True)
    save_rgb(root / "images" / "tile.png", np.full((24, 24, 3), 180, np.uint8))
    np.save(root / "masks" / "tile.npy", mask)
    np.save(root / "types" / "tile.npy", np.array([[1, 0], [2, 1], [3, 0]]))
    (root / "classes.json").write_text(json.dumps({"classes": ["tumor", "immune"]}))
    project = do_create_project("pieces", actor=owner)
    with override_settings(IMPORT_PROCESSES=1):
        dataset = do_import_dataset(project, name="pieces", format="seed", path=root, actor=owner)
    image = dataset.images.get()
    client = api_client_for(owner)

    detections = download_geojson(client, f"/api/datasets/{dataset.pk}/export/detections.geojson")
    per_image = client.get(f"/api/images/{image.pk}/export.geojson?label_set=pieces")
    assert per_image.status_code == 200, per_image.content
    per_image = json.loads(per_image.content)
    for collection, object_type in ((detections, "detection"), (per_image, "annotation")):
        assert check_qupath_feature_collection(collection, object_type) == []
        shapes = {f["properties"]["instance_id"]: f["geometry"] for f in collection["features"]}
        assert sorted(shapes) == [1, 2, 3]
        assert shapes[1]["type"] == "MultiPolygon" and len(shapes[1]["coordinates"]) == 3
        assert shapes[2]["type"] == "Polygon" and len(shapes[2]["coordinates"]) == 2   # its hole
        assert shapes[3]["type"] == "MultiPolygon" and len(shapes[3]["coordinates"]) == 2
        assert {i: covered_area(g) for i, g in shapes.items()} == {1: 33, 2: 40, 3: 2}
    assert_outlines_match_the_database(detections["features"])

    # QuPath's reading of them, as the tile reader fills them: the nuclei pixel for pixel.
    for number, collection in enumerate((detections, per_image)):
        folder = tmp_path / f"read-{number}"
        folder.mkdir()
        save_rgb(folder / "tile.png", np.full((24, 24, 3), 180, np.uint8))
        (folder / "tile.geojson").write_text(json.dumps(collection))
        read = read_dataset("geojson", folder).images[0]
        assert read.left_out == {}
        np.testing.assert_array_equal(read.instance_map, mask)
