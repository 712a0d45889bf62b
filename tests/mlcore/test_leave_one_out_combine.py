"""benchmarks/leave_one_out.py --combine: runs of one setting made apart are read back as one table,
and --against prints the difference to another setting seed by seed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def report(hits: int, n: int) -> dict:
    """A completion report of one source with one cell, as mlcore.concepts.concept_completion writes it."""
    return {"nuclei": n, "mean": hits / n,
            "cells": [{"concept": "tumour", "target": "other_set", "n": n, "hits": hits, "completion": hits / n,
                       "target_classes": ["t"], "predicted": {"t": hits, "x": n - hits}}]}


AVX2 = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "torch": "2.13.0+cpu", "cores": 2}


def results_file(path: Path, stain: float, runs: dict[str, dict[int, tuple[int, int]]],
                 stages=("sparse",), machine: dict | None = AVX2, **fields) -> Path:
    """A results.json with ``runs[left out][seed] = (sparse hits, sparse TTA hits)`` out of 100."""
    config = {"backbone": "small", "stain_jitter": stain, "seed": 0, "num_threads": 1, **fields}
    left_out = {name: {"label_set": name, "remaining": ["other_set"],
                       "runs": [{"seed": seed, "seconds": 1.0, "label_sets": ["other_set"], "metrics": {},
                                 "completion": {"sparse": {name: report(plain, 100)},
                                                "sparse_tta": {name: report(tta, 100)}}}
                                for seed, (plain, tta) in by_seed.items()]}
                for name, by_seed in runs.items()}
    path.write_text(json.dumps({"config": config, "concepts": "concepts.json", "stages": list(stages),
                                "seeds": sorted({s for r in runs.values() for s in r}), "left_out": left_out,
                                **({"machine": machine} if machine else {})}))
    return path


def combine(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/leave_one_out.py", "--combine", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_combine_reads_seeds_from_several_files_and_compares_settings(tmp_path):
    first = results_file(tmp_path / "a.json", 0.05, {"alpha": {0: (50, 60)}, "beta": {0: (30, 30)}})
    later = results_file(tmp_path / "b.json", 0.05, {"alpha": {1: (70, 60)}, "beta": {1: (40, 50)}})
    other = results_file(tmp_path / "c.json", 0.0, {"alpha": {0: (40, 40), 1: (80, 80)},
                                                     "beta": {0: (30, 30), 1: (30, 30)}})
    done = combine(first, later, "--against", other)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "seeds 0, 1" in out and "| alpha | tumour | other_set | 100 | 0.600 ± 0.141 (worst 0.500) |" in out
    assert "stain_jitter 0.05 vs 0.0" in out
    # alpha: 0.50, 0.70 (sd 0.141) against 0.40, 0.80: +0.10 and -0.10; TTA 0.60, 0.60: +0.20 and -0.20.
    assert "| alpha | 0,1 | 0.600 ± 0.141, worst 0.500 | 0.600 ± 0.000, worst 0.600 |" in out
    assert ("| alpha: difference | 0,1 | +0.000, not behind in 1/2 (-0.100 to +0.100) | "
            "+0.000, not behind in 1/2 (-0.200 to +0.200) |") in out
    # beta ties on seed 0 (0.30 and 0.30): a tie is not behind.
    assert "| beta: difference | 0,1 | +0.050, not behind in 2/2 (+0.000 to +0.100) |" in out
    # The mean of the two left-out datasets per seed: 0.40 and 0.55 against 0.35 and 0.55.
    assert "| mean of the 2 | 0,1 | 0.475 ± 0.106, worst 0.400 |" in out
    assert "| mean of the 2: difference | 0,1 | +0.025, not behind in 2/2 (+0.000 to +0.050) |" in out
    assert "kinds of machine" not in out   # all on one machine: the seeds are paired


def test_the_mean_row_averages_only_the_datasets_both_settings_left_out(tmp_path):
    # A run stopped after two of its three datasets: its mean row must not be set against a mean that
    # includes the third.
    stopped = results_file(tmp_path / "a.json", 0.05, {"alpha": {0: (50, 50)}, "beta": {0: (30, 30)}})
    whole = results_file(tmp_path / "b.json", 0.0, {"alpha": {0: (40, 40)}, "beta": {0: (30, 30)},
                                                     "gamma": {0: (90, 90)}})
    done = combine(stopped, "--against", whole)
    assert done.returncode == 0, done.stderr
    assert "| mean of the 2 | 0 | 0.400 |" in done.stdout
    assert "| mean of the 2: difference | 0 | +0.050, not behind in 1/1 (+0.050 to +0.050) |" in done.stdout
    assert "mean of the 3" not in done.stdout
    alone = combine(results_file(tmp_path / "c.json", 0.05, {"alpha": {0: (50, 50)}}))
    assert alone.returncode == 0, alone.stderr
    assert "mean of the" not in alone.stdout


def test_combine_says_when_runs_come_from_other_machines(tmp_path):
    avx512 = {**AVX2, "cpu": "Intel Xeon", "cpu_capability": "AVX512"}
    first = results_file(tmp_path / "a.json", 0.05, {"alpha": {0: (50, 60)}})
    elsewhere = results_file(tmp_path / "b.json", 0.05, {"alpha": {1: (70, 60)}}, machine=avx512)
    unrecorded = results_file(tmp_path / "c.json", 0.0, {"alpha": {0: (40, 40), 1: (80, 80)}}, machine=None)
    done = combine(first, elsewhere, "--against", unrecorded)
    assert done.returncode == 0, done.stderr
    note = done.stdout.strip().splitlines()[-1]
    assert note.startswith("note: these runs come from 3 kinds of machine (some files do not record theirs)")
    assert '"cpu_capability": "AVX512"' in note and "paired only where both settings ran on one machine" in note


def test_combine_refuses_mixed_settings_stages_and_a_seed_twice(tmp_path):
    first = results_file(tmp_path / "a.json", 0.05, {"alpha": {0: (50, 60)}})
    other = results_file(tmp_path / "other.json", 0.0, {"alpha": {1: (50, 60)}})
    done = combine(first, other)
    assert done.returncode == 2
    assert "other.json: another setting than" in done.stderr and "stain_jitter 0.0 vs 0.05" in done.stderr

    again = results_file(tmp_path / "again.json", 0.05, {"alpha": {0: (51, 61)}})
    done = combine(first, again)
    assert done.returncode == 2 and "again.json: seed 0 without alpha is also in" in done.stderr

    three = results_file(tmp_path / "three.json", 0.05, {"alpha": {2: (50, 60)}},
                         stages=("sparse", "correlation", "completion"))
    done = combine(first, three)
    assert done.returncode == 2 and "three.json: stages sparse correlation completion" in done.stderr

    done = combine(tmp_path / "missing.json")
    assert done.returncode == 2 and "missing.json: not a results file of this benchmark" in done.stderr


def test_a_config_field_added_later_reads_as_its_default_in_older_files(tmp_path):
    older = results_file(tmp_path / "older.json", 0.0, {"alpha": {0: (50, 60)}})   # from before the field
    newer = results_file(tmp_path / "newer.json", 0.0, {"alpha": {1: (70, 60)}}, stain_normalisation="none")
    done = combine(older, newer)
    assert done.returncode == 0, done.stderr
    assert "| alpha | 0,1 |" in done.stdout
    normalised = results_file(tmp_path / "macenko.json", 0.0, {"alpha": {2: (70, 60)}}, stain_normalisation="macenko")
    done = combine(older, normalised)
    assert done.returncode == 2 and "stain_normalisation 'macenko' vs 'none'" in done.stderr
    done = combine(normalised, "--against", older, newer)
    assert done.returncode == 0 and "stain_normalisation 'macenko' vs 'none'" in done.stdout
