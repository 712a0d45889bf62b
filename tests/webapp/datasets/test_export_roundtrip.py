"""Per-image and per-dataset exports, read back: the same nuclei and the same classes.

GeoJSON (QuPath) and COCO exports are read with ``mlcore.readers.read_dataset`` and imported into another
project with ``do_import_dataset``; instances are matched to the originals by overlap (IoU), classes by
name. The N x 2 types table is compared with the source dataset's own types files.
"""

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from mlcore.readers import read_dataset
from tests.webapp.viewer_project import ALPHA_CLASSES, BETA_CLASSES
from webapp.datasets.importing import do_import_dataset, load_mask
from webapp.datasets.models import CurrentLabel, Image, LabelClass, Nucleus
from webapp.datasets.queries import class_indices
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def match_by_iou(original: np.ndarray, other: np.ndarray) -> dict[int, tuple[int, float]]:
    """For every instance of ``original``: the instance of ``other`` that overlaps it most, and their IoU."""
    matches = {}
    for instance_id in np.unique(original[original > 0]):
        mine = original == instance_id
        candidates, overlap = np.unique(other[mine], return_counts=True)
        keep = candidates > 0
        if not keep.any():
            matches[int(instance_id)] = (0, 0.0)
            continue
        best = int(candidates[keep][np.argmax(overlap[keep])])
        theirs = other == best
        matches[int(instance_id)] = (best, float((mine & theirs).sum() / (mine | theirs).sum()))
    return matches


def assert_same_nuclei(original_mask, original_classes, original_names, mask, classes, names, min_iou):
    matches = match_by_iou(original_mask, mask)
    assert len(np.unique(mask[mask > 0])) == len(matches)  # same number of instances
    assert len({m for m, _ in matches.values()}) == len(matches)  # one to one
    for instance_id, (other_id, iou) in matches.items():
        assert iou >= min_iou, (instance_id, iou)
        expected = original_classes.get(instance_id)
        got = classes.get(other_id)
        assert (original_names[expected] if expected is not None else None) == (
            names[got] if got is not None else None), instance_id


def test_geojson_export_reads_back_and_imports_with_the_same_nuclei_and_classes(api_client_for, viewer_project,
                                                                                 member, owner, tmp_path):
    vp = viewer_project
    response = api_client_for(member).get(f"/api/images/{vp.image.pk}/export.geojson?label_set=alpha-types")
    assert response.status_code == 200 and response["Content-Type"] == "application/geo+json"
    assert response["Content-Disposition"] == 'attachment; filename="tile_0000-alpha-types.geojson"'
    collection = json.loads(response.content)
    features = collection["features"]
    colors = {c.name: c.color for c in LabelClass.objects.filter(label_set=vp.alpha_set)}
    for feature in features:  # QuPath's classification: name and [r, g, b]
        classification = feature["properties"]["classification"]
        assert "#{:02x}{:02x}{:02x}".format(*classification["color"]) == colors[classification["name"]]
        assert feature["properties"]["objectType"] == "annotation"

    folder = tmp_path / "qupath"
    folder.mkdir()
    shutil.copyfile(Path(settings.MEDIA_ROOT) / vp.image.file, folder / "tile_0000.png")
    (folder / "tile_0000.geojson").write_bytes(response.content)
    read = read_dataset("geojson", folder)
    original_mask = load_mask(vp.image)
    current = class_indices(vp.image.pk, vp.alpha_set.pk)  # includes the one review in alpha
    assert len(features) == len(current) == vp.image.nucleus_count
    assert_same_nuclei(original_mask, current, ALPHA_CLASSES, read.images[0].instance_map, read.images[0].classes,
                       read.label_set.classes, min_iou=0.9)

    # Import into another project through the app: the same nuclei and classes in the database.
    other = do_create_project("Elsewhere", actor=owner)
    dataset = do_import_dataset(other, name="from-qupath", format="geojson", path=folder, actor=owner)
    image = Image.objects.get(dataset=dataset)
    names = dict(LabelClass.objects.filter(label_set=dataset.label_set).values_list("index", "name"))
    imported = dict(CurrentLabel.objects.filter(nucleus__image=image).values_list("nucleus__instance_id",
                                                                                 "class_index"))
    assert Nucleus.objects.filter(image=image).count() == vp.image.nucleus_count
    assert_same_nuclei(original_mask, current, ALPHA_CLASSES, load_mask(image), imported,
                       [names[i] for i in range(len(names))], min_iou=0.9)


def test_geojson_in_another_label_set_classifies_only_the_nuclei_labelled_there(api_client_for, viewer_project,
                                                                                 member):
    vp = viewer_project
    response = api_client_for(member).get(
        f"/api/images/{vp.image.pk}/export.geojson?label_set=beta-types&object_type=detection")
    features = json.loads(response.content)["features"]
    classified = {f["properties"]["instance_id"]: f["properties"]["classification"]["name"]
                  for f in features if "classification" in f["properties"]}
    nuclei = dict(Nucleus.objects.filter(image=vp.image).values_list("pk", "instance_id"))
    assert classified == {nuclei[pk]: BETA_CLASSES[labels[vp.beta_set.pk]] for pk, labels in vp.reviewed.items()}
    assert len(features) == vp.image.nucleus_count
    assert {f["properties"]["objectType"] for f in features} == {"detection"}

    # Ground truth instead of the current labels: the reviewed nucleus has its original alpha class again.
    first = min(vp.reviewed)
    gt = json.loads(api_client_for(member).get(
        f"/api/images/{vp.image.pk}/export.geojson?label_set=alpha-types&source=ground_truth").content)["features"]
    current = json.loads(api_client_for(member).get(
        f"/api/images/{vp.image.pk}/export.geojson?label_set=alpha-types").content)["features"]
    position = nuclei[first] - 1
    reviewed_name = ALPHA_CLASSES[vp.reviewed[first][vp.alpha_set.pk]]
    assert current[position]["properties"]["classification"]["name"] == reviewed_name
    assert gt[position]["properties"]["classification"] != current[position]["properties"]["classification"]

    bad = api_client_for(member).get(f"/api/images/{vp.image.pk}/export.geojson?label_set=nope")
    assert bad.status_code == 400 and bad.json()["detail"] == (
        "label_set: no label set named 'nope' in this project (label sets: alpha-types, beta-types)")
    bad = api_client_for(member).get(f"/api/images/{vp.image.pk}/export.geojson?source=guess")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("source: must be one of")


def test_types_npy_is_the_original_methods_table(api_client_for, viewer_project, member, tmp_path):
    vp = viewer_project
    api = api_client_for(member)
    response = api.get(f"/api/images/{vp.image.pk}/export/types.npy?label_set=alpha-types&source=ground_truth")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="tile_0000-alpha-types.npy"'
    table = np.load(io.BytesIO(response.content))
    # The seed dataset it was imported from has this very file.
    source = np.load(tmp_path / "sources" / "Colon merge-alpha" / "types" / "tile_0000.npy")
    assert table.dtype == np.int32 and table.shape == (vp.image.nucleus_count, 2)
    assert np.array_equal(table, source)

    current = np.load(io.BytesIO(api.get(f"/api/images/{vp.image.pk}/export/types.npy?label_set=alpha-types").content))
    assert (current != source).any(axis=1).sum() == 1  # the one review in alpha

    beta = np.load(io.BytesIO(api.get(f"/api/images/{vp.image.pk}/export/types.npy?label_set=beta-types").content))
    nuclei = dict(Nucleus.objects.filter(image=vp.image).values_list("pk", "instance_id"))
    expected = sorted((nuclei[pk], labels[vp.beta_set.pk]) for pk, labels in vp.reviewed.items())
    assert beta.tolist() == [list(row) for row in expected]
    assert api.get(f"/api/images/{vp.image.pk}/export/types.npy?label_set=nope").status_code == 400


@pytest.mark.parametrize("segmentation, min_iou", [("rle", 1.0), ("polygon", 1.0)])   # pixel-edge rings: exact
def test_coco_zip_reads_back_and_imports_with_the_same_nuclei_and_classes(api_client_for, viewer_project, member,
                                                                          owner, tmp_path, segmentation, min_iou):
    vp = viewer_project
    response = api_client_for(member).get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip?segmentation={segmentation}")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'filename="alpha-alpha-types-current-coco.zip"' in response["Content-Disposition"]
    folder = tmp_path / "coco"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        images = list(Image.objects.filter(dataset=vp.alpha).order_by("name"))
        assert sorted(archive.namelist()) == ["annotations.json"] + [f"images/{i.name}.png" for i in images]
        for image in images:  # the stored files themselves
            assert archive.read(f"images/{image.name}.png") == (Path(settings.MEDIA_ROOT) / image.file).read_bytes()
        archive.extractall(folder)

    read = read_dataset("coco", folder)
    assert list(read.label_set.classes) == ALPHA_CLASSES
    assert [i.name for i in read.images] == [i.name for i in images]
    for image, got in zip(images, read.images):
        mask = load_mask(image)
        if segmentation == "rle":
            assert np.array_equal(got.instance_map, mask)  # exact
        assert_same_nuclei(mask, class_indices(image.pk, vp.alpha_set.pk), ALPHA_CLASSES, got.instance_map,
                           got.classes, ALPHA_CLASSES, min_iou=min_iou)

    other = do_create_project("Elsewhere", actor=owner)
    dataset = do_import_dataset(other, name="from-coco", format="coco", path=folder, actor=owner)
    assert dataset.label_set.class_names == ALPHA_CLASSES
    assert dataset.image_count == len(images) and dataset.nucleus_count == vp.alpha.nucleus_count
    for image in images:
        copy = Image.objects.get(dataset=dataset, name=image.name)
        assert copy.checksum == image.checksum  # the same pixels
        imported = dict(CurrentLabel.objects.filter(nucleus__image=copy).values_list("nucleus__instance_id",
                                                                                    "class_index"))
        assert_same_nuclei(load_mask(image), class_indices(image.pk, vp.alpha_set.pk), ALPHA_CLASSES,
                           load_mask(copy), imported, ALPHA_CLASSES, min_iou=min_iou)


def test_coco_in_the_other_label_set_leaves_unreviewed_nuclei_unlabelled(api_client_for, viewer_project, member,
                                                                        tmp_path):
    vp = viewer_project
    response = api_client_for(member).get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip?label_set=beta-types"
                                          "&segmentation=compressed_rle")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        content = json.loads(archive.read("annotations.json"))
        archive.extractall(tmp_path / "coco")
    assert [c["name"] for c in content["categories"]] == BETA_CLASSES
    labelled = [a for a in content["annotations"] if a["category_id"]]
    assert len(labelled) == 3 and len(content["annotations"]) == vp.alpha.nucleus_count
    read = read_dataset("coco", tmp_path / "coco")
    assert sum(len(i.classes) for i in read.images) == 3
    assert content["info"]["label_set"] == "beta-types"


def test_exports_can_use_the_predictions(api_client_for, viewer_project, member):
    from tests.webapp.viewer_project import add_predictions

    vp = viewer_project
    expected = add_predictions(vp)
    instance = dict(Nucleus.objects.filter(image=vp.image).values_list("pk", "instance_id"))
    table = np.load(io.BytesIO(api_client_for(member).get(
        f"/api/images/{vp.image.pk}/export/types.npy?label_set=beta-types&source=prediction").content))
    assert table.tolist() == sorted([instance[n], c] for (n, ls), (c, _) in expected.items() if ls == vp.beta_set.pk)
    features = json.loads(api_client_for(member).get(
        f"/api/images/{vp.image.pk}/export.geojson?label_set=beta-types&source=prediction").content)["features"]
    assert all("classification" in f["properties"] for f in features)


def test_the_coco_zip_streams_an_image_at_a_time(api_client_for, viewer_project, member, monkeypatch):
    """The first bytes leave before the first image's mask is read: the whole annotations were built, and the
    zip spooled to disk, before anything was sent (24 s and 840 MB of a web worker for 5,000 tiles)."""
    from webapp.datasets import export

    vp = viewer_project
    read = []
    real = export.load_mask
    monkeypatch.setattr(export, "load_mask", lambda image: read.append(image.pk) or real(image))
    response = api_client_for(member).get(f"/api/datasets/{vp.alpha.pk}/export/coco.zip")
    assert response.streaming and "Content-Length" not in response
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert first.startswith(b"PK") and read == []   # the zip's first header, before any mask is read
    body = first + b"".join(chunks)
    assert len(read) == Image.objects.filter(dataset=vp.alpha).count() > 1
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        content = json.loads(archive.read("annotations.json"))
    assert [a["id"] for a in content["annotations"]] == list(range(1, vp.alpha.nucleus_count + 1))
    assert content["info"]["source"] == "current" and len(content["images"]) == len(read)
