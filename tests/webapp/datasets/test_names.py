"""Label-set, class and dataset names are any printable text: "/" or ".." or markup in a name must not
break a page, a URL or a file path (names stay out of URL segments and paths), and names that cannot be
stored (too long, control characters) are refused with an error naming the field or the file."""

import html
import json
import re
from urllib.parse import unquote

import numpy as np
import pytest

from mlcore.synthetic import generate_dataset
from mlcore.types import DataError
from tests.webapp.dataset_helpers import upload, zip_folder
from webapp.datasets.importing import do_import_dataset
from webapp.datasets.models import Dataset, Image, LabelSet, Nucleus
from webapp.projects.operations import do_create_project

HOSTILE_NAMES = ["a/b", "../../etc", "<script>alert(1)</script>", "Zellkern 細胞 ✓", "x" * 100]


@pytest.fixture
def hostile_project(db, owner, media_root, tmp_path):
    """One dataset per hostile name: the dataset, its label set and its first class all carry it."""
    project = do_create_project("names", actor=owner)
    for number, name in enumerate(HOSTILE_NAMES):
        root = generate_dataset(tmp_path / f"d{number}", "seed", n_images=1, nuclei_per_image=5, seed=number,
                                size=(64, 64), class_names=[name, f"other {number}"])
        do_import_dataset(project, name=name, format="seed", path=root, actor=owner, label_set_name=name)
    return project


@pytest.mark.django_db
def test_every_page_works_with_hostile_names(client, owner, hostile_project):
    project = hostile_project
    assert sorted(LabelSet.objects.filter(project=project).values_list("name", flat=True)) == sorted(HOSTILE_NAMES)
    client.force_login(owner)
    pages = [f"/projects/{project.pk}/"]
    for dataset in Dataset.objects.filter(project=project):
        image = Image.objects.filter(dataset=dataset).first()
        nucleus = Nucleus.objects.filter(image=image).first()
        query = f"?label_set={dataset.label_set.name}"
        pages += [f"/projects/{project.pk}/datasets/{dataset.pk}/", f"/projects/{project.pk}/images/{image.pk}/",
                  f"/projects/{project.pk}/nuclei/{nucleus.pk}/", f"/projects/{project.pk}/review/{query}",
                  f"/projects/{project.pk}/review/gallery/{query}", f"/projects/{project.pk}/review/agreement/{query}"]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)
        text = response.content.decode()
        assert "<script>alert(1)</script>" not in text  # escaped wherever it is shown


@pytest.mark.django_db
def test_the_viewers_types_npy_links_work_for_hostile_names(client, owner, hostile_project):
    project = hostile_project
    client.force_login(owner)
    image = Image.objects.filter(dataset__project=project).first()
    page = client.get(f"/projects/{project.pk}/images/{image.pk}/").content.decode()
    links = [html.unescape(link) for link in re.findall(r'href="(/api/images/\d+/export/types\.npy\?[^"]*)"', page)]
    assert len(links) == len(HOSTILE_NAMES)
    for link in links:
        response = client.get(link)
        assert response.status_code == 200, link
        table = np.load(__import__("io").BytesIO(response.content))
        assert table.ndim == 2 and table.shape[1] == 2
    assert {unquote(link.split("label_set=", 1)[1]) for link in links} == set(HOSTILE_NAMES)


@pytest.mark.django_db
@pytest.mark.parametrize("field, value, problem", [
    ("name", "a" * 201, "no more than 200"),
    ("name", "tab\there", "control character"),
    ("name", "   ", "may not be blank"),
    ("label_set", "b" * 101, "no more than 100"),
    ("label_set", "line\nbreak", "control character"),
])
def test_names_that_cannot_be_stored_are_refused_at_upload(api_client_for, owner, media_root, tmp_path,
                                                           field, value, problem):
    project = do_create_project("refused", actor=owner)
    root = generate_dataset(tmp_path / "d", "seed", n_images=1, nuclei_per_image=3, size=(32, 32))
    fields = {"name": "ok", "format": "seed", field: value}
    response = upload(api_client_for(owner), project.pk, zip_folder(root), **fields)
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}:") and problem in detail, detail


@pytest.mark.django_db
def test_a_class_name_too_long_is_refused_naming_the_file(owner, media_root, tmp_path):
    project = do_create_project("long class", actor=owner)
    root = generate_dataset(tmp_path / "d", "seed", n_images=1, nuclei_per_image=3, size=(32, 32))
    (root / "classes.json").write_text(json.dumps({"classes": ["c" * 101, "short"]}))
    with pytest.raises(DataError, match=r"classes.json: class name 'c+'\.\.\. is 101 characters long"):
        do_import_dataset(project, name="d", format="seed", path=root, actor=owner)
    assert not Dataset.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_a_long_dataset_name_gives_a_label_set_name_that_fits(owner, media_root, tmp_path):
    project = do_create_project("long dataset", actor=owner)
    for number in range(2):
        root = generate_dataset(tmp_path / f"d{number}", "seed", n_images=1, nuclei_per_image=3, size=(32, 32),
                                seed=number, class_names=[f"k{number}", "z"])
        do_import_dataset(project, name=f"{number}" + "n" * 199, format="seed", path=root, actor=owner)
    names = sorted(LabelSet.objects.filter(project=project).values_list("name", flat=True))
    assert [len(n) for n in names] == [100, 100] and len(set(names)) == 2
    # A cut that falls on a space leaves no space at the end of the label set's name, with a suffix too.
    for number, name in enumerate(["s" * 99 + " tail", "t" * 97 + " yy tail 1", "t" * 97 + " yy tail 2"], start=2):
        root = generate_dataset(tmp_path / f"d{number}", "seed", n_images=1, nuclei_per_image=3, size=(32, 32),
                                seed=number, class_names=[f"k{number}", "z"])
        do_import_dataset(project, name=name, format="seed", path=root, actor=owner)
    cut = list(LabelSet.objects.filter(project=project, name__regex="^[st]").order_by("id").values_list("name", flat=True))
    assert cut == ["s" * 99, "t" * 97 + " yy", "t" * 97 + "-2"]


@pytest.mark.django_db(transaction=True, databases="__all__")  # the job reports progress on its own connection
def test_inference_works_when_label_set_and_file_names_are_not_file_names(api_client_for, owner, settings,
                                                                          tmp_path, monkeypatch):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from PIL import Image as PILImage

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet as MLLabelSet
    from webapp.jobs import operations as job_operations
    from webapp.jobs.models import Job
    from webapp.training.models import ModelVersion
    from workers.tasks import run_job

    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # run here, not by a shared worker
    project = do_create_project("inference names", actor=owner)
    model = CrossTrainedModel([MLLabelSet(name, ("x", "y")) for name in HOSTILE_NAMES], "small", {"width": 4})
    save_checkpoint(settings.MEDIA_ROOT / "models" / "v1.pt", model, "sparse", 0, True, TrainConfig())
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    image = np.zeros((48, 48, 3), np.uint8)
    mask = np.zeros((48, 48), np.int32)
    mask[5:15, 5:15], mask[25:40, 20:35] = 1, 2
    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(image).save(png, format="PNG")
    np.save(npy, mask)
    long_name = "t" * 250  # with the suffix, too long for one file name
    response = api_client_for(owner).post(
        f"/api/projects/{project.pk}/infer/", {"image": SimpleUploadedFile(f"{long_name}.png", png.getvalue()),
                                               "mask": SimpleUploadedFile("m.npy", npy.getvalue())},
        format="multipart")
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get(pk=response.json()["id"]).error
    files = {name.rsplit("/", 1)[-1] for name in Job.objects.get(pk=response.json()["id"]).result["files"]}
    assert {"image_set1.npy", "image_set2.npy", "image_set3.npy", "image_Zellkern 細胞 ✓.npy", "image_set5.npy",
            "image.json"} <= files
    # The job's page lists them too (the Classify box that linked them is gone after a reload), each served.
    from django.test import Client
    from django.urls import reverse

    browser = Client()
    browser.force_login(owner)
    job_id = response.json()["id"]
    page = browser.get(f"/jobs/{job_id}/").content.decode()
    for name in files:
        url = reverse("api-job-file", args=[job_id, name])
        assert f'href="{html.escape(url)}"' in page, name
        served = browser.get(url)
        assert served.status_code == 200 and b"".join(served.streaming_content), name


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_an_inference_error_names_the_files_as_they_were_uploaded(owner, api_client_for, tmp_path, settings,
                                                                 monkeypatch):
    """The job stores the mask as "<image>-mask.<suffix>"; an error names the user's own file, and a photograph
    sent as the mask is refused instead of read as thousands of one-pixel nuclei. Such files are refused by the
    request itself (400, the field named), before a job would fail on them."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from PIL import Image as PILImage

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet as MLLabelSet
    from webapp.jobs import operations as job_operations
    from webapp.jobs.models import Job
    from webapp.training.models import ModelVersion

    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # run here, not by a shared worker
    project = do_create_project("inference errors", actor=owner)
    model = CrossTrainedModel([MLLabelSet("set", ("x", "y"))], "small", {"width": 4})
    save_checkpoint(settings.MEDIA_ROOT / "models" / "v1.pt", model, "sparse", 0, True, TrainConfig())
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    png, photo = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(np.zeros((48, 48, 3), np.uint8)).save(png, format="PNG")
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(photo,
                                                                                                  format="PNG")
    client = api_client_for(owner)
    cases = [("tile.png", png.getvalue(), "my outlines.png", photo.getvalue(),
              "my outlines.png: 2304 instances of 1.0 pixels on average: this looks like a photograph"),
             ("tile.png", png.getvalue(), "notzip.zip", b"PK not really", "notzip.zip: not a readable label image"),
             ("scan.png", b"not a png", "mask.npy", b"x", "scan.png: ")]
    for image_name, image_bytes, mask_name, mask_bytes, error in cases:
        response = client.post(f"/api/projects/{project.pk}/infer/", {
            "image": SimpleUploadedFile(image_name, image_bytes), "mask": SimpleUploadedFile(mask_name, mask_bytes)},
            format="multipart")
        assert response.status_code == 400, response.content
        detail = response.json()["detail"]
        field = "image" if error.startswith(image_name) else "mask"
        assert detail.startswith(f"{field}: {error}"), detail
        assert "-mask" not in detail and str(settings.MEDIA_ROOT) not in detail
    assert not Job.objects.filter(kind=Job.Kind.INFER).exists()
    # A mask whose ids exceed its pixels, too (the job would fail on it as well).
    ids = io.BytesIO()
    np.save(ids, np.full((48, 48), 10_000, np.int32))
    response = client.post(f"/api/projects/{project.pk}/infer/", {
        "image": SimpleUploadedFile("tile.png", png.getvalue()), "mask": SimpleUploadedFile("big ids.npy",
                                                                                           ids.getvalue())},
        format="multipart")
    assert response.status_code == 400 and response.json()["detail"].startswith("mask: big ids.npy: instance id")


@pytest.mark.django_db
def test_an_inference_jobs_parameters_name_the_files_as_they_were_uploaded(owner, api_client_for, client, tmp_path,
                                                                          settings, monkeypatch):
    """The parameters showed the names the server stores them under: the mask my_tile_mask.npy as
    "my_tile-mask.npy", and an image whose name is no plain file name under another."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from PIL import Image as PILImage

    from webapp.jobs import operations as job_operations
    from webapp.jobs.models import Job
    from webapp.training.models import ModelVersion

    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(job_operations, "_send", lambda job: None)   # stays queued
    project = do_create_project("inference parameters", actor=owner)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(np.zeros((48, 48, 3), np.uint8)).save(png, format="PNG")
    mask = np.zeros((48, 48), np.int32)
    mask[5:15, 5:15] = 1
    np.save(npy, mask)
    image_name = "a tile named at length, " + "t" * 60 + ".png"   # no plain file name: stored as another
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/", {
        "image": SimpleUploadedFile(image_name, png.getvalue()),
        "mask": SimpleUploadedFile("my_tile_mask.npy", npy.getvalue())}, format="multipart")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.params["image"], job.params["mask"]) != (image_name, "my_tile_mask.npy")   # the server's names
    shown = {"image": image_name, "mask": "my_tile_mask.npy"}
    for answer in (response.json()["job"], api_client_for(owner).get(f"/api/jobs/{job.pk}/").json()):
        assert {key: answer["params"][key] for key in ("image", "mask")} == shown, answer["params"]
        assert "uploaded" not in answer["params"] and "-mask" not in json.dumps(answer["params"])
    client.force_login(owner)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "my_tile_mask.npy" in page and "-mask." not in page
