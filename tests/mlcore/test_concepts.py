"""Concept maps (mlcore.concepts): parsing errors that name the file and field, completion scoring on
hand-made predictions, the tables, the shipped map against the real class names, and the
leave-one-dataset-out benchmark end to end on synthetic datasets."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlcore.concepts import (ConceptMapError, class_names_of, completion_markdown, concept_completion,
                             format_completion, load_concept_map, parse_concept_map)
from mlcore.config import ConfigError
from tests.mlcore.helpers import tiny_real_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "benchmarks" / "configs" / "concepts.json"

MAP = {"concepts": {
    "inflammatory": {"consep": ["inflammatory"], "pannuke": ["inflammatory"], "nucls": ["sTIL"]},
    "tumour": {"consep": ["epithelial"], "pannuke": ["neoplastic"], "nucls": ["tumor_any"], "breast": ["Neoplastic"]},
}}
CLASSES = {"consep": ("other", "inflammatory", "epithelial", "spindle-shaped"),
           "pannuke": ("neoplastic", "inflammatory", "softtissue", "dead", "epithelial"),
           "nucls": ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus"),
           "breast": ("Neoplastic", "No-neoplastic")}


def write(tmp_path, content) -> Path:
    path = tmp_path / "concepts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# ----------------------------------------------------------------------------------------------- parsing


def test_load_reads_concepts_and_keeps_notes(tmp_path):
    path = write(tmp_path, {**MAP, "notes": {"tumour": "why"}})
    concept_map = load_concept_map(path)
    assert concept_map.concepts["tumour"]["nucls"] == ("tumor_any",)
    assert concept_map.notes == {"tumour": "why"}
    assert concept_map.source == str(path)
    assert concept_map.label_set_names() == {"consep", "pannuke", "nucls", "breast"}
    assert concept_map.concepts_of("nucls", "sTIL") == ["inflammatory"]
    assert concept_map.concepts_of("nucls", "other_nucleus") == []
    assert concept_map.targets_for("nucls", ["consep", "nucls", "breast", "unrelated"]) == ["consep", "breast"]
    concept_map.check(CLASSES)   # every name exists: no error


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({"concept": {}}, "unknown field(s) concept"),
    ({"concepts": {}}, "field 'concepts' must be a non-empty object"),
    ({"concepts": {"tumour": ["epithelial"]}}, "concepts.tumour must be a non-empty object"),
    ({"concepts": {"tumour": {"consep": [], "nucls": ["tumor_any"]}}}, "concepts.tumour.consep must be a non-empty list"),
    ({"concepts": {"tumour": {"consep": [3], "nucls": ["tumor_any"]}}}, "concepts.tumour.consep must be a non-empty list"),
    ({"concepts": {"tumour": {"consep": ["epithelial", "epithelial"], "nucls": ["tumor_any"]}}},
     "concepts.tumour.consep repeats a class"),
    ({"concepts": {"tumour": {"consep": ["epithelial"]}}}, "concepts.tumour names one label set only"),
])
def test_malformed_maps_name_the_file_and_field(tmp_path, content, expected):
    path = write(tmp_path, content)
    with pytest.raises(ConceptMapError) as error:
        load_concept_map(path)
    assert str(error.value).startswith(f"{path}: ")
    assert expected in str(error.value)
    assert isinstance(error.value, ConfigError)   # the CLI reports it as a usage error (exit 2)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConceptMapError, match=f"{tmp_path / 'absent.json'}: concept map not found"):
        load_concept_map(tmp_path / "absent.json")


def test_unknown_label_set_and_class_name_the_file_and_field(tmp_path):
    path = write(tmp_path, {"concepts": {"tumour": {"consep": ["epithelial"], "nucsl": ["tumor_any"]}}})
    with pytest.raises(ConceptMapError) as error:
        load_concept_map(path).check(CLASSES)
    assert str(error.value) == (f"{path}: concepts.tumour.nucsl: unknown label set 'nucsl' "
                                "(known: consep, pannuke, nucls, breast)")
    path = write(tmp_path, {"concepts": {"tumour": {"consep": ["epithelial"], "nucls": ["tumour_any"]}}})
    with pytest.raises(ConceptMapError) as error:
        load_concept_map(path).check(CLASSES)
    assert str(error.value) == (f"{path}: concepts.tumour.nucls: unknown class 'tumour_any' in label set 'nucls' "
                                "(known: tumor_any, nonTIL_stromal, sTIL, other_nucleus)")


def test_lenient_check_notes_label_sets_out_of_play_but_still_refuses_unknown_classes():
    concept_map = parse_concept_map(MAP, "map.json")
    in_play = {name: CLASSES[name] for name in ("consep", "nucls")}
    assert concept_map.check(in_play, strict=False) == [
        "map.json: concepts.inflammatory.pannuke: label set 'pannuke' is not in play (consep, nucls); not scored",
        "map.json: concepts.tumour.pannuke: label set 'pannuke' is not in play (consep, nucls); not scored",
        "map.json: concepts.tumour.breast: label set 'breast' is not in play (consep, nucls); not scored"]
    with pytest.raises(ConceptMapError, match="map.json: concepts.inflammatory.nucls: unknown class 'sTIL'"):
        concept_map.check({**in_play, "nucls": ("TIL",)}, strict=False)


def test_a_single_class_name_may_stand_for_a_list():
    concept_map = parse_concept_map({"concepts": {"x": {"a": "a1", "b": ["b1", "b2"]}}})
    assert concept_map.concepts["x"] == {"a": ("a1",), "b": ("b1", "b2")}


# ----------------------------------------------------------------------------------------------- scoring


def test_completion_counts_members_per_concept_and_target():
    concept_map = parse_concept_map(MAP)
    # Ten NuCLS nuclei: 4 sTIL, 3 tumor_any, 2 other_nucleus (in no concept), 1 unknown.
    truth = ["sTIL", "sTIL", "sTIL", "sTIL", "tumor_any", "tumor_any", "tumor_any", "other_nucleus", "other_nucleus", None]
    predictions = {
        "consep": ["inflammatory", "inflammatory", "epithelial", "inflammatory",     # 3 of 4 lymphocytes
                   "epithelial", "spindle-shaped", "epithelial",                    # 2 of 3 tumour
                   "epithelial", "other", "inflammatory"],
        "pannuke": ["inflammatory", "neoplastic", "neoplastic", "neoplastic",        # 1 of 4
                    "neoplastic", "neoplastic", "neoplastic",                        # 3 of 3
                    "dead", "dead", "dead"],
        "breast": ["No-neoplastic"] * 4 + ["Neoplastic", "No-neoplastic", "No-neoplastic"] + ["Neoplastic"] * 3,  # tumour: 1 of 3
        "nucls": ["other_nucleus"] * 10,   # the source's own label set is never a target
    }
    report = concept_completion(predictions, truth, "nucls", concept_map)
    assert report["source"] == "nucls"
    assert report["targets"] == ["consep", "pannuke", "breast"]
    assert report["nuclei"] == 7
    cells = {(c["concept"], c["target"]): c for c in report["cells"]}
    assert list(cells) == [("inflammatory", "consep"), ("inflammatory", "pannuke"),
                           ("tumour", "consep"), ("tumour", "pannuke"), ("tumour", "breast")]
    expected = {("inflammatory", "consep"): (4, 3), ("inflammatory", "pannuke"): (4, 1), ("tumour", "consep"): (3, 2),
                ("tumour", "pannuke"): (3, 3), ("tumour", "breast"): (3, 1)}
    for key, (n, hits) in expected.items():
        assert (cells[key]["n"], cells[key]["hits"]) == (n, hits)
        assert cells[key]["completion"] == pytest.approx(hits / n)
    assert cells[("inflammatory", "consep")]["predicted"] == {"inflammatory": 3, "epithelial": 1}
    assert cells[("tumour", "breast")]["target_classes"] == ["Neoplastic"]
    assert cells[("tumour", "breast")]["source_classes"] == ["tumor_any"]
    assert report["mean"] == pytest.approx((3 / 4 + 1 / 4 + 2 / 3 + 1 + 1 / 3) / 5)
    assert report["pooled"] == pytest.approx(10 / 17)


def test_completion_accepts_any_class_of_a_concept_and_numpy_inputs():
    concept_map = parse_concept_map({"concepts": {"epithelium": {"a": ["tumour", "normal"], "b": ["epi"]}}})
    report = concept_completion({"b": np.array(["epi", "epi", "stroma"], dtype=object)},
                                np.array(["tumour", "normal", "normal"], dtype=object), "a", concept_map)
    assert [(c["n"], c["hits"]) for c in report["cells"]] == [(3, 2)]
    # The other direction: both of a's classes are accepted answers.
    report = concept_completion({"a": ["normal", "tumour", "stroma"]}, ["epi", "epi", "epi"], "b", concept_map)
    assert [(c["n"], c["hits"]) for c in report["cells"]] == [(3, 2)]


def test_completion_without_members_has_no_mean():
    concept_map = parse_concept_map(MAP)
    report = concept_completion({"consep": ["other"]}, ["other_nucleus"], "nucls", concept_map)
    assert report["nuclei"] == 0 and report["mean"] is None and report["pooled"] is None
    assert all(cell["n"] == 0 and cell["completion"] is None for cell in report["cells"])
    with pytest.raises(ValueError, match="2 predictions in label set 'consep' for 1 nuclei"):
        concept_completion({"consep": ["other", "other"]}, ["sTIL"], "nucls", concept_map)


def test_class_names_of_maps_missing_to_none():
    assert class_names_of(np.array([1, -1, 0]), ("x", "y")) == ["y", None, "x"]


# ---------------------------------------------------------------------------------------------- printing


def test_tables_show_completion_the_worst_seed_and_the_most_frequent_miss():
    concept_map = parse_concept_map(MAP)
    truth = ["sTIL", "sTIL", "tumor_any"]
    good = concept_completion({"consep": ["inflammatory", "inflammatory", "epithelial"]}, truth, "nucls", concept_map)
    bad = concept_completion({"consep": ["epithelial", "inflammatory", "other"]}, truth, "nucls", concept_map)
    text = format_completion(bad)
    assert "completion of nucls nuclei into consep" in text
    assert "inflammatory  consep  2  0.500       epithelial (1)" in text
    assert "tumour        consep  1  0.000       other (1)" in text
    assert "mean over rows 0.250, pooled 0.333 (3 nuclei in a concept)" in text

    table = completion_markdown([{"sparse": {"nucls": good}, "cross": {"nucls": bad}},
                                 {"sparse": {"nucls": bad}, "cross": {"nucls": bad}}],
                                [("sparse", "sparse"), ("cross_stage2", "1+2"), ("cross", "cross")], "left out")
    lines = table.splitlines()
    assert lines[0] == "| left out | concept | target | n | sparse | cross |"   # 1+2 absent from the runs
    assert lines[2] == "| nucls | inflammatory | consep | 2 | 0.750 ± 0.354 (worst 0.500) | 0.500 ± 0.000 (worst 0.500) |"
    assert lines[3] == "| nucls | tumour | consep | 1 | 0.500 ± 0.707 (worst 0.000) | 0.000 ± 0.000 (worst 0.000) |"
    assert lines[4] == "| nucls | **mean** | | 3 | 0.625 ± 0.530 (worst 0.250) | 0.250 ± 0.000 (worst 0.250) |"
    single = completion_markdown([{"cross": {"nucls": good}}], [("cross", "cross")])
    assert single.splitlines()[2] == "| nucls | inflammatory | consep | 2 | 1.000 |"


# ------------------------------------------------------------------------------------------ shipped map


def test_shipped_map_names_the_real_classes(shared_data):
    from mlcore.readers import open_dataset

    sources = {"consep": "hovernet", "pannuke": "coco", "pannuke_breast_binary": "coco", "nucls": "seed"}
    classes = {name: open_dataset(fmt, shared_data / name, name=name).label_set.classes for name, fmt in sources.items()}
    concept_map = load_concept_map(SHIPPED)
    concept_map.check(classes)
    assert set(concept_map.concepts) == {"inflammatory", "tumour", "stromal"}
    assert concept_map.concepts_of("pannuke", "epithelial") == []        # non-neoplastic epithelium: left out
    assert concept_map.concepts_of("pannuke_breast_binary", "No-neoplastic") == []
    real = json.loads((ROOT / "benchmarks" / "configs" / "real.json").read_text())
    assert concept_map.label_set_names() == {entry["name"] for entry in real["datasets"]}


# -------------------------------------------------------------------------------- leave-one-out benchmark


def synthetic_sources(root: Path) -> dict[str, Counter]:
    """Three synthetic datasets whose class k looks alike in each (same style); their class counts."""
    from mlcore.readers import read_dataset
    from mlcore.synthetic import generate_dataset

    counts = {}
    for name, classes in (("one", ["a", "b", "c"]), ("two", ["d", "e"]), ("three", ["f", "g", "h"])):
        generate_dataset(root / name, "seed", n_images=4, nuclei_per_image=25, class_names=classes, seed=len(name),
                         size=(128, 128))
        dataset = read_dataset("seed", root / name)
        counts[name] = Counter(dataset.label_set.classes[c] for image in dataset.images for c in image.classes.values())
    return counts


def write_synthetic_config(root: Path, samples_per_epoch: int, **fields) -> Path:
    """``root/config.json`` over the three :func:`synthetic_sources` datasets: a tiny model, a quarter held out."""
    config = {"datasets": [{"name": n, "format": "seed", "path": n} for n in ("one", "two", "three")],
              "model": {"width": 4}, "batch_size": 32, "correlation_views": 1, "split": {"val_fraction": 0.25},
              "sampling": {"samples_per_epoch": samples_per_epoch}, **fields}
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow  # trains in a new process
def test_leave_one_out_benchmark_end_to_end(tmp_path):
    counts = synthetic_sources(tmp_path)
    write_synthetic_config(tmp_path, 2048)
    concepts = {"concepts": {"first": {"one": ["a"], "two": ["d"], "three": ["f"]},
                             "second": {"one": ["b"], "three": ["g"]}}}
    (tmp_path / "concepts.json").write_text(json.dumps(concepts))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/leave_one_out.py", "--config", tmp_path / "config.json", "--concepts",
         tmp_path / "concepts.json", "--out", out, "--leave-out", "one", "two", "--seeds", "0", "1",
         "--epochs", "1", "--samples-per-epoch", "512", "--threads", "1", "--set", "threshold=0.9", "--tta"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["samples_per_epoch"] == 512 and results["config"]["threshold"] == 0.9
    assert results["config"]["epochs"] == {"sparse": 1, "correlation": 1, "completion": 1}
    assert results["seeds"] == [0, 1] and list(results["left_out"]) == ["one", "two"]
    import torch
    assert results["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()   # what the seed ran on
    assert results["left_out"]["one"]["remaining"] == ["two", "three"]
    for name, expected_cells in (("one", [("first", "two", "a"), ("first", "three", "a"), ("second", "three", "b")]),
                                 ("two", [("first", "one", "d"), ("first", "three", "d")])):
        runs = results["left_out"][name]["runs"]
        assert [run["seed"] for run in runs] == [0, 1]
        for run in runs:
            assert set(run["completion"]) == {"sparse", "cross_stage2", "cross", "cross_tta"}   # TTA: the last stage
            assert name not in run["metrics"]["cross"]                  # never trained on
            for report in (reports[name] for reports in run["completion"].values()):
                cells = [(c["concept"], c["target"], c["n"]) for c in report["cells"]]
                assert cells == [(concept, target, counts[name][cls]) for concept, target, cls in expected_cells]
                for cell in report["cells"]:
                    assert sum(cell["predicted"].values()) == cell["n"]
                    assert cell["hits"] == sum(v for k, v in cell["predicted"].items() if k in cell["target_classes"])
    # The checkpoints of the first run are the models scored: no stage is missing.
    assert {p.name for p in (out / "without_one" / "seed0").iterdir()} >= {"stage1.pt", "stage2.pt", "stage3.pt"}
    assert ("| left out | concept | target | n | sparse (stage 1) | stages 1+2 | cross (1+2+3) | cross, TTA |"
            in done.stdout)
    assert f"| one | first | two | {counts['one']['a']} |" in done.stdout
    assert "(worst " in done.stdout


@pytest.mark.slow  # trains in a new process
def test_leave_one_out_benchmark_refuses_a_bad_map_and_stage_order(tmp_path):
    synthetic_sources(tmp_path)
    config = {"datasets": [{"name": n, "format": "seed", "path": n} for n in ("one", "two")]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "concepts.json").write_text(json.dumps({"concepts": {"x": {"one": ["a"], "two": ["zz"]}}}))
    command = [sys.executable, "benchmarks/leave_one_out.py", "--config", str(tmp_path / "config.json"), "--concepts",
               str(tmp_path / "concepts.json"), "--out", str(tmp_path / "out"), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{tmp_path / 'concepts.json'}: concepts.x.two: unknown class 'zz'" in done.stderr
    done = subprocess.run(command + ["--stages", "correlation"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--stages must start with sparse" in done.stderr


@pytest.mark.slow  # trains in a new process
def test_train_real_prints_validation_completion_beside_macro_f1(tmp_path):
    synthetic_sources(tmp_path)
    write_synthetic_config(tmp_path, 256, epochs=1)
    (tmp_path / "concepts.json").write_text(json.dumps({"concepts": {"first": {"one": ["a"], "two": ["d"]}}}))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/train_real.py", "--config", tmp_path / "config.json", "--concepts",
         tmp_path / "concepts.json", "--out", out, "--skip-single", "--threads", "1"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert set(run["completion"]) == {"sparse", "cross_stage2", "cross"}
    assert set(run["completion"]["cross"]) == {"one", "two"}     # three is in no concept
    from mlcore.data import build_table, split_by_group
    from mlcore.readers import read_dataset

    table = build_table([read_dataset("seed", tmp_path / n) for n in ("one", "two", "three")])
    _, val_rows = split_by_group(table, 0.25, 0)
    for name, column, cls, target in (("one", 0, 0, "two"), ("two", 1, 0, "one")):
        rows = val_rows[table.dataset_index[val_rows] == table.dataset_names.index(name)]
        expected = int((table.labels[rows, column] == cls).sum())  # the validation nuclei of class a / d
        assert [(c["concept"], c["target"], c["n"]) for c in run["completion"]["cross"][name]["cells"]] == [
            ("first", target, expected)]
    assert "concept completion of the validation nuclei into the other label sets" in done.stdout
    assert "| source | concept | target | n | sparse (stage 1) | stages 1+2 | cross (1+2+3) |" in done.stdout


@pytest.mark.slow  # trains in a new process
def test_train_real_single_only_trains_the_single_dataset_models_alone(tmp_path):
    synthetic_sources(tmp_path)
    write_synthetic_config(tmp_path, 256, epochs=1)
    out = tmp_path / "out"
    command = [sys.executable, "benchmarks/train_real.py", "--config", tmp_path / "config.json", "--concepts", "none",
               "--out", out, "--threads", "1", "--seeds", "3", "--single-only"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["seed"] == 3 and set(run["metrics"]) == {"single"}
    assert set(run["metrics"]["single"]) == {"one", "two", "three"}
    assert not (out / "cross").exists() and "cross-trained" not in done.stdout
    done = subprocess.run(command + ["--skip-single"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "leave nothing to train" in done.stderr


@pytest.mark.slow  # trains in a new process
def test_leave_one_out_on_the_real_sample(shared_data, tmp_path):
    """NuCLS left out of a tiny model of CoNSeP, PanNuke and PanNuke-breast, with the shipped concept map."""
    config = tiny_real_config(shared_data, with_nucls=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/leave_one_out.py", "--config", tmp_path / "config.json", "--out", out,
         "--leave-out", "nucls", "--epochs", "1", "--samples-per-epoch", "256", "--threads", "1"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    left = json.loads((out / "results.json").read_text())["left_out"]["nucls"]
    assert left["label_set"] == "nucls" and left["remaining"] == ["consep", "pannuke", "pannuke_breast_binary"]
    report = left["runs"][0]["completion"]["cross"]["nucls"]
    # sTIL 238, tumor_any 30, nonTIL_stromal 47 (data README), each scored in every linked taxonomy
    assert [(c["concept"], c["target"], c["n"]) for c in report["cells"]] == [
        ("inflammatory", "consep", 238), ("inflammatory", "pannuke", 238), ("tumour", "consep", 30),
        ("tumour", "pannuke", 30), ("tumour", "pannuke_breast_binary", 30), ("stromal", "consep", 47),
        ("stromal", "pannuke", 47)]
    assert "| nucls | inflammatory | consep | 238 |" in done.stdout
