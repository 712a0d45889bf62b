"""Concept maps: which classes of different taxonomies name the same kind of nucleus, and how often
a model completes a nucleus labelled in one taxonomy with a concept-equivalent class in another.

A concept map is a JSON file::

    {
      "concepts": {
        "inflammatory": {"consep": ["inflammatory"], "pannuke": ["inflammatory"], "nucls": ["sTIL"]},
        "tumour": {"consep": ["epithelial"], "pannuke": ["neoplastic"], "nucls": ["tumor_any"]}
      },
      "notes": {"tumour": "why these classes and not others"}
    }

``concepts`` maps a concept name to ``{label set name: [class names]}``; ``notes`` is free text,
kept and ignored. The relation is symmetric: every class listed under a concept is taken to be
that concept, so a nucleus of any listed class counts as a member, and each listed class is an
acceptable answer in its label set. A class broader than the concept (a "not neoplastic" class
that holds lymphocytes and normal epithelium alike) does not belong in one.

**Completion accuracy** (:func:`concept_completion`): for every nucleus whose true class in its own
(source) label set belongs to a concept, and for every other label set the model predicts that has
classes in that concept, the share of those nuclei whose predicted class there is one of the
concept's classes. It is the method's promise put to a test: a lymphocyte labelled in NuCLS's
taxonomy should come out "inflammatory" in CoNSeP's.

Everything here is plain Python and NumPy (no torch) except :func:`model_completion`, which
imports the predictor when called.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlcore.config import ConfigError


class ConceptMapError(ConfigError):
    """A bad concept map; the message names the file and the field."""


@dataclass(frozen=True)
class ConceptMap:
    concepts: dict[str, dict[str, tuple[str, ...]]]   # concept -> label set -> class names
    source: str = "concept map"                       # the file, for messages
    notes: object = None

    def label_set_names(self) -> set[str]:
        return {name for members in self.concepts.values() for name in members}

    def concepts_of(self, label_set: str, class_name: str) -> list[str]:
        """The concepts a class of ``label_set`` belongs to (usually none or one)."""
        return [concept for concept, members in self.concepts.items() if class_name in members.get(label_set, ())]

    def check(self, label_sets: Mapping[str, Sequence[str]], strict: bool = True) -> list[str]:
        """Every class the map names must exist: ``label_sets`` maps each label set in play (the
        model's and the scored dataset's) to its class names. A label set not in play is an error
        when ``strict``; otherwise it is not scored, and the returned notes say so (one map can
        then serve models of different datasets)."""
        notes = []
        for concept, members in self.concepts.items():
            for set_name, class_names in members.items():
                where = f"{self.source}: concepts.{concept}.{set_name}"
                if set_name not in label_sets:
                    if strict:
                        raise ConceptMapError(f"{where}: unknown label set {set_name!r} "
                                              f"(known: {', '.join(label_sets)})")
                    notes.append(f"{where}: label set {set_name!r} is not in play "
                                 f"({', '.join(label_sets)}); not scored")
                    continue
                known = list(label_sets[set_name])
                for class_name in class_names:
                    if class_name not in known:
                        raise ConceptMapError(f"{where}: unknown class {class_name!r} in label set {set_name!r} "
                                              f"(known: {', '.join(known)})")
        return notes

    def targets_for(self, source: str, target_names: Sequence[str]) -> list[str]:
        """The target label sets that some concept links with ``source`` (in ``target_names``' order)."""
        linked = {name for members in self.concepts.values() if source in members for name in members}
        return [name for name in target_names if name != source and name in linked]


def parse_concept_map(raw: object, source: str = "concept map") -> ConceptMap:
    """A :class:`ConceptMap` from parsed JSON; errors name ``source`` and the field."""
    if not isinstance(raw, dict):
        raise ConceptMapError(f"{source}: a concept map must be a JSON object with a 'concepts' field")
    unknown = set(raw) - {"concepts", "notes"}
    if unknown:
        raise ConceptMapError(f"{source}: unknown field(s) {', '.join(sorted(unknown))} (known: concepts, notes)")
    concepts = raw.get("concepts")
    if not isinstance(concepts, dict) or not concepts:
        raise ConceptMapError(f"{source}: field 'concepts' must be a non-empty object "
                              "{concept: {label set: [class names]}}")
    parsed: dict[str, dict[str, tuple[str, ...]]] = {}
    for concept, members in concepts.items():
        where = f"{source}: concepts.{concept}"
        if not concept.strip():
            raise ConceptMapError(f"{source}: concepts: a concept name is empty")
        if not isinstance(members, dict) or not members:
            raise ConceptMapError(f"{where} must be a non-empty object {{label set: [class names]}}")
        parsed[concept] = {}
        for set_name, class_names in members.items():
            if isinstance(class_names, str):
                class_names = [class_names]
            if (not isinstance(class_names, list) or not class_names
                    or not all(isinstance(c, str) and c for c in class_names)):
                raise ConceptMapError(f"{where}.{set_name} must be a non-empty list of class names")
            if len(set(class_names)) != len(class_names):
                raise ConceptMapError(f"{where}.{set_name} repeats a class: {class_names}")
            parsed[concept][set_name] = tuple(class_names)
        if len(parsed[concept]) < 2:
            raise ConceptMapError(f"{where} names one label set only ({next(iter(members))}); a concept links "
                                  "classes of at least two")
    return ConceptMap(parsed, source, raw.get("notes"))


def load_concept_map(path: str | Path) -> ConceptMap:
    """Read a concept map file (see the module docstring); errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConceptMapError(f"{path}: concept map not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConceptMapError(f"{path}: unreadable concept map ({exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConceptMapError(f"{path}: not valid JSON ({exc})") from None
    return parse_concept_map(raw, str(path))


# ---------------------------------------------------------------------------------------------- scoring


def concept_completion(predictions: Mapping[str, Sequence[str]], true_labels: Sequence[str | None],
                       source_label_set: str, concept_map: ConceptMap) -> dict:
    """Completion accuracy of predicted classes against the concepts of the true ones.

    - ``predictions``: per label set the model predicts, the predicted class *name* of every nucleus;
    - ``true_labels``: the true class name of every nucleus in ``source_label_set`` (None = unknown);
    - returns ``{"source", "targets", "nuclei", "cells": [...], "mean", "pooled"}``, one cell per
      (concept, target label set) with ``n`` member nuclei, ``hits``, ``completion`` = hits / n,
      the ``source_classes`` and ``target_classes`` of the concept and the ``predicted`` class counts.
      ``mean`` is the unweighted mean of the cells' completion (every concept and taxonomy counts
      alike), ``pooled`` = all hits / all n; both None when no cell has a nucleus. ``nuclei`` counts
      the nuclei that belong to some concept.

    The source label set itself is never a target, even when the model predicts it.
    """
    true = np.asarray([label if label is not None else "" for label in true_labels], dtype=object)
    targets = concept_map.targets_for(source_label_set, list(predictions))
    cells = []
    in_any = np.zeros(len(true), dtype=bool)
    for concept, members in concept_map.concepts.items():
        source_classes = members.get(source_label_set)
        if not source_classes:
            continue
        member = np.isin(true, source_classes)
        in_any |= member
        for target in targets:
            target_classes = members.get(target)
            if not target_classes:
                continue
            predicted = np.asarray(predictions[target], dtype=object)
            if len(predicted) != len(true):
                raise ValueError(f"{len(predicted)} predictions in label set {target!r} for {len(true)} nuclei")
            chosen = predicted[member]
            hits = int(np.isin(chosen, target_classes).sum())
            n = int(member.sum())
            cells.append({"concept": concept, "target": target, "n": n, "hits": hits,
                          "completion": hits / n if n else None,
                          "source_classes": list(source_classes), "target_classes": list(target_classes),
                          "predicted": dict(Counter(chosen.tolist()).most_common())})
    scored = [cell for cell in cells if cell["n"]]
    total = sum(cell["n"] for cell in scored)
    return {"source": source_label_set, "targets": targets, "nuclei": int(in_any.sum()), "cells": cells,
            "mean": statistics.mean(cell["completion"] for cell in scored) if scored else None,
            "pooled": sum(cell["hits"] for cell in scored) / total if total else None}


def model_completion(model, crops, true_labels: Sequence[str | None], source_label_set: str,
                     concept_map: ConceptMap, device=None, batch_size: int = 512, tta: bool = False,
                     progress=None) -> dict:
    """:func:`concept_completion` of a model's predictions on ``crops`` (every label set it has;
    ``tta``: the mean over the 8 symmetries, ``progress``: see :func:`mlcore.predict.forward_logits`)."""
    from mlcore.predict import predict

    predictions = predict(model, crops, batch_size=batch_size, device=device, tta=tta, progress=progress)
    names = {name: np.asarray(prediction.classes, dtype=object)[prediction.labels]
             for name, prediction in predictions.items()}
    return concept_completion(names, true_labels, source_label_set, concept_map)


def class_names_of(labels: np.ndarray, classes: Sequence[str]) -> list[str | None]:
    """Class indices (``-1`` = missing) as names (None = missing)."""
    return [classes[i] if i >= 0 else None for i in np.asarray(labels).tolist()]


# --------------------------------------------------------------------------------------------- printing


def format_completion(report: dict, title: str = "") -> str:
    """One report as a readable table: a row per (concept, target), with the most frequent miss."""
    lines = [title or f"completion of {report['source']} nuclei into {', '.join(report['targets']) or 'no label set'}"]
    rows = [("concept", "target", "n", "completion", "most frequent miss")]
    for cell in report["cells"]:
        misses = [(name, count) for name, count in cell["predicted"].items() if name not in cell["target_classes"]]
        miss = f"{misses[0][0]} ({misses[0][1]})" if misses else ""
        completion = f"{cell['completion']:.3f}" if cell["completion"] is not None else "-"
        rows.append((cell["concept"], cell["target"], str(cell["n"]), completion, miss))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    mean = f"{report['mean']:.3f}" if report["mean"] is not None else "-"
    pooled = f"{report['pooled']:.3f}" if report["pooled"] is not None else "-"
    lines.append(f"mean over rows {mean}, pooled {pooled} ({report['nuclei']} nuclei in a concept)")
    return "\n".join(lines)


def completion_markdown(runs: Sequence[Mapping[str, Mapping[str, dict]]], models: Sequence[tuple[str, str]],
                        first_column: str = "source") -> str:
    """A Markdown table of completion over seeds: ``runs[seed][model][source] = report``.

    ``models`` is ``[(key, title), ...]`` in column order; a model absent from the runs is left out.
    Each cell is the mean over seeds, ``± sd`` and the worst seed when there are several. A
    ``mean`` row per source gives the reports' ``mean`` (over their rows) the same way.
    """
    models = [(key, title) for key, title in models if all(key in run for run in runs)]
    several = len(runs) > 1

    def cell(values: list[float | None]) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if not several or len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (worst {min(values):.3f})"

    header = f"| {first_column} | concept | target | n | " + " | ".join(title for _, title in models) + " |"
    lines = [header, "|" + "---|" * (4 + len(models))]
    if not models:
        return "\n".join(lines)
    sources = list(dict.fromkeys(source for run in runs for source in run[models[0][0]]))
    for source in sources:
        first = runs[0][models[0][0]].get(source)
        if first is None:
            continue
        for index, row in enumerate(first["cells"]):
            values = [[run[key][source]["cells"][index]["completion"] for run in runs if source in run[key]]
                      for key, _ in models]
            lines.append(f"| {source} | {row['concept']} | {row['target']} | {row['n']} | "
                         + " | ".join(cell(v) for v in values) + " |")
        means = [[run[key][source]["mean"] for run in runs if source in run[key]] for key, _ in models]
        lines.append(f"| {source} | **mean** | | {first['nuclei']} | " + " | ".join(cell(v) for v in means) + " |")
    return "\n".join(lines)
