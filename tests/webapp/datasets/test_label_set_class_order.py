"""A dataset joins a label set with the same class names in any order: a GeoJSON names its classes in the order
they first appear, other formats in their own, and the same taxonomy must not split in two. Each nucleus keeps
its class by name."""

import json

import numpy as np
import pytest
from django.test import override_settings

from tests.generated_datasets import generated_dataset
from webapp.datasets.importing import ImportRejected, do_import_dataset
from webapp.datasets.models import CurrentLabel, Image, LabelSet
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def file_classes(root) -> dict[tuple[str, int], str]:
    """(image name, instance id) -> class name, as the files say."""
    names = json.loads((root / "classes.json").read_text())["classes"]
    truth = {}
    for path in sorted((root / "types").glob("*.npy")):
        for instance_id, index in np.load(path):
            truth[path.stem, int(instance_id)] = names[int(index)]
    return truth


def stored_classes(dataset) -> dict[tuple[str, int], str]:
    names = dataset.label_set.class_names
    return {(image_name, instance_id): names[index] for image_name, instance_id, index in
            CurrentLabel.objects.filter(nucleus__image__dataset=dataset, label_set=dataset.label_set)
            .values_list("nucleus__image__name", "nucleus__instance_id", "class_index")}


@pytest.mark.parametrize("requested", [None, "tax"])
def test_the_same_classes_in_another_order_join_the_label_set_by_name(owner, media_root, tmp_path, requested):
    project = do_create_project("order", actor=owner)
    first_root = generated_dataset(tmp_path / "first", "seed", n_images=2, nuclei_per_image=15,
                                   class_names=["tumour", "lymphocyte", "stroma"], seed=1, size=(96, 96))
    second_root = generated_dataset(tmp_path / "second", "seed", n_images=2, nuclei_per_image=15,
                                    class_names=["stroma", "tumour", "lymphocyte"], seed=2, size=(96, 96))
    with override_settings(IMPORT_PROCESSES=1):
        first = do_import_dataset(project, name="first", format="seed", path=first_root, actor=owner,
                                  label_set_name="tax")
        second = do_import_dataset(project, name="second", format="seed", path=second_root, actor=owner,
                                   label_set_name=requested)
    assert LabelSet.objects.filter(project=project).count() == 1
    assert second.label_set_id == first.label_set_id
    assert first.label_set.class_names == ["tumour", "lymphocyte", "stroma"]     # the first order stays
    for dataset, root in ((first, first_root), (second, second_root)):
        truth, stored = file_classes(root), stored_classes(dataset)
        assert stored == truth and len(set(truth.values())) == 3
    assert Image.objects.filter(dataset=second).count() == 2


def test_other_class_names_are_refused_saying_which_differ(owner, media_root, tmp_path):
    project = do_create_project("order", actor=owner)
    with override_settings(IMPORT_PROCESSES=1):
        do_import_dataset(project, name="first", format="seed", actor=owner, label_set_name="tax",
                          path=generated_dataset(tmp_path / "a", "seed", n_images=1, nuclei_per_image=5,
                                                 class_names=["tumour", "lymphocyte"], seed=1, size=(64, 64)))
        with pytest.raises(ImportRejected, match=r"'tax' has classes \['tumour', 'lymphocyte'\], but the files also "
                                                 r"have \['stroma'\]; choose another label set name"):
            do_import_dataset(project, name="second", format="seed", actor=owner, label_set_name="tax",
                              path=generated_dataset(tmp_path / "b", "seed", n_images=1, nuclei_per_image=5,
                                                     class_names=["tumour", "stroma"], seed=2, size=(64, 64)))
    assert LabelSet.objects.filter(project=project).count() == 1


def test_some_of_a_named_label_sets_classes_join_it_by_name(owner, media_root, tmp_path):
    """A GeoJSON lists only the classes its features use: an export of images without one class (PanNuke's
    "dead") goes back into the taxonomy it came from when the upload names it. Unnamed, it becomes a new one."""
    project = do_create_project("order", actor=owner)
    with override_settings(IMPORT_PROCESSES=1):
        first = do_import_dataset(project, name="first", format="seed", actor=owner, label_set_name="tax",
                                  path=generated_dataset(tmp_path / "a", "seed", n_images=1, nuclei_per_image=9,
                                                         class_names=["tumour", "lymphocyte", "stroma"], seed=1,
                                                         size=(64, 64)))
        subset_root = generated_dataset(tmp_path / "b", "seed", n_images=2, nuclei_per_image=12,
                                        class_names=["stroma", "tumour"], seed=2, size=(96, 96))
        second = do_import_dataset(project, name="second", format="seed", actor=owner, label_set_name="tax",
                                   path=subset_root)
        third = do_import_dataset(project, name="third", format="seed", actor=owner,
                                  path=generated_dataset(tmp_path / "c", "seed", n_images=1, nuclei_per_image=5,
                                                         class_names=["stroma", "tumour"], seed=3, size=(64, 64)))
    assert second.label_set_id == first.label_set_id
    assert first.label_set.class_names == ["tumour", "lymphocyte", "stroma"]
    truth, stored = file_classes(subset_root), stored_classes(second)
    assert stored == truth and set(truth.values()) == {"stroma", "tumour"}
    assert third.label_set_id != first.label_set_id and sorted(third.label_set.class_names) == ["stroma", "tumour"]
