"""benchmarks/train_real.py --combine: validation runs of one setting made apart are read back as one
macro-F1 table, and --against prints the difference to another setting seed by seed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AVX512 = {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "torch": "2.13.0+cpu", "cores": 2}


def report(macro_f1: float, n: int = 100) -> dict:
    return {"n": n, "accuracy": 0.9, "macro_f1": macro_f1, "weighted_f1": 0.9, "per_class": {}}


def results_file(path: Path, stain: float, runs: dict[int, dict[str, dict[str, float]]],
                 machine: dict | None = AVX512, **fields) -> Path:
    """A train_real results.json with ``runs[seed][model][label set] = macro-F1``."""
    config = {"backbone": "small", "stain_jitter": stain, "seed": 0, "num_threads": 1, **fields}
    path.write_text(json.dumps({
        "config": config, "seeds": sorted(runs), "concepts": "none",
        "runs": [{"seed": seed, "seconds": {"cross": 1.0},
                  "metrics": {model: {name: report(f1, 4413 if name == "consep" else 54) for name, f1 in scores.items()}
                              for model, scores in by_model.items()}}
                 for seed, by_model in runs.items()],
        **({"machine": machine} if machine else {})}))
    return path


def combine(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/train_real.py", "--combine", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_combine_reads_seeds_from_several_files_and_compares_settings(tmp_path):
    first = results_file(tmp_path / "a.json", 0.025, {0: {"sparse": {"consep": 0.70, "nucls": 0.50},
                                                          "sparse_tta": {"consep": 0.72, "nucls": 0.50}}})
    later = results_file(tmp_path / "b.json", 0.025, {1: {"sparse": {"consep": 0.66, "nucls": 0.60},
                                                          "sparse_tta": {"consep": 0.70, "nucls": 0.55}},
                                                      2: {"sparse": {"consep": 0.68, "nucls": 0.40},
                                                          "sparse_tta": {"consep": 0.71, "nucls": 0.45}}})
    # The other setting's seeds 0-1 come from a three-stage run: its stage 1 is compared, its cross is not shown.
    other = results_file(tmp_path / "c.json", 0.0, {
        0: {"sparse": {"consep": 0.65, "nucls": 0.50}, "sparse_tta": {"consep": 0.66, "nucls": 0.52},
            "cross": {"consep": 0.9, "nucls": 0.9}},
        1: {"sparse": {"consep": 0.67, "nucls": 0.62}, "sparse_tta": {"consep": 0.68, "nucls": 0.58},
            "cross": {"consep": 0.9, "nucls": 0.9}}})
    done = combine(first, later, "--against", other)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "the difference is --combine minus --against: stain_jitter 0.025 vs 0.0" in out
    # consep: 0.70, 0.66, 0.68 (sd 0.02) against 0.65, 0.67 on seeds 0-1: +0.05 and -0.01.
    assert ("| consep | 4413 | sparse (stage 1) | 0,1,2 | 0.680 ± 0.020 (worst 0.660) | 0,1 | 0.660 ± 0.014 "
            "(worst 0.650) | +0.020, not behind in 1/2 (-0.010 to +0.050) |") in out
    # nucls seed 0 ties (0.50 and 0.50): a tie is not behind.
    assert "| nucls | 54 | sparse (stage 1) | 0,1,2 | 0.500 ± 0.100 (worst 0.400) |" in out
    assert "| -0.010, not behind in 1/2 (-0.020 to +0.000) |" in out
    assert "| consep | 4413 | sparse, TTA | 0,1,2 |" in out
    assert "cross (1+2+3)" not in out   # not in every run
    assert out.index("| consep | 4413 | sparse, TTA") < out.index("| nucls | 54 | sparse (stage 1)")
    assert "kinds of machine" not in out   # all on one machine: the seeds are paired

    alone = combine(first, later)
    assert alone.returncode == 0, alone.stderr
    assert "| consep | 4413 | sparse (stage 1) | 0,1,2 | 0.680 ± 0.020 (worst 0.660) |\n" in alone.stdout


def test_combine_says_when_runs_come_from_other_machines(tmp_path):
    avx2 = {**AVX512, "cpu_capability": "AVX2"}
    first = results_file(tmp_path / "a.json", 0.0, {0: {"sparse": {"consep": 0.7}}})
    elsewhere = results_file(tmp_path / "b.json", 0.0, {1: {"sparse": {"consep": 0.6}}}, machine=avx2)
    done = combine(first, elsewhere)
    assert done.returncode == 0, done.stderr
    note = done.stdout.strip().splitlines()[-1]
    assert note.startswith("note: these runs come from 2 kinds of machine: ")
    assert '"cpu_capability": "AVX2"' in note and "paired only where both settings ran on one machine" in note


def test_runs_on_kernels_limited_to_avx2_pair_with_an_avx2_machine_only_when_all_three_are_limited(tmp_path):
    avx2 = {**AVX512, "cpu_capability": "AVX2"}
    limits = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    on_avx2 = results_file(tmp_path / "a.json", 0.0, {0: {"sparse": {"consep": 0.7}}}, machine=avx2)
    limited = results_file(tmp_path / "b.json", 0.0, {1: {"sparse": {"consep": 0.6}}},
                           machine={**avx2, "kernel_limits": limits})
    done = combine(on_avx2, limited)
    assert done.returncode == 0, done.stderr
    assert "kinds of machine" not in done.stdout   # one kind: the seeds are paired

    partly = {**avx2, "kernel_limits": {"ATEN_CPU_CAPABILITY": "avx2"}}   # oneDNN and MKL still AVX-512
    partial = results_file(tmp_path / "c.json", 0.0, {2: {"sparse": {"consep": 0.6}}}, machine=partly)
    done = combine(on_avx2, partial)
    assert done.returncode == 0, done.stderr
    assert "note: these runs come from 2 kinds of machine" in done.stdout and '"kernel_limits"' in done.stdout


def test_machine_facts_keep_the_kernel_limits_the_run_was_started_with():
    code = ("import json, sys; sys.path.insert(0, '.'); from benchmarks.train_real import machine_facts; "
            "print(json.dumps(machine_facts()))")
    env = {"PATH": "/usr/bin:/bin", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    facts = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                                      text=True, check=True).stdout)
    assert facts["kernel_limits"] == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert facts["cores"] >= 1 and facts["torch"]


def test_combine_refuses_mixed_settings_a_seed_twice_and_other_files(tmp_path):
    first = results_file(tmp_path / "a.json", 0.025, {0: {"sparse": {"consep": 0.7}}})
    other = results_file(tmp_path / "other.json", 0.0, {1: {"sparse": {"consep": 0.7}}})
    done = combine(first, other)
    assert done.returncode == 2
    assert "other.json: another setting than" in done.stderr and "stain_jitter 0.0 vs 0.025" in done.stderr

    again = results_file(tmp_path / "again.json", 0.025, {0: {"sparse": {"consep": 0.71}}})
    done = combine(first, again)
    assert done.returncode == 2 and "again.json: seed 0 is also in" in done.stderr

    # A leave-one-out results file is not a train_real one.
    loo = tmp_path / "loo.json"
    loo.write_text(json.dumps({"config": {}, "stages": ["sparse"], "left_out": {}}))
    done = combine(loo)
    assert done.returncode == 2 and "loo.json: not a results file of this benchmark (no runs)" in done.stderr
    assert "Traceback" not in done.stderr


def test_view_dropout_is_part_of_a_setting_only_with_a_context_view():
    from benchmarks.results_files import setting_of

    # Runs without a wider view train the same network whatever the dropout, so they combine.
    assert setting_of({"context_view_dropout": 0.0}) == setting_of({}) == setting_of({"context_view_dropout": 0.5})
    # With one, a file from before the option (no dropout) is another setting than today's default.
    before = setting_of({"crop_context_view": 2, "context_view_dropout": 0.0})
    assert before != setting_of({"crop_context_view": 2})
    assert setting_of({"crop_context_view": 2})["context_view_dropout"] == 0.5


def test_files_from_before_the_context_view_field_trained_without_one():
    from benchmarks.results_files import setting_of
    from mlcore.config import TrainConfig

    # The context view is the default now; a file whose config has no such field is of plain RGB crops.
    assert TrainConfig().crop_context_view == 2
    assert setting_of({})["crop_context_view"] == 0 and "context_view_dropout" not in setting_of({})
    assert setting_of({"crop_context_view": 2}) == setting_of(TrainConfig().to_dict())


def test_single_only_runs_join_the_merged_runs_of_their_seeds(tmp_path):
    merged = results_file(tmp_path / "merged.json", 0.025, {
        0: {"sparse": {"consep": 0.70}, "cross": {"consep": 0.72}, "cross_tta": {"consep": 0.75}},
        1: {"sparse": {"consep": 0.66}, "cross": {"consep": 0.69}, "cross_tta": {"consep": 0.70}}})
    single = results_file(tmp_path / "single.json", 0.025, {0: {"single": {"consep": 0.71}},
                                                            1: {"single": {"consep": 0.65}}})
    done = combine(merged, single)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| consep | 4413 | single | 0,1 | 0.680 ± 0.042 (worst 0.650) |" in out
    assert "| consep | 4413 | cross (1+2+3) | 0,1 | 0.705 ± 0.021 (worst 0.690) |" in out
    # cross minus single: +0.01 and +0.04; sparse minus single: -0.01 and +0.01.
    assert "against the single-dataset models, seed by seed" in out
    assert "| +0.025 (2/2 seeds >= 0) |" in out and "| +0.000 (1/2 seeds >= 0) |" in out
    # No TTA difference: the single models were not scored with it.
    tta_row = next(line for line in out.splitlines() if line.startswith("| consep | 4413 | cross, TTA | 0.") and "±" in line
                   and "worst" not in line)
    assert tta_row.endswith("|  |")

    # Single models scored with TTA too (train_real.py --tta): the TTA rows get their like-for-like difference.
    with_tta = results_file(tmp_path / "single_tta.json", 0.025, {
        0: {"single": {"consep": 0.71}, "single_tta": {"consep": 0.73}},
        1: {"single": {"consep": 0.65}, "single_tta": {"consep": 0.71}}})
    done = combine(merged, with_tta)
    assert done.returncode == 0, done.stderr
    assert "| consep | 4413 | single, TTA | 0,1 | 0.720 ± 0.014 (worst 0.710) |" in done.stdout
    tta_row = next(line for line in done.stdout.splitlines() if line.startswith("| consep | 4413 | cross, TTA | 0.")
                   and "±" in line and "worst" not in line)
    assert tta_row.endswith("| +0.005 (1/2 seeds >= 0) |")   # +0.02 and -0.01

    # The same model twice for a seed is still refused, and so is a seed from another kind of machine.
    again = results_file(tmp_path / "again.json", 0.025, {0: {"single": {"consep": 0.5}}})
    done = combine(merged, single, again)
    assert done.returncode == 2 and "again.json: seed 0 is also in" in done.stderr
    elsewhere = results_file(tmp_path / "elsewhere.json", 0.025, {0: {"single": {"consep": 0.5}}},
                             machine={**AVX512, "cpu_capability": "AVX2"})
    done = combine(merged, elsewhere)
    assert done.returncode == 2 and "from another kind of machine" in done.stderr
