"""Every real sample format, uploaded through the API and imported by a real worker, with exact counts."""

from collections import Counter

import pytest

from tests.webapp.dataset_helpers import project_files, staging_leftovers, upload_and_wait, zip_folder
from webapp.datasets.models import CurrentLabel, Dataset, Image, LabelSet, Nucleus
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def class_counts(dataset: Dataset) -> dict[str, int]:
    names = dict(dataset.label_set.classes.values_list("index", "name"))
    counts = Counter(CurrentLabel.objects.filter(nucleus__image__dataset=dataset, label_set=dataset.label_set)
                     .values_list("class_index", flat=True))
    return {names[i]: counts.get(i, 0) for i in names}


# chosen: the format the upload names; "auto" leaves it to be told from the files (the job then says so).
@pytest.mark.parametrize("folder, format, chosen, images, expected, unlabelled", [
    ("nucls", "seed", "auto", 10, {"tumor_any": 30, "nonTIL_stromal": 47, "sTIL": 238, "other_nucleus": 38}, 105),
    ("pannuke", "coco", "coco", 30, {"neoplastic": 124, "inflammatory": 84, "softtissue": 147, "dead": 0,
                             "epithelial": 273}, 0),
    ("pannuke_breast_binary", "coco", "auto", 25, {"Neoplastic": 216, "No-neoplastic": 415}, 0),
    ("consep", "hovernet", "hovernet", 432, {"other": 432, "inflammatory": 4507, "epithelial": 6609, "spindle-shaped": 6668}, 0),
])
def test_real_sample_imports_with_exact_counts(shared_data, owner, api_client_for, celery_worker_process,
                                               folder, format, chosen, images, expected, unlabelled):
    project = do_create_project("real", actor=owner)
    job = upload_and_wait(api_client_for(owner), project.pk, zip_folder(shared_data / folder),
                          celery_worker_process, name=folder, format=chosen)
    assert job.state == "succeeded", job.error
    dataset = Dataset.objects.get(project=project, name=folder)
    assert dataset.image_count == images == Image.objects.filter(dataset=dataset).count()
    assert class_counts(dataset) == expected
    nuclei = Nucleus.objects.filter(image__dataset=dataset).count()
    assert dataset.nucleus_count == nuclei == sum(expected.values()) + unlabelled
    assert job.result == {"dataset_id": dataset.pk, "dataset": folder, "images": images, "nuclei": nuclei,
                          "label_set": folder, "format": format, "format_detected": chosen == "auto",
                          "left_out": {}}   # no nucleus of these files is wholly covered by later ones
    assert dataset.format == format
    assert [c.name for c in dataset.label_set.classes.all()] == list(expected)  # names as in the files
    assert not staging_leftovers(job)
    assert len(project_files(project.pk)) == 3 * images  # image, mask and thumbnail each


def test_matching_class_names_join_the_existing_label_set(shared_data, owner, api_client_for,
                                                          celery_worker_process, tmp_path):
    import shutil

    project = do_create_project("join", actor=owner)
    client = api_client_for(owner)
    first = upload_and_wait(client, project.pk, zip_folder(shared_data / "nucls"), celery_worker_process,
                            name="nucls-a", format="seed")
    assert first.state == "succeeded", first.error
    # The same taxonomy on other images (a subset renamed so the checksums differ is not possible:
    # take two images of the sample and flip them, which changes their pixels).
    import numpy as np
    from PIL import Image as PILImage
    copy = tmp_path / "nucls-b"
    shutil.copytree(shared_data / "nucls", copy)
    for png in (copy / "images").glob("*.png"):
        PILImage.fromarray(np.asarray(PILImage.open(png).convert("RGB"))[:, ::-1].copy()).save(png)
    second = upload_and_wait(client, project.pk, zip_folder(copy), celery_worker_process,
                             name="nucls-b", format="seed")
    assert second.state == "succeeded", second.error
    assert LabelSet.objects.filter(project=project).count() == 1
    assert Dataset.objects.get(name="nucls-b").label_set == Dataset.objects.get(name="nucls-a").label_set


def test_unlabelled_upload_has_masks_but_no_label_set(shared_data, owner, api_client_for, celery_worker_process):
    project = do_create_project("unlabelled", actor=owner)
    job = upload_and_wait(api_client_for(owner), project.pk, zip_folder(shared_data / "nucls"),
                          celery_worker_process, name="masks-only", format="seed", labelled="false")
    assert job.state == "succeeded", job.error
    dataset = Dataset.objects.get(project=project)
    assert dataset.label_set is None
    assert dataset.nucleus_count == 458
    assert not CurrentLabel.objects.filter(nucleus__image__dataset=dataset).exists()
