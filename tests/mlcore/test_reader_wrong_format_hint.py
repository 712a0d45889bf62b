"""A dataset folder read in the wrong format says which format its layout is: "images: image folder not found" alone
(a HoVer-Net folder read as seed, `--dataset nucls=seed:data/consep`) left the user to guess why (an ML engineer's
exploration found it). A folder that fits no other format keeps the reader's words alone."""

import pytest

from mlcore.readers import read_dataset
from mlcore.synthetic import generate_dataset
from mlcore.types import DataError


@pytest.mark.parametrize("written, asked, problem", [
    ("hovernet", "seed", "images: image folder not found"),
    ("seed", "coco", "annotations.json: file not found"),
])
def test_the_wrong_format_names_the_one_the_folder_is_laid_out_as(tmp_path, written, asked, problem):
    root = generate_dataset(tmp_path / "data", format=written, n_images=1, nuclei_per_image=3, size=(48, 48))
    with pytest.raises(DataError) as refused:
        read_dataset(asked, root)
    assert str(refused.value) == (f"{root}/{problem}; the dataset folder is laid out as {written}, not {asked}: "
                                  f"give the format {written}")


def test_a_folder_of_no_known_layout_keeps_the_readers_words(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as refused:
        read_dataset("seed", tmp_path)
    assert str(refused.value) == f"{tmp_path}/images: image folder not found"
