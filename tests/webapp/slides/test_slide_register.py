"""Registering a whole-slide image with its QuPath detections: the API (by path under SLIDES_ROOT, or
uploaded), the job run in-process as tests/webapp/datasets/test_upload_paths.py does, the rows it stores,
and the refusals (paths that leave SLIDES_ROOT, a bad GeoJSON, roles)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image as PILImage

from tests.webapp.slide_helpers import CLASSES, HEIGHT, WIDTH, build_fixture_slide
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelSet, Nucleus
from webapp.projects.slides_folder import do_set_slides_folder
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture
def slides_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.DATA_DIR = tmp_path / "data"  # the tile cache: this test's own
    settings.SLIDES_ROOT = (tmp_path / "share").resolve()
    return settings.SLIDES_ROOT


@pytest.fixture
def fixture_slide(slides_root):
    return build_fixture_slide(slides_root / "cases")


def granted_project(name: str, owner, folder: str = "."):
    """A project whose curators may register slides from ``folder`` of the share (a server administrator's
    grant, webapp.datasets.slide_import.do_set_slides_folder)."""
    project = do_create_project(name, actor=owner)
    do_set_slides_folder(project, folder)
    return project


@pytest.fixture
def project(owner, slides_root, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    return granted_project("slides", owner)


def register(client, project, **data):
    return client.post(f"/api/projects/{project.pk}/slides/", data, format="multipart" if any(
        hasattr(v, "read") for v in data.values()) else "json")


def run(job_id: int) -> Job:
    from workers.tasks import run_job

    run_job(job_id)
    return Job.objects.get(pk=job_id)


def test_a_slide_registered_by_path_stores_its_nuclei_exactly(api_client_for, owner, project, fixture_slide, settings):
    response = register(api_client_for(owner), project, name="case 1", path="cases/case-1.tif",
                        detections_path="cases/case-1.geojson", label_set="qupath")
    assert response.status_code == 202, response.content
    # The job's answer leaves out where the slide lies under SLIDES_ROOT (Job.INTERNAL_PARAMETERS).
    shown = response.json()["job"]["params"]
    assert "slide_path" not in shown and "detections_path" not in shown and "cases/" not in str(shown)
    job = run(response.json()["id"])
    assert job.state == "succeeded", job.error

    dataset = Dataset.objects.get(project=project)
    image = Image.objects.get(dataset=dataset)
    assert dataset.format == "slide" and dataset.image_count == 1 and dataset.nucleus_count == len(fixture_slide.boxes)
    assert (image.slide_file, image.slide_root, image.is_slide) == ("cases/case-1.tif", "slides", True)
    assert (image.width, image.height) == (WIDTH, HEIGHT) and image.mpp == pytest.approx(0.25, rel=1e-3)
    assert image.nucleus_count == len(fixture_slide.boxes) and len(image.checksum) == 64
    # The preview and thumbnail are PNGs in the dataset's own folder; the slide itself stays in the share.
    preview = PILImage.open(Path(settings.MEDIA_ROOT) / image.file)
    assert image.file.startswith(dataset.storage_dir) and max(preview.size) <= 2048
    assert (Path(settings.MEDIA_ROOT) / image.thumbnail_file).is_file()
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.tif"))

    rows = list(Nucleus.objects.filter(image=image).order_by("instance_id").values_list(
        "instance_id", "x0", "y0", "x1", "y1", "area", "centroid_x", "centroid_y", "outline"))
    assert [r[0] for r in rows] == list(range(1, len(fixture_slide.boxes) + 1))
    assert [tuple(r[1:5]) for r in rows] == fixture_slide.boxes
    assert [r[5] for r in rows] == [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in fixture_slide.boxes]
    for (_, x0, y0, x1, y1, _, cx, cy, outline) in rows:
        assert cx == pytest.approx((x0 + x1 - 1) / 2) and cy == pytest.approx((y0 + y1 - 1) / 2)
        assert np.asarray(outline).min(axis=0).tolist() == [x0, y0]

    label_set = LabelSet.objects.get(project=project)
    assert label_set.name == "qupath" and label_set.class_names == list(CLASSES) and dataset.label_set == label_set
    counts = {name: 0 for name in CLASSES}
    for class_index in CurrentLabel.objects.filter(nucleus__image=image).values_list("class_index", flat=True):
        counts[CLASSES[class_index]] += 1
    expected = {name: fixture_slide.classes.count(name) for name in CLASSES}
    assert counts == expected
    assert Label.objects.filter(nucleus__image=image, source="ground_truth").count() == sum(expected.values())
    by_instance = dict(CurrentLabel.objects.filter(nucleus__image=image).values_list("nucleus__instance_id",
                                                                                     "class_index"))
    assert all(by_instance.get(i + 1) == (CLASSES.index(c) if c else None) for i, c in enumerate(fixture_slide.classes))
    assert job.result["nuclei"] == len(fixture_slide.boxes) and job.result["image_id"] == image.pk


def test_a_slide_and_its_detections_can_be_uploaded(api_client_for, owner, project, fixture_slide, settings):
    response = register(api_client_for(owner), project, name="uploaded",
                        slide=SimpleUploadedFile("My slide.tif", fixture_slide.slide.read_bytes()),
                        detections=SimpleUploadedFile("cells.geojson", fixture_slide.geojson.read_bytes()))
    assert response.status_code == 202, response.content
    job = run(response.json()["id"])
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__project=project)
    assert image.slide_root == "media" and image.slide_file.startswith(image.dataset.storage_dir)
    assert (Path(settings.MEDIA_ROOT) / image.slide_file).is_file() and image.name == "My slide"
    assert Nucleus.objects.filter(image=image).count() == len(fixture_slide.boxes)
    assert not list((Path(settings.MEDIA_ROOT) / "staging").glob("*"))  # the staged upload is gone


def test_the_same_slide_twice_in_a_project_is_refused(api_client_for, owner, project, fixture_slide):
    client = api_client_for(owner)
    first = register(client, project, name="a", path="cases/case-1.tif", detections_path="cases/case-1.geojson")
    assert run(first.json()["id"]).state == "succeeded"
    second = register(client, project, name="b", path="cases/case-1.tif", detections_path="cases/case-1.geojson")
    job = run(second.json()["id"])
    assert job.state == "failed" and "case-1.tif" in job.error and "already registered in the project (as 'case-1' in dataset 'a')" in job.error, job.error
    assert Dataset.objects.filter(project=project).count() == 1


@pytest.mark.parametrize("path, problem", [
    ("../outside.tif", "'..' is not allowed"),
    ("/etc/passwd", "not an absolute one"),
    ("cases/missing.tif", "there is no file"),
    ("escape.tif", "outside SLIDES_ROOT"),
])
def test_paths_that_leave_slides_root_are_refused(api_client_for, owner, project, fixture_slide, slides_root, path,
                                                  problem, tmp_path):
    outside = tmp_path / "outside.tif"
    outside.write_bytes(fixture_slide.slide.read_bytes())
    (slides_root / "escape.tif").symlink_to(outside)
    response = register(api_client_for(owner), project, name="x", path=path, detections_path="cases/case-1.geojson")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("path:") and problem in detail, detail
    assert str(tmp_path) not in detail  # never a server path
    assert not Job.objects.exists()


def test_without_slides_root_registering_by_path_says_so(api_client_for, owner, project, fixture_slide, settings):
    settings.SLIDES_ROOT = None
    response = register(api_client_for(owner), project, name="x", path="cases/case-1.tif",
                        detections_path="cases/case-1.geojson")
    assert response.status_code == 400 and "SLIDES_ROOT" in response.json()["detail"]
    assert "upload" in response.json()["detail"]


def test_a_bad_geojson_fails_the_job_naming_the_file_and_leaves_nothing(api_client_for, owner, project, fixture_slide,
                                                                       settings):
    good = json.loads(fixture_slide.geojson.read_text())
    good["features"][20]["geometry"] = {"type": "Point", "coordinates": [1, 2]}  # late in the file: rows were written
    bad = fixture_slide.geojson.with_name("bad.geojson")
    bad.write_text(json.dumps(good))
    response = register(api_client_for(owner), project, name="bad", path="cases/case-1.tif",
                        detections_path="cases/bad.geojson", label_set="qupath")
    job = run(response.json()["id"])
    assert job.state == "failed"
    assert job.error.startswith("bad.geojson") and "feature #20" in job.error, job.error
    assert str(settings.SLIDES_ROOT) not in job.error
    assert not Dataset.objects.exists() and not Image.objects.exists() and not Nucleus.objects.exists()
    assert not LabelSet.objects.exists() and not Label.objects.exists()
    assert not (Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/datasets/job-{job.pk}").exists()
    assert fixture_slide.slide.is_file()  # the share is never touched



def square(x: float, y: float, side: float = 10) -> dict:
    ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection"}}


def test_detections_right_of_or_below_the_slide_are_left_out_and_counted(api_client_for, owner, project,
                                                                         fixture_slide):
    """Another slide's detections, or an offset export: a nucleus beyond the slide's right or bottom edge has no
    tissue; it was stored, classified, exported and queued for review."""
    features = json.loads(fixture_slide.geojson.read_text())["features"]
    features += [square(WIDTH + 5, 10), square(10, HEIGHT + 5), square(99000, 99000), square(WIDTH - 5, 20)]
    detections = fixture_slide.geojson.with_name("offset.geojson")
    detections.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    response = register(api_client_for(owner), project, name="offset", path="cases/case-1.tif",
                        detections_path="cases/offset.geojson", label_set="qupath")
    job = run(response.json()["id"])
    assert job.state == "succeeded", job.error
    image = Image.objects.get()
    # The one across the right edge stays (part of it is on the slide); the three beyond it do not.
    assert image.nucleus_count == len(fixture_slide.boxes) + 1
    assert not Nucleus.objects.filter(image=image, x0__gte=WIDTH).exists()
    assert not Nucleus.objects.filter(image=image, y0__gte=HEIGHT).exists()
    assert (f"3 detections of offset.geojson lie wholly right of or below the {WIDTH:,} x {HEIGHT:,} slide: left out"
            in job.log_tail), job.log_tail

    only_outside = fixture_slide.geojson.with_name("elsewhere.geojson")
    only_outside.write_text(json.dumps({"type": "FeatureCollection", "features": [square(99000, 99000)]}))
    other = granted_project("slides elsewhere", owner)   # the slide is registered once per project
    response = register(api_client_for(owner), other, name="elsewhere", path="cases/case-1.tif",
                        detections_path="cases/elsewhere.geojson", label_set="qupath")
    job = run(response.json()["id"])
    assert job.state == "failed"
    assert job.error.startswith("elsewhere.geojson: none of its detections lies on the slide"), job.error

def test_not_json_fails_with_the_uploaded_name(api_client_for, owner, project, fixture_slide):
    response = register(api_client_for(owner), project, name="bad",
                        slide=SimpleUploadedFile("s.tif", fixture_slide.slide.read_bytes()),
                        detections=SimpleUploadedFile("cells.geojson", b"{this is not json"))
    job = run(response.json()["id"])
    assert job.state == "failed" and job.error.startswith("cells.geojson"), job.error
    assert not Dataset.objects.exists()


def test_only_curators_register_slides(api_client_for, owner, member, outsider, project, fixture_slide):
    data = {"name": "x", "path": "cases/case-1.tif", "detections_path": "cases/case-1.geojson"}
    do_set_membership(project, member, Role.REVIEWER, actor=owner)
    assert register(api_client_for(outsider), project, **data).status_code == 404
    assert register(api_client_for(member), project, **data).status_code == 403
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    assert register(api_client_for(member), project, **data).status_code == 202
    assert register(api_client_for(owner), project, **{**data, "name": "y"}).status_code == 202
    assert Job.objects.filter(kind="import").count() == 2


def test_the_management_command_registers_a_slide(owner, project, fixture_slide, slides_root):
    out = io.StringIO()
    call_command("register_slide", str(project.pk), "cases/case-1.tif", "--detections", str(fixture_slide.geojson),
                 "--name", "by command", "--user", owner.username, stdout=out)
    image = Image.objects.get(dataset__name="by command")
    assert image.slide_root == "slides" and image.nucleus_count == len(fixture_slide.boxes)
    assert "Registered slide" in out.getvalue()
    # The detections' path may be given relative to SLIDES_ROOT, as the slide's is (and as the API takes it).
    relative = fixture_slide.geojson.relative_to(slides_root)
    assert not relative.is_file()   # not from this process's working directory
    call_command("register_slide", "another project", "cases/case-1.tif", "--detections", str(relative),
                 "--name", "relative detections", "--user", owner.username, stdout=io.StringIO())
    assert Image.objects.get(dataset__name="relative detections").nucleus_count == len(fixture_slide.boxes)


def test_a_region_of_a_slide_is_read_from_the_slide(client, owner, project, fixture_slide):
    from webapp.datasets.slide_import import import_slide

    dataset = import_slide(project, name="r", slide_source=fixture_slide.slide, slide_root="slides",
                           slide_name="case-1.tif", detections=fixture_slide.geojson, detections_name="case-1.geojson")
    image = dataset.images.get()
    client.force_login(owner)
    x0, y0, x1, y1 = fixture_slide.boxes[10]
    response = client.get(f"/api/images/{image.pk}/region.png", {"x0": x0 - 4, "y0": y0 - 4, "x1": x1 + 4, "y1": y1 + 4})
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    crop = np.asarray(PILImage.open(io.BytesIO(response.content)).convert("RGB"))
    assert np.array_equal(crop, fixture_slide.pixels[y0 - 4:y1 + 4, x0 - 4:x1 + 4])
    # The nuclei API answers a slide by region (the slide viewer's), never with every nucleus at once.
    nuclei = client.get(f"/api/images/{image.pk}/nuclei/", {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "limit": 1},
                        HTTP_ACCEPT="application/json")
    assert nuclei.status_code == 200, nuclei.content
    assert len(nuclei.json()["nuclei"]) == 1


def test_on_sqlite_the_detections_are_read_before_the_write_transaction(owner, project, fixture_slide, settings,
                                                                       monkeypatch):
    """SQLite lets one transaction write at a time in the whole database: the GeoJSON is read whole before the
    import's transaction begins, which then holds the write lock only while the rows are stored (it was held
    while a 101,432-nucleus file was parsed, 200 s, and every save of the application failed meanwhile).
    PostgreSQL writes each chunk as it is read (other rows' writes do not wait for it)."""
    from django.db import connection

    import mlcore.slide_nuclei as slide_nuclei
    from webapp.datasets.slide_import import import_slide

    read = slide_nuclei.iter_geojson_nuclei
    in_transaction = []

    def watched(*args, **kwargs):
        for nucleus in read(*args, **kwargs):
            in_transaction.append(connection.in_atomic_block)
            yield nucleus

    monkeypatch.setattr(slide_nuclei, "iter_geojson_nuclei", watched)
    dataset = import_slide(project, name="read first", slide_source=fixture_slide.slide, slide_root="slides",
                           slide_name="case-1.tif", detections=fixture_slide.geojson, detections_name="case-1.geojson")
    assert len(in_transaction) == len(fixture_slide.boxes)
    assert set(in_transaction) == {connection.vendor == "postgresql"}
    image = dataset.images.get()
    stored = list(Nucleus.objects.filter(image=image).order_by("instance_id").values_list("instance_id", "x0", "y0",
                                                                                          "x1", "y1"))
    assert stored == [(i, *box) for i, box in enumerate(fixture_slide.boxes, start=1)]
    labelled = dict(CurrentLabel.objects.filter(nucleus__image=image).values_list("nucleus__instance_id", "class_index"))
    assert labelled == {i: CLASSES.index(c) for i, c in enumerate(fixture_slide.classes, start=1) if c is not None}
    # The rows read were kept in an unnamed file of the job's folder: nothing of it is left there.
    assert sorted(p.name for p in (Path(settings.MEDIA_ROOT) / dataset.storage_dir).iterdir()) == [
        "preview.png", "thumbnail.png"]


def test_deleting_a_slide_dataset_removes_its_rows_and_folder_but_not_the_share(api_client_for, owner, project,
                                                                                fixture_slide, settings):
    from webapp.datasets.operations import do_delete_dataset
    from webapp.datasets.slide_import import import_slide

    dataset = import_slide(project, name="gone", slide_source=fixture_slide.slide, slide_root="slides",
                           slide_name="case-1.tif", detections=fixture_slide.geojson, detections_name="case-1.geojson")
    folder = Path(settings.MEDIA_ROOT) / dataset.storage_dir
    assert (folder / "preview.png").is_file()
    from webapp.datasets import slides

    image = dataset.images.get()
    assert slides.tile_bytes(image, slides.deep_zoom(image).generator.level_count - 1, 0, 0) is not None
    tiles = slides.tile_cache.root / str(image.pk)
    assert any(tiles.rglob("*"))  # the viewer's cache holds a tile of it
    summary = do_delete_dataset(dataset)
    assert summary["nuclei"] == len(fixture_slide.boxes)
    assert not Image.objects.exists() and not Nucleus.objects.exists() and not folder.exists()
    assert not tiles.exists()
    assert fixture_slide.slide.is_file() and fixture_slide.geojson.is_file()


def test_a_slide_stitched_from_real_tiles_registers_with_every_nucleus(api_client_for, owner, project, shared_data,
                                                                      slides_root):
    """The fixture slide of mlcore.slide_fixtures (real CoNSeP tiles, about 500 nuclei) through the API."""
    from mlcore.slide_fixtures import build_test_slide
    from mlcore.slide_nuclei import iter_geojson_nuclei

    paths = build_test_slide(shared_data, slides_root / "real", mpp=0.25)
    manifest = json.loads(paths["manifest"].read_text())
    response = register(api_client_for(owner), project, name="consep slide", path=f"real/{paths['slide'].name}",
                        detections_path=f"real/{paths['geojson'].name}")
    job = run(response.json()["id"])
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__project=project)
    assert (image.width, image.height, image.nucleus_count) == (manifest["width"], manifest["height"],
                                                                manifest["nuclei"])
    expected = list(iter_geojson_nuclei(paths["geojson"]))
    stored = list(Nucleus.objects.filter(image=image).order_by("instance_id").values_list("x0", "y0", "x1", "y1",
                                                                                          "area"))
    assert [(*n.bbox, n.area) for n in expected] == [tuple(row) for row in stored]
    classes = image.dataset.label_set.class_names
    counts = {}
    for index in CurrentLabel.objects.filter(nucleus__image=image).values_list("class_index", flat=True):
        counts[classes[index]] = counts.get(classes[index], 0) + 1
    wanted = {}
    for nucleus in expected:
        if nucleus.class_name is not None:
            wanted[nucleus.class_name] = wanted.get(nucleus.class_name, 0) + 1
    assert counts == wanted


def test_an_instance_mask_tiff_gives_the_same_nuclei_as_the_geojson(api_client_for, owner, project, shared_data,
                                                                    slides_root):
    """Nuclei from the slide's instance-mask TIFF (registered by path, and uploaded): the same boxes and
    areas as from its GeoJSON, unlabelled; a mask of another size is refused naming the file."""
    from mlcore.slide_fixtures import build_test_slide
    from mlcore.slide_nuclei import iter_geojson_nuclei, write_label_tiff

    paths = build_test_slide(shared_data, slides_root / "real", mpp=0.25)
    client = api_client_for(owner)
    expected = sorted((*n.bbox, n.area) for n in iter_geojson_nuclei(paths["geojson"]))
    second = granted_project("second", owner)  # a slide is registered once per project
    for target, name, extra in (
            (project, "by path", {"detections_path": f"real/{paths['mask'].name}"}),
            (second, "uploaded", {"detections": SimpleUploadedFile("case mask.tiff", paths["mask"].read_bytes())})):
        response = register(client, target, name=name, path=f"real/{paths['slide'].name}", **extra)
        assert response.status_code == 202, response.content
        job = run(response.json()["id"])
        assert job.state == "succeeded", job.error
        image = Image.objects.get(dataset__name=name)
        stored = sorted(tuple(row) for row in Nucleus.objects.filter(image=image).values_list(
            "x0", "y0", "x1", "y1", "area"))
        assert stored == expected
        assert not CurrentLabel.objects.filter(nucleus__image=image).exists()

    small = slides_root / "real" / "small-mask.tif"
    write_label_tiff(small, np.ones((64, 64), np.uint32))
    other = register(client, project, name="bad mask", path=f"real/{paths['slide'].name}",
                     detections_path="real/small-mask.tif")
    job = run(other.json()["id"])
    assert job.state == "failed" and "small-mask.tif" in job.error and "must match" in job.error
    assert not Dataset.objects.filter(project=project, name="bad mask").exists()


def test_an_upload_over_the_limit_is_refused_before_anything_is_kept(api_client_for, owner, project, fixture_slide,
                                                                     settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = register(api_client_for(owner), project, name="big",
                        slide=SimpleUploadedFile("big.tif", fixture_slide.slide.read_bytes()),
                        detections=SimpleUploadedFile("cells.geojson", fixture_slide.geojson.read_bytes()))
    assert response.status_code == 413 and "MAX_UPLOAD_BYTES" in response.json()["detail"]   # a 400 before
    assert list(response.json()["errors"]) == ["slide"]
    assert "by its path" in response.json()["detail"] and not Job.objects.exists()
    assert not list((Path(settings.MEDIA_ROOT) / "staging").glob("*"))


def test_a_cancel_mid_import_leaves_nothing(api_client_for, owner, project, fixture_slide, settings, monkeypatch):
    """A cancel arrives as the job's progress callback raising (workers.handlers.run_import) once some
    chunks are written: the rows roll back and the job's folder goes."""
    from webapp.datasets import slide_import as slides
    from mlcore.types import Cancelled

    monkeypatch.setattr(slides, "CHUNK_NUCLEI", 10)
    response = register(api_client_for(owner), project, name="c", path="cases/case-1.tif",
                        detections_path="cases/case-1.geojson")
    job = Job.objects.get(pk=response.json()["id"])
    written = []

    def progress(percent, message):
        if "nuclei stored" in message:
            written.append(message)
            if len(written) == 3:
                raise Cancelled()

    with pytest.raises(Cancelled):
        slides.run_slide_import_job(job, progress, lambda line: None)
    assert written == ["10 nuclei stored", "20 nuclei stored", "30 nuclei stored"]  # chunks went to the database...
    assert not Nucleus.objects.exists() and not Image.objects.exists() and not Dataset.objects.exists()  # ...and rolled back
    assert not (Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/datasets/job-{job.pk}").exists()


def test_a_retried_upload_job_gets_back_the_slide_its_killed_attempt_moved(api_client_for, owner, project,
                                                                           fixture_slide, settings):
    import shutil

    response = register(api_client_for(owner), project, name="retried",
                        slide=SimpleUploadedFile("s.tif", fixture_slide.slide.read_bytes()),
                        detections=SimpleUploadedFile("cells.geojson", fixture_slide.geojson.read_bytes()))
    job = Job.objects.get(pk=response.json()["id"])
    # What a worker killed mid-import leaves: the slide moved into the job's folder, no rows committed.
    folder = Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/datasets/job-{job.pk}"
    folder.mkdir(parents=True)
    shutil.move(str(Path(settings.MEDIA_ROOT) / job.params["staging"] / "slide.tif"), folder / "slide.tif")
    (folder / "preview.png").write_bytes(b"half written")
    job = run(job.pk)
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__project=project)
    assert (Path(settings.MEDIA_ROOT) / image.slide_file).is_file() and image.nucleus_count == len(fixture_slide.boxes)


def test_a_file_of_annotations_only_says_so(api_client_for, owner, project, fixture_slide):
    """A per-image GeoJSON export from QuPath marks its objects "annotation": the import said "no detections
    found" of a file holding dozens of polygons."""
    features = json.loads(fixture_slide.geojson.read_text())["features"]
    for feature in features:
        feature["properties"]["objectType"] = "annotation"
    annotations = fixture_slide.geojson.with_name("annotations.geojson")
    annotations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    response = register(api_client_for(owner), project, name="annotated", path="cases/case-1.tif",
                        detections_path="cases/annotations.geojson", label_set="qupath")
    job = run(response.json()["id"])
    assert job.state == "failed"
    assert job.error == (f"annotations.geojson: no detections found in this file, only {len(features)} annotations "
                         "(QuPath's objectType): export the detections or cells, or give these features the "
                         "objectType detection"), job.error


def test_the_same_slide_registered_twice_at_once_is_refused_in_words(api_client_for, owner, project, fixture_slide,
                                                                   monkeypatch):
    """Two registrations at once both passed the check before either stored its image: the second met the
    database's constraint and failed with "IntegrityError: duplicate key value ... image_once_per_project"."""
    from webapp.datasets import slide_import

    client = api_client_for(owner)
    first = register(client, project, name="a", path="cases/case-1.tif", detections_path="cases/case-1.geojson")
    assert run(first.json()["id"]).state == "succeeded"
    checks = []
    real = slide_import._refuse_registered

    def raced(*args):  # the first check ran before the other registration had stored its image
        checks.append(args)
        if len(checks) > 1:
            real(*args)

    monkeypatch.setattr(slide_import, "_refuse_registered", raced)
    second = register(client, project, name="b", path="cases/case-1.tif", detections_path="cases/case-1.geojson")
    job = run(second.json()["id"])
    assert len(checks) == 2 and job.state == "failed", job.error
    assert "already registered in the project (as 'case-1' in dataset 'a')" in job.error, job.error
    assert "Integrity" not in job.error and not Dataset.objects.filter(project=project, name="b").exists()
