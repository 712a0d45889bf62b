"""Imports prepare images in worker processes: the same rows and files as in one process, nothing left
behind when an image is bad or a worker dies, and the one-pass geometry equals mlcore's."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from django.conf import settings

from mlcore.readers import read_dataset
from mlcore.synthetic import generate_dataset
from mlcore.types import DataError
from mlcore.writers import nucleus_geometry, nucleus_outlines
from tests.webapp.dataset_helpers import media_files, project_files, staging_leftovers, upload_and_wait, zip_folder
from webapp.datasets import preparing
from webapp.datasets.importing import do_import_dataset
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelSet, Nucleus
from webapp.projects.operations import do_create_project

CLASSES = ["tumour", "immune", "stroma"]


@pytest.fixture(scope="module")
def hovernet_folder(tmp_path_factory) -> Path:
    """Seven 128 x 128 HoVer-Net tiles, a fifth of the nuclei unlabelled."""
    return generate_dataset(tmp_path_factory.mktemp("pool") / "tiles", format="hovernet", n_images=7,
                            nuclei_per_image=25, class_names=CLASSES, size=(128, 128), seed=11,
                            unlabelled_fraction=0.2)


def snapshot(dataset: Dataset) -> dict:
    """Everything an import stored, without database ids and folder names."""
    images = {}
    for image in Image.objects.filter(dataset=dataset).order_by("name"):
        media = Path(settings.MEDIA_ROOT)
        mask = cv2.imread(str(media / image.mask_file), cv2.IMREAD_UNCHANGED)
        images[image.name] = {
            "row": (image.width, image.height, image.checksum, image.group, image.nucleus_count,
                    Path(image.file).name, Path(image.mask_file).name, Path(image.thumbnail_file).name),
            "image bytes": (media / image.file).read_bytes(),
            "thumbnail bytes": (media / image.thumbnail_file).read_bytes(),
            "mask": mask.tolist(),
            "nuclei": list(Nucleus.objects.filter(image=image).order_by("instance_id").values_list(
                "instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area", "outline")),
            "current": list(CurrentLabel.objects.filter(nucleus__image=image).order_by("nucleus__instance_id")
                            .values_list("nucleus__instance_id", "label_set__name", "class_index", "source",
                                         "label__class_index")),
            "labels": list(Label.objects.filter(nucleus__image=image).order_by("nucleus__instance_id")
                           .values_list("nucleus__instance_id", "class_index", "source", "author__username")),
        }
    return images


def expected_nuclei(folder: Path) -> dict[str, list]:
    """The rows the importer stored before it had worker processes: mlcore's geometry and outlines."""
    result = {}
    for annotated in read_dataset("hovernet", folder).images:
        geometry, outlines = nucleus_geometry(annotated.instance_map), nucleus_outlines(annotated.instance_map)
        result[annotated.name] = [(int(g["id"]), int(g["x0"]), int(g["y0"]), int(g["x1"]), int(g["y1"]),
                                   float(g["cx"]), float(g["cy"]), int(g["area"]), outlines[int(g["id"])])
                                  for g in geometry]
    return result


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_an_import_in_a_real_worker_uses_processes_and_stores_what_one_process_stores(
        hovernet_folder, owner, api_client_for, celery_worker_process, settings):
    project = do_create_project("pool", actor=owner)
    job = upload_and_wait(api_client_for(owner), project.pk, zip_folder(hovernet_folder), celery_worker_process,
                          name="tiles", format="hovernet")
    assert job.state == "succeeded", job.error
    assert "preparing 7 images in 2 worker processes" in celery_worker_process.log()
    pooled = snapshot(Dataset.objects.get(project=project, name="tiles"))

    settings.IMPORT_PROCESSES = 1  # here, in the test process: no worker processes
    other = do_create_project("one process", actor=owner)
    single = snapshot(do_import_dataset(other, name="tiles", format="hovernet", path=hovernet_folder, actor=owner))
    # An upload's files are hard-linked out of its staging folder; a folder imported from elsewhere is copied,
    # so that its files never share their bytes with the media folder.
    assert all(path.stat().st_nlink == 1 for path in (hovernet_folder / "Images").iterdir())

    assert pooled == single
    assert sorted(pooled) == [f"tile_{i:04d}" for i in range(7)]
    expected = expected_nuclei(hovernet_folder)
    unlabelled = 0
    for name, image in pooled.items():
        assert image["nuclei"] == expected[name]
        labelled = {row[0] for row in image["current"]}
        unlabelled += len(image["nuclei"]) - len(labelled)
        assert [(i, c, s) for i, _, c, s, _ in image["current"]] == [(i, c, s) for i, c, s, _ in image["labels"]]
        assert all(author == "owner" and source == "ground_truth" for _, _, source, author in image["labels"])
    assert unlabelled > 0  # the unlabelled fifth has nuclei but no labels
    assert len(project_files(project.pk)) == 3 * 7


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_bad_image_prepared_by_a_worker_process_leaves_nothing_behind(hovernet_folder, owner, api_client_for,
                                                                         celery_worker_process, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(hovernet_folder, broken)
    victim = sorted((broken / "Images").iterdir())[4]
    victim.write_bytes(b"not an image at all")
    project = do_create_project("broken", actor=owner)
    before = media_files()
    job = upload_and_wait(api_client_for(owner), project.pk, zip_folder(broken), celery_worker_process,
                          name="broken", format="hovernet")
    assert job.state == "failed"
    assert f"Images/{victim.name}" in job.error and "not an image" in job.error, job.error
    assert not Dataset.objects.filter(project=project).exists()
    assert not Image.objects.filter(project=project).exists()
    assert not LabelSet.objects.filter(project=project).exists()
    assert media_files() == before and not project_files(project.pk)
    assert not staging_leftovers(job)


@pytest.mark.django_db
def test_a_worker_process_that_dies_fails_the_import_and_leaves_nothing(hovernet_folder, owner, settings,
                                                                        monkeypatch):
    settings.IMPORT_PROCESSES = 2
    real = preparing.prepare_image

    def dies_on_the_fourth(annotated, folder, as_text):
        if annotated.name == "tile_0003":
            os._exit(3)  # as if killed (out of memory): no answer, no exception
        return real(annotated, folder, as_text)

    monkeypatch.setattr(preparing, "prepare_image", dies_on_the_fourth)  # workers are forked: they see it
    project = do_create_project("lost", actor=owner)
    before, children = media_files(), {p.pid for p in psutil.Process().children()}
    with pytest.raises(preparing.ImportWorkerLost, match="exit code 3"):
        do_import_dataset(project, name="lost", format="hovernet", path=hovernet_folder, actor=owner)
    assert not Dataset.objects.filter(project=project).exists()
    assert not Nucleus.objects.filter(image__project=project).exists()
    assert media_files() == before
    assert {p.pid for p in psutil.Process().children()} == children  # every worker stopped and reaped


@pytest.mark.django_db
def test_a_cancel_during_the_import_stops_the_worker_processes_before_the_files_are_removed(
        hovernet_folder, owner, settings):
    settings.IMPORT_PROCESSES = 2

    class Cancelled(Exception):
        pass

    def progress(percent, message):
        if "image 2/" in message:
            raise Cancelled()

    project = do_create_project("cancelled", actor=owner)
    before, children = media_files(), {p.pid for p in psutil.Process().children()}
    with pytest.raises(Cancelled):
        do_import_dataset(project, name="cancelled", format="hovernet", path=hovernet_folder, actor=owner,
                          progress=progress)
    assert {p.pid for p in psutil.Process().children()} == children
    assert media_files() == before  # no worker wrote a file after the folder was removed
    assert not Image.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_an_error_while_a_batch_is_written_fails_the_import_and_leaves_nothing(hovernet_folder, owner, settings,
                                                                               monkeypatch):
    """On PostgreSQL batches are written in a background thread: its error is the import's."""
    from webapp.datasets import bulk, importing

    settings.IMPORT_PROCESSES = 2
    monkeypatch.setattr(importing, "BATCH_NUCLEI", 40)  # several batches
    written = []

    def failing(write):
        def wrapper(model, columns, rows, **kwargs):
            if model is Nucleus:
                written.append(model)
                if len(written) == 2:
                    raise RuntimeError("the disk is full")
            return write(model, columns, rows, **kwargs)
        return wrapper

    monkeypatch.setattr(bulk, "copy_text", failing(bulk.copy_text))
    monkeypatch.setattr(bulk, "insert_rows", failing(bulk.insert_rows))
    project = do_create_project("write error", actor=owner)
    before, children = media_files(), {p.pid for p in psutil.Process().children()}
    with pytest.raises(RuntimeError, match="the disk is full"):
        do_import_dataset(project, name="tiles", format="hovernet", path=hovernet_folder, actor=owner)
    assert not Dataset.objects.filter(project=project).exists()
    assert not Image.objects.filter(project=project).exists()
    assert not LabelSet.objects.filter(project=project).exists()
    assert media_files() == before
    assert {p.pid for p in psutil.Process().children()} == children
    Dataset.objects.exists()  # the connection is usable after the rollback


@pytest.mark.django_db
@pytest.mark.parametrize("processes", [1, 2])
def test_the_first_bad_image_in_order_is_named(hovernet_folder, owner, settings, tmp_path, processes):
    import shutil

    settings.IMPORT_PROCESSES = processes
    broken = tmp_path / "broken"
    shutil.copytree(hovernet_folder, broken)
    images = sorted((broken / "Images").iterdir())
    for victim in (images[2], images[5]):
        victim.write_bytes(b"junk")
    project = do_create_project("order", actor=owner)
    before = media_files()
    with pytest.raises(DataError) as caught:
        do_import_dataset(project, name="order", format="hovernet", path=broken, actor=owner)
    assert caught.value.path == str(images[2]) and "not an image" in caught.value.problem
    assert media_files() == before


def tricky_maps() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    maps = []
    edge = np.zeros((40, 50), np.int32)
    edge[0:6, 0:7] = 1          # touches two image edges
    edge[30:40, 44:50] = 2      # the opposite corner
    edge[10:14, 20:22] = 5      # ids with gaps
    edge[10:12, 30:33] = 5      # a second, smaller piece of the same instance
    edge[20, 20] = 7            # a single pixel
    edge[22:25, 10:13] = 9
    edge[23, 11] = 0            # with a hole
    maps.append(edge)
    touching = np.zeros((30, 30), np.int32)
    touching[5:15, 5:15] = 1
    touching[5:15, 15:25] = 2   # shares a border with 1
    touching[15:20, 5:25] = 3
    maps.append(touching)
    maps.append(np.zeros((16, 16), np.int32))  # no nuclei
    noisy = rng.integers(0, 6, (24, 24)).astype(np.int32)  # scattered, many-piece instances
    maps.append(noisy)
    return maps


@pytest.mark.parametrize("index", range(4))
def test_one_pass_geometry_and_outlines_equal_mlcore(index):
    instance_map = tricky_maps()[index]
    geometry, outlines = preparing.geometry_and_outlines(instance_map)
    expected = nucleus_geometry(instance_map)
    assert geometry.dtype == expected.dtype and geometry.tobytes() == expected.tobytes()
    by_id = nucleus_outlines(instance_map)
    assert outlines == [by_id[i] for i in expected["id"].tolist()]


def test_one_pass_geometry_equals_mlcore_on_synthetic_tiles(hovernet_folder):
    for annotated in read_dataset("hovernet", hovernet_folder).images:
        geometry, outlines = preparing.geometry_and_outlines(annotated.instance_map)
        assert geometry.tobytes() == nucleus_geometry(annotated.instance_map).tobytes()
        by_id = nucleus_outlines(annotated.instance_map)
        assert outlines == [by_id[i] for i in geometry["id"].tolist()]


def test_thumbnails_keep_the_aspect_and_never_grow():
    wide = np.zeros((100, 400, 3), np.uint8)
    assert preparing.thumbnail(wide).shape == (48, 192, 3)
    small = np.zeros((50, 60, 3), np.uint8)
    assert preparing.thumbnail(small) is small
    tall = np.full((1000, 10, 3), 200, np.uint8)
    thumb = preparing.thumbnail(tall)
    assert thumb.shape == (192, 2, 3) and int(thumb.mean()) == 200


def test_worker_processes_do_not_hang_when_the_importer_used_opencv_before(tmp_path):
    """create_demo draws its tiles with OpenCV, which starts OpenCV's thread pool, then imports with
    forked workers: each hung for ever in the pool's clean-up (run.py --demo never came up)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = f"""
import django, os, sys
django.setup()
from pathlib import Path
from mlcore.readers import open_dataset
from mlcore.synthetic import generate_dataset
from webapp.datasets import preparing
root = generate_dataset({str(tmp_path / 'tiles')!r}, format="seed", n_images=4, nuclei_per_image=80,
                        class_names=["a", "b"], seed=0, size=(512, 512))
assert len(os.listdir("/proc/self/task")) > 1, "OpenCV's pool should be running for this test to mean anything"
out = Path({str(tmp_path / "prepared")!r}); [(out / sub).mkdir(parents=True) for sub in ("images", "masks", "thumbs")]
prepared = list(preparing.prepared_images(open_dataset("seed", root, name="tiles"), out, as_text=False, processes=2))
print("prepared", len(prepared))
"""
    import signal

    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings",
                                    "MEDIA_ROOT": str(tmp_path)})
    try:
        stdout, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the hung workers too
        process.communicate()
        pytest.fail("preparing images in forked workers hung after the importer had used OpenCV")
    assert process.returncode == 0, stderr[-3000:]
    assert "prepared 4" in stdout
