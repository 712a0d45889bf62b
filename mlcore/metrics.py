"""Classification metrics in NumPy (no scikit-learn): always called as ``(y_true, y_pred)``.

Macro and weighted averages follow scikit-learn's convention: they run over the classes present
in ``y_true`` or ``y_pred`` (a class nobody has and nobody predicts, like PanNuke's "dead" in a
small sample, does not drag the macro-F1 down); undefined ratios (0/0) count as 0.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside [0, {num_classes})")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int):
    """Per-class precision, recall, F1 and support (true count)."""
    confusion = confusion_matrix(y_true, y_pred, num_classes)
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _ratio(true_positive, predicted)
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def f1_score(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, average: str = "macro") -> float:
    """F1 averaged ``"macro"`` (unweighted over present classes) or ``"weighted"`` (by support)."""
    _, _, f1, support = precision_recall_f1(y_true, y_pred, num_classes)
    predicted = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=num_classes)
    present = (support > 0) | (predicted > 0)
    if not present.any():
        return 0.0
    if average == "macro":
        return float(f1[present].mean())
    if average == "weighted":
        return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    raise ValueError(f"unknown average {average!r} (macro or weighted)")


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """Everything the web app and the CLI show for one label set, JSON-ready."""
    num_classes = len(class_names)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    precision, recall, f1, support = precision_recall_f1(y_true, y_pred, num_classes)
    n = int(y_true.size)
    return {
        "n": n,
        "accuracy": float((y_true == y_pred).mean()) if n else 0.0,
        "macro_f1": f1_score(y_true, y_pred, num_classes, "macro"),
        "weighted_f1": f1_score(y_true, y_pred, num_classes, "weighted"),
        "per_class": {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                             "support": int(support[c])} for c, name in enumerate(class_names)},
        "confusion": confusion_matrix(y_true, y_pred, num_classes).tolist(),
    }


def macro_f1_of_confusions(confusions: np.ndarray) -> np.ndarray:
    """:func:`f1_score`'s macro-F1 of each of a stack of (C, C) confusion matrices, (B, C, C) -> (B,)."""
    confusions = np.asarray(confusions, dtype=np.float64)
    true_positive = np.diagonal(confusions, axis1=1, axis2=2)
    support, predicted = confusions.sum(axis=2), confusions.sum(axis=1)
    precision, recall = _ratio(true_positive, predicted), _ratio(true_positive, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    return _ratio((f1 * present).sum(axis=1), present.sum(axis=1).astype(np.float64))


def macro_f1_difference_interval(y_true: np.ndarray, y_pred: np.ndarray, y_pred_other: np.ndarray, num_classes: int,
                                 resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A paired bootstrap interval of macro-F1(y_pred) - macro-F1(y_pred_other) on the same nuclei.

    Both predictions are resampled together, nucleus by nucleus, so the interval says how much of a difference
    between two models on one validation set chance alone could make. The resampling draws counts of each
    (truth, prediction, other prediction) triple from their multinomial: exact, and independent of the number
    of nuclei (C**3 cells per resample)."""
    y_true, y_pred, y_pred_other = (np.asarray(a, dtype=np.int64) for a in (y_true, y_pred, y_pred_other))
    n = y_true.size
    if n == 0:
        return 0.0, 0.0
    c = num_classes
    codes = (y_true * c + y_pred) * c + y_pred_other
    frequencies = np.bincount(codes, minlength=c ** 3) / n
    counts = np.random.default_rng(seed).multinomial(n, frequencies, size=resamples).reshape(resamples, c, c, c)
    difference = macro_f1_of_confusions(counts.sum(axis=3)) - macro_f1_of_confusions(counts.sum(axis=2))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(difference, [tail, 100 - tail])
    return float(low), float(high)
