"""A new model version against the active version it replaced, both scored on the new version's validation
nuclei (webapp.training.runner.compared_with_parent stores it as the version's ``training_data["compared_with"]``):
{"version": number, "tta": bool, "label_sets": {name: {n, macro_f1, previous_macro_f1, accuracy, previous_accuracy,
difference_interval}}}, or {"version": number, "skipped": why}. ``difference_interval`` is the paired bootstrap
95% interval of the macro-F1 difference (mlcore.metrics.macro_f1_difference_interval)."""

from __future__ import annotations


def is_lower(row: dict) -> bool:
    """Lower beyond chance: the whole interval of the difference is below 0. On a small validation set a
    lower figure alone is often noise, and a guard that read it so would keep the old version at random."""
    return row["difference_interval"][1] < 0


def lower_label_sets(comparison: dict | None) -> list[str]:
    """The label sets where the new version is lower than the version it replaces beyond chance (none when
    they could not be compared)."""
    return [name for name, row in ((comparison or {}).get("label_sets") or {}).items() if is_lower(row)]


def interval_text(row: dict) -> str:
    low, high = row["difference_interval"]
    return f"{low:+.3f} to {high:+.3f}"


def describe_comparison(comparison: dict) -> str:
    """One log line: each label set's macro-F1, the new version's against the one it replaces."""
    if "skipped" in comparison:
        return f"no comparison with the active version: {comparison['skipped']}"
    number = comparison["version"]
    parts = [f"{name} {c['macro_f1']:.3f} (v{number} {c['previous_macro_f1']:.3f}, "
             f"{c['macro_f1'] - c['previous_macro_f1']:+.3f}, 95% interval {interval_text(c)}, n={c['n']})"
             for name, c in comparison["label_sets"].items()]
    views = ", both with test-time augmentation" if comparison.get("tta") else ""
    return (f"macro-F1 on this training's validation nuclei, against v{number} on the same nuclei{views}: "
            + ("; ".join(parts) or "no label set in common"))


def comparison_with_replaced(version) -> dict | None:
    """The version against the active version it replaced, both scored on this version's validation nuclei
    (webapp.training.runner.compared_with_parent), for the pages: the rows per label set and those lower."""
    compared = (version.training_data or {}).get("compared_with")
    if not compared:
        return None
    lower = lower_label_sets(compared)
    rows = [{"name": name, "n": c["n"], "macro_f1": c["macro_f1"], "previous": c["previous_macro_f1"],
             "difference": f"{c['macro_f1'] - c['previous_macro_f1']:+.3f}", "interval": interval_text(c),
             "lower": name in lower}
            for name, c in (compared.get("label_sets") or {}).items()]
    return {"version": compared["version"], "skipped": compared.get("skipped"), "tta": bool(compared.get("tta")), "rows": rows,
            "lower": [row for row in rows if row["lower"]]}
