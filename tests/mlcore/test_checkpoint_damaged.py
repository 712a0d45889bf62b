"""A checkpoint file cut short or with changed bytes (an interrupted copy or download, a bad disk) is refused with a
line that says so, naming the file: torch.load neither says what is wrong with a cut zip (its own words are about
miniz's central directory) nor checks the zip's checksums, so changed weight bytes loaded as another model, silently
(an ML engineer's exploration found both)."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from mlcore import cli
from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.config import TrainConfig
from mlcore.types import LabelSet
from tests.mlcore.helpers import random_model

DAMAGED = "not a readable mlcore checkpoint (the file is truncated or damaged: copy it again)"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    model = random_model([LabelSet("one", ("a", "b"))])
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, "sparse", 0, True, TrainConfig())


def test_a_checkpoint_cut_short_is_called_truncated(good, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(ValueError) as refused:
        load_checkpoint(cut)
    assert str(refused.value) == f"{cut}: {DAMAGED}"


def test_changed_weight_bytes_are_refused_not_loaded_as_other_weights(good, tmp_path):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:   # the largest member: a weight tensor's bytes
        member = max(archive.infolist(), key=lambda info: info.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data[start + member.file_size // 2] ^= 0x01   # one bit: still a finite float, so no other check sees it
    changed = tmp_path / "changed.pt"
    changed.write_bytes(bytes(data))
    with pytest.raises(ValueError) as refused:
        load_checkpoint(changed)
    assert str(refused.value) == f"{changed}: {DAMAGED}"
    assert load_checkpoint(good).model is not None   # the intact file still loads


def test_an_empty_file_or_another_kind_of_file_says_so(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt: not a readable mlcore checkpoint \(the file is empty\)$"):
        load_checkpoint(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes\.pt: not a readable mlcore checkpoint \(torch could not load it: "
                                         r"not a PyTorch file\)$"):
        load_checkpoint(text)


def test_infer_answers_a_truncated_checkpoint_in_one_line(good, tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-100])
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tile.png")
    mask = np.zeros((32, 32), np.int32)
    mask[10:20, 10:20] = 1
    np.save(tmp_path / "tile.npy", mask)
    code = cli.main(["infer", "--checkpoint", str(cut), "--image", str(tmp_path / "tile.png"),
                     "--mask", str(tmp_path / "tile.npy"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == f"error: {cut}: {DAMAGED}\n"
    assert not list((tmp_path / "out").glob("*"))
