"""Agreement between reviewers: Cohen's kappa per pair of reviewers and per class (one vs rest).

Framework-free (plain Python and NumPy) so that it can be tested against hand-computed values and
used outside Django. Ratings are ``{reviewer: {item: class index}}``; two reviewers are compared on
the items both rated.

Cohen's kappa: ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed share of agreement and ``p_e``
the agreement expected by chance from each reviewer's own class frequencies. It is undefined (None
here) when ``p_e == 1``, i.e. both reviewers used one and the same class for every item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np


def confusion(a: Sequence[int], b: Sequence[int], n_classes: int | None = None) -> np.ndarray:
    """``m[i, j]`` = number of items rated ``i`` by the first reviewer and ``j`` by the second."""
    a_arr, b_arr = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"both reviewers need the same items: {a_arr.shape} != {b_arr.shape}")
    if a_arr.size and min(a_arr.min(), b_arr.min()) < 0:
        raise ValueError("class indices must be >= 0")
    size = n_classes if n_classes is not None else (int(max(a_arr.max(), b_arr.max())) + 1 if a_arr.size else 0)
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (a_arr, b_arr), 1)
    return matrix


def kappa_from_confusion(matrix: np.ndarray) -> float | None:
    n = matrix.sum()
    if n == 0:
        return None
    observed = np.trace(matrix) / n
    expected = float((matrix.sum(axis=1) / n) @ (matrix.sum(axis=0) / n))
    if np.isclose(expected, 1.0):
        return None
    return float((observed - expected) / (1.0 - expected))


def cohen_kappa(a: Sequence[int], b: Sequence[int], n_classes: int | None = None) -> float | None:
    """Cohen's kappa of two reviewers' classes for the same items (None when undefined or no items)."""
    return kappa_from_confusion(confusion(a, b, n_classes))


def observed_agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    if len(a) == 0:
        return None
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def one_vs_rest_kappa(a: Sequence[int], b: Sequence[int], cls: int) -> float | None:
    """Kappa of the binary question "is it class ``cls``?" for both reviewers."""
    return cohen_kappa([int(x == cls) for x in a], [int(x == cls) for x in b], n_classes=2)


@dataclass
class PairAgreement:
    a: Hashable
    b: Hashable
    n: int
    observed: float | None
    kappa: float | None


@dataclass
class ClassAgreement:
    index: int
    n: int             # rating pairs in which at least one reviewer chose this class
    kappa: float | None


@dataclass
class AgreementReport:
    pairs: list[PairAgreement] = field(default_factory=list)
    classes: list[ClassAgreement] = field(default_factory=list)
    overall_kappa: float | None = None   # all reviewer pairs' shared items pooled
    overall_n: int = 0
    conflicts: list[Hashable] = field(default_factory=list)  # items on which reviewers disagree


def shared_items(ratings: Mapping[Hashable, Mapping[Hashable, int]], a: Hashable, b: Hashable) -> list:
    both = set(ratings[a]) & set(ratings[b])
    return sorted(both, key=lambda item: (str(type(item)), item))


def agreement_report(ratings: Mapping[Hashable, Mapping[Hashable, int]], n_classes: int) -> AgreementReport:
    """Kappa per pair of reviewers (on their shared items), per class (one vs rest, over every pair's
    shared items pooled), overall, and the items whose reviewers disagree."""
    report = AgreementReport()
    pooled_a: list[int] = []
    pooled_b: list[int] = []
    reviewers = sorted(ratings, key=str)
    for a, b in combinations(reviewers, 2):
        items = shared_items(ratings, a, b)
        if not items:
            continue
        xs = [ratings[a][item] for item in items]
        ys = [ratings[b][item] for item in items]
        report.pairs.append(PairAgreement(a, b, len(items), observed_agreement(xs, ys),
                                          cohen_kappa(xs, ys, n_classes)))
        pooled_a += xs
        pooled_b += ys
    report.overall_n = len(pooled_a)
    report.overall_kappa = cohen_kappa(pooled_a, pooled_b, n_classes) if pooled_a else None
    for cls in range(n_classes):
        involved = sum(1 for x, y in zip(pooled_a, pooled_b) if x == cls or y == cls)
        report.classes.append(ClassAgreement(cls, involved, one_vs_rest_kappa(pooled_a, pooled_b, cls)
                                             if pooled_a else None))
    report.conflicts = conflicting_items(ratings)
    return report


def conflicting_items(ratings: Mapping[Hashable, Mapping[Hashable, int]]) -> list:
    """Items rated by at least two reviewers who did not all choose the same class."""
    classes_of: dict[Hashable, set[int]] = {}
    raters: dict[Hashable, int] = {}
    for per_item in ratings.values():
        for item, cls in per_item.items():
            classes_of.setdefault(item, set()).add(cls)
            raters[item] = raters.get(item, 0) + 1
    return sorted((item for item, classes in classes_of.items() if raters[item] >= 2 and len(classes) > 1),
                  key=lambda item: (str(type(item)), item))


def ratings_from_rows(rows: Iterable[tuple[Hashable, Hashable, int]]) -> dict[Hashable, dict[Hashable, int]]:
    """``{reviewer: {item: class}}`` from ``(reviewer, item, class)`` rows in time order (the last wins)."""
    ratings: dict[Hashable, dict[Hashable, int]] = {}
    for reviewer, item, cls in rows:
        ratings.setdefault(reviewer, {})[item] = cls
    return ratings
