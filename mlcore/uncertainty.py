"""Uncertainty scores per nucleus, for active learning. All in [0, 1], higher = more uncertain.

- ``least_confidence``: 1 - max p.
- ``margin``: 1 - (p_top1 - p_top2).
- ``entropy``: Shannon entropy of p divided by log(C), so 1 = uniform whatever the class count.
- ``disagreement``: Jensen-Shannon divergence between the base and the correlation (MLP) branch,
  divided by log(2). Chosen over symmetric KL because it is bounded and defined when a branch
  puts zero probability on a class; it is 0 when the branches agree exactly and 1 when they are
  certain of different classes. Zero when the model has no trained correlation branch.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12


def least_confidence(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    h = -(probs * np.log(np.clip(probs, _EPS, 1.0))).sum(axis=1)
    return np.clip(h / math.log(probs.shape[1]), 0.0, 1.0)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (so in [0, 1])."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return (a * (np.log(np.clip(a, _EPS, 1.0)) - np.log(np.clip(b, _EPS, 1.0)))).sum(axis=1)

    return np.clip(0.5 * (kl(p, m) + kl(q, m)) / math.log(2.0), 0.0, 1.0)


def uncertainty_scores(probs: np.ndarray, base_probs: np.ndarray, mlp_probs: np.ndarray | None) -> dict[str, np.ndarray]:
    return {
        "least_confidence": least_confidence(probs),
        "margin": margin(probs),
        "entropy": entropy(probs),
        "disagreement": (js_divergence(base_probs, mlp_probs) if mlp_probs is not None
                         else np.zeros(len(probs))),
    }
