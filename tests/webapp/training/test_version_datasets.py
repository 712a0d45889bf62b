"""A model version lists the datasets its training read, as they were then: not one uploaded or renamed
while it trained (found by a newcomer: a dataset uploaded during a training was listed as trained on)."""

import pytest

from webapp.datasets.models import Dataset, Image, LabelSet
from webapp.projects.operations import do_create_project
from webapp.training.runner import datasets_read

pytestmark = pytest.mark.django_db


def image(project, dataset, name: str, nuclei: int) -> Image:
    return Image.objects.create(project=project, dataset=dataset, name=name, file=name, mask_file=name,
                                thumbnail_file=name, width=8, height=8, checksum=name, nucleus_count=nuclei)


def test_the_datasets_of_the_images_read_with_their_names_then(owner):
    project = do_create_project("read", actor=owner)
    label_set = LabelSet.objects.create(project=project, name="consep")
    consep = Dataset.objects.create(project=project, name="CoNSeP", label_set=label_set, format="hovernet",
                                    storage_dir="a")
    masks = Dataset.objects.create(project=project, name="masks only", format="seed", storage_dir="b")
    for name, dataset, nuclei in (("1.png", consep, 30), ("2.png", consep, 12), ("3.png", masks, 5)):
        image(project, dataset, name, nuclei)
    read = list(Image.objects.filter(project=project).select_related("dataset__label_set").order_by("id"))

    # What happens after the training read its images does not change what it read.
    Dataset.objects.filter(pk=consep.pk).update(name="CoNSeP renamed")
    late = Dataset.objects.create(project=project, name="uploaded later", format="seed", storage_dir="c")
    image(project, late, "4.png", 7)

    assert datasets_read(read) == [
        {"name": "CoNSeP", "format": "hovernet", "label_set": "consep", "images": 2, "nuclei": 42},
        {"name": "masks only", "format": "seed", "label_set": None, "images": 1, "nuclei": 5},
    ]
