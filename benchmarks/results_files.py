"""What the benchmarks' ``--combine`` modes share: reading results files written in several sessions,
telling whether they hold one setting, and saying when they come from more than one kind of machine.

A setting is a run's config without the fields that only pick the draw or the speed (``NOT_A_SETTING``).
Runs of one setting combine into one table over their seeds; runs of two settings are compared seed by
seed, and that pairing means something only where both ran on the same kind of machine
(``train_real.machine_facts``), hence the note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mlcore.config import TrainConfig

# Config fields that do not change what is trained, only how fast or which draw.
NOT_A_SETTING = {"seed", "num_threads", "cache_dir"}
# Environment variables that make PyTorch, oneDNN and MKL use an older instruction set's kernels. With all
# three set to AVX2 an AVX-512 machine reproduced an AVX2 machine's run to the last digit, so such a run
# is of the kind its ``cpu_capability`` names; with only some of them it is a kind of its own.
KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def read_results(path: Path, *required: str) -> dict:
    """A results file as a dict; ValueError naming the file when it is not one (or lacks ``required``)."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a results file of this benchmark ({exc})") from None
    missing = [key for key in ("config", *required) if not isinstance(results, dict) or key not in results]
    if missing:
        raise ValueError(f"{path}: not a results file of this benchmark (no {', '.join(missing)})")
    return results


def setting_of(config: dict) -> dict:
    """The config as a setting. A field added to the config after a file was written is read as what that
    run trained with: the field's default (stain_normalisation "none" in files from before it), or, where
    the default changed later, the value TrainConfig.saved gives it (no context view)."""
    full = {**TrainConfig().to_dict(), **TrainConfig.saved(config)}
    if not full.get("crop_context_view"):
        # Without a wider view there is none to drop out: any value trains the same network.
        full.pop("context_view_dropout", None)
    return {k: v for k, v in full.items() if k not in NOT_A_SETTING}


def setting_changes(ours: dict, theirs: dict) -> str:
    """``field ours vs theirs`` for every field where two settings differ ('' when they do not)."""
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    return ", ".join(f"{k} {ours.get(k)!r} vs {theirs.get(k)!r}" for k in changed)


def check_same_setting(path: Path, setting: dict, first_path: Path, first_setting: dict) -> None:
    if setting != first_setting:
        raise ValueError(f"{path}: another setting than {first_path} ({setting_changes(setting, first_setting)}); "
                         "pass it with --against")


def machine_kind(machine: dict | None) -> dict | None:
    """A results file's machine facts as the kind of machine its figures belong to: kernels limited by
    all of :data:`KERNEL_LIMITS` to the instruction set ``cpu_capability`` names are that set's own."""
    if not machine or "kernel_limits" not in machine:
        return machine
    limits = machine["kernel_limits"]
    capability = str(machine.get("cpu_capability", "")).lower()
    if set(limits) == set(KERNEL_LIMITS) and all(str(v).lower() == capability for v in limits.values()):
        return {k: v for k, v in machine.items() if k != "kernel_limits"}
    return machine


def machines_note(machines: Iterable[dict | None]) -> str | None:
    """A line when runs come from more than one kind of machine (or an unrecorded one): the same seed is
    then another draw, not the same run."""
    kinds = {json.dumps(machine_kind(machine), sort_keys=True) for machine in machines}
    if len(kinds) <= 1 and "null" not in kinds:
        return None
    named = sorted(k for k in kinds if k != "null")
    return (f"note: these runs come from {len(kinds)} kinds of machine"
            + (" (some files do not record theirs)" if "null" in kinds else "")
            + (": " + "; ".join(named) if named else "")
            + ". A seed's figures differ between machines whose CPU kernels differ, so a difference seed by "
              "seed is paired only where both settings ran on one machine.")


def difference_cell(ours: dict[int, float], theirs: dict[int, float]) -> str:
    """Mean of the per-seed differences over the seeds both have, how many are not behind, and their range."""
    common = sorted(set(ours) & set(theirs))
    # Rounded so that a tie counts as a tie, not as float noise either side of it.
    diffs = [round(ours[s] - theirs[s], 9) for s in common]
    if not diffs:
        return "-"
    mean = round(sum(diffs) / len(diffs), 9) + 0.0
    return (f"{mean:+.3f}, not behind in {sum(d >= 0 for d in diffs)}/{len(diffs)} "
            f"({min(diffs):+.3f} to {max(diffs):+.3f})")
