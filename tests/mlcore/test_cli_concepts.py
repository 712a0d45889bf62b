"""``python -m mlcore evaluate --concept-map``: a dataset scored by concept completion into the
model's other label sets, its own label set being one of the model's or not (leave-one-out)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlcore.cli import main
from mlcore.readers import read_dataset
from mlcore.synthetic import generate_dataset
from tests.mlcore.helpers import tiny_real_config

pytestmark = pytest.mark.slow  # every test uses a model trained for it (all stages) or the real samples

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
CONCEPTS = {"concepts": {"first": {"one": ["a"], "two": ["d"], "three": ["f"]},
                         "second": {"one": ["b"], "three": ["g"]}}}


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlcore", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def class_counts(path: Path) -> Counter:
    dataset = read_dataset("seed", path)
    return Counter(dataset.label_set.classes[c] for image in dataset.images for c in image.classes.values())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model trained (all stages, one epoch) on synthetic datasets one and two; three is left out."""
    work = tmp_path_factory.mktemp("concepts")
    for name, classes in (("one", ["a", "b", "c"]), ("two", ["d", "e"]), ("three", ["f", "g", "h"])):
        generate_dataset(work / name, "seed", n_images=4, nuclei_per_image=25, class_names=classes, seed=len(name),
                         size=(128, 128), unlabelled_fraction=0.1 if name == "three" else 0.0)
    config = {"datasets": [{"name": "one", "format": "seed", "path": "one"},
                           {"name": "two", "format": "seed", "path": "two"}],
              "model": {"width": 4}, "batch_size": 32, "correlation_views": 1, "cache_dir": str(work / "cache"),
              "split": {"val_fraction": 0.25}, "sampling": {"samples_per_epoch": 256}}
    (work / "config.json").write_text(json.dumps(config))
    (work / "concepts.json").write_text(json.dumps(CONCEPTS))
    assert main(["train", "--config", str(work / "config.json"), "--out", str(work / "run"), "--epochs", "1",
                 "--device", "cpu"]) == 0
    return work


def test_left_out_dataset_is_scored_into_every_linked_label_set(tiny):
    done = run_cli("evaluate", "--checkpoint", tiny / "run" / "model.pt", "--dataset", f"three=seed:{tiny / 'three'}",
                   "--label-set", "three", "--concept-map", tiny / "concepts.json", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    counts = class_counts(tiny / "three")   # the labelled nuclei only (a tenth have no class)
    assert report["dataset"] == "three" and report["label_set"] == "three" and report["source"] == "three"
    assert report["labelled"] == sum(counts.values())
    assert report["targets"] == ["one", "two"]
    assert report["nuclei"] == counts["f"] + counts["g"]
    assert [(c["concept"], c["target"], c["n"]) for c in report["cells"]] == [
        ("first", "one", counts["f"]), ("first", "two", counts["f"]), ("second", "one", counts["g"])]
    for cell in report["cells"]:
        assert sum(cell["predicted"].values()) == cell["n"]
        assert set(cell["predicted"]) <= ({"a", "b", "c"} if cell["target"] == "one" else {"d", "e"})
        assert cell["hits"] == sum(v for k, v in cell["predicted"].items() if k in cell["target_classes"])
        assert cell["completion"] == pytest.approx(cell["hits"] / cell["n"])
    assert report["mean"] == pytest.approx(np.mean([c["completion"] for c in report["cells"]]))

    text = run_cli("evaluate", "--checkpoint", tiny / "run" / "model.pt", "--dataset", f"three=seed:{tiny / 'three'}",
                   "--label-set", "three", "--concept-map", tiny / "concepts.json")
    assert text.returncode == 0, text.stderr[-3000:]
    lines = text.stdout.splitlines()
    assert lines[0] == f"three (three, {report['labelled']} labelled nuclei): concept completion into one, two"
    assert lines[1].split() == ["concept", "target", "n", "completion", "most", "frequent", "miss"]
    assert lines[2].split()[:4] == ["first", "one", str(counts["f"]), f"{report['cells'][0]['completion']:.3f}"]
    assert lines[-1].startswith(f"mean over rows {report['mean']:.3f}")


def test_a_label_set_of_the_model_is_scored_into_the_others(tiny, capsys):
    assert main(["evaluate", "--checkpoint", str(tiny / "run" / "model.pt"), "--dataset", f"two=seed:{tiny / 'two'}",
                 "--label-set", "two", "--concept-map", str(tiny / "concepts.json"), "--json", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["targets"] == ["one"]   # two itself is the source, three is not in the model
    assert "concepts.first.three: label set 'three' is not in play (one, two); not scored" in err
    assert [(c["concept"], c["target"], c["n"]) for c in report["cells"]] == [("first", "one", class_counts(tiny / "two")["d"])]


def test_concept_map_errors_name_the_file_and_field(tiny, capsys):
    common = ["evaluate", "--checkpoint", str(tiny / "run" / "model.pt"), "--dataset", f"three=seed:{tiny / 'three'}",
              "--label-set", "three", "--device", "cpu"]
    bad = tiny / "bad_class.json"
    bad.write_text(json.dumps({"concepts": {"first": {"one": ["a"], "three": ["F"]}}}))
    assert main([*common, "--concept-map", str(bad)]) == 2
    assert f"{bad}: concepts.first.three: unknown class 'F' in label set 'three' (known: f, g, h)" in capsys.readouterr().err
    # A label set neither the model's nor the dataset's: a note, and nothing to score when it was the only link.
    bad.write_text(json.dumps({"concepts": {"first": {"four": ["a"], "three": ["f"]}}}))
    assert main([*common, "--concept-map", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"note: {bad}: concepts.first.four: label set 'four' is not in play (one, two, three); not scored" in err
    assert f"error: {bad}: no concept links label set 'three'" in err
    bad.write_text('{"concepts": ')
    assert main([*common, "--concept-map", str(bad)]) == 2
    assert f"{bad}: not valid JSON" in capsys.readouterr().err
    unlinked = tiny / "unlinked.json"
    unlinked.write_text(json.dumps({"concepts": {"x": {"one": ["a"], "two": ["d"]}}}))
    assert main([*common, "--concept-map", str(unlinked)]) == 2
    assert "no concept links label set 'three' with one of the model's other label sets (one, two)" in capsys.readouterr().err
    # Without a concept map, a label set the model lacks is refused as before, with a hint.
    assert main(common) == 2
    assert "not one of the model's label sets (one, two); with --concept-map" in capsys.readouterr().err


def test_real_nucls_scored_by_a_model_that_never_saw_it(shared_data, tmp_path):
    """The shipped concept map on the real NuCLS sample, against a tiny model of the three other datasets."""
    config = {**tiny_real_config(shared_data), "sampling": {"samples_per_epoch": 256},
              "cache_dir": str(tmp_path / "cache")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--device", "cpu"]) == 0
    done = run_cli("evaluate", "--checkpoint", tmp_path / "run" / "model.pt", "--dataset",
                   f"nucls=seed:{shared_data / 'nucls'}", "--label-set", "nucls", "--concept-map",
                   ROOT / "benchmarks" / "configs" / "concepts.json", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["labelled"] == 353   # every labelled NuCLS nucleus (data README)
    assert report["targets"] == ["consep", "pannuke", "pannuke_breast_binary"]
    # sTIL 238, tumor_any 30, nonTIL_stromal 47 (data README); other_nucleus is in no concept.
    assert [(c["concept"], c["target"], c["n"], c["target_classes"]) for c in report["cells"]] == [
        ("inflammatory", "consep", 238, ["inflammatory"]), ("inflammatory", "pannuke", 238, ["inflammatory"]),
        ("tumour", "consep", 30, ["epithelial"]), ("tumour", "pannuke", 30, ["neoplastic"]),
        ("tumour", "pannuke_breast_binary", 30, ["Neoplastic"]),
        ("stromal", "consep", 47, ["spindle-shaped"]), ("stromal", "pannuke", 47, ["softtissue"])]
    assert report["nuclei"] == 238 + 30 + 47
    for cell in report["cells"]:
        assert 0 <= cell["hits"] <= cell["n"] and sum(cell["predicted"].values()) == cell["n"]
    # --tta scores the same cells on the mean over the 8 symmetries.
    averaged = run_cli("evaluate", "--checkpoint", tmp_path / "run" / "model.pt", "--dataset",
                       f"nucls=seed:{shared_data / 'nucls'}", "--label-set", "nucls", "--concept-map",
                       ROOT / "benchmarks" / "configs" / "concepts.json", "--json", "--tta")
    assert averaged.returncode == 0, averaged.stderr[-3000:]
    assert [c["n"] for c in json.loads(averaged.stdout)["cells"]] == [c["n"] for c in report["cells"]]
