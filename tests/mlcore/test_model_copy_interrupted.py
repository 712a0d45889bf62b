"""Ctrl-C (or a full disk) while the training copies its last stage's checkpoint to model.pt leaves no half copy
behind: the copy goes to a hidden temporary file that was left in --out when the copy was stopped."""

from types import SimpleNamespace

import pytest

from mlcore import train


def test_a_stopped_copy_to_model_pt_leaves_nothing_half_written(tmp_path, monkeypatch):
    stage = tmp_path / "stage1.pt"
    stage.write_bytes(b"x" * 4096)

    def copy_stopped_halfway(source, target):
        with open(target, "wb") as sink:
            sink.write(b"x" * 1024)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.shutil, "copyfile", copy_stopped_halfway)
    result = SimpleNamespace(stage_checkpoints={"sparse": stage}, checkpoint_path=None)
    with pytest.raises(KeyboardInterrupt):
        train.write_model_files(tmp_path, result, table=None, stages=["sparse"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage1.pt"]
