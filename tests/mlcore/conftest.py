"""Fixtures for the mlcore tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data samples beside the checkout (``../shared/data``); tests using them skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def count_classes():
    """A function: NucleusDataset -> (Counter of labelled nuclei per class name, number unlabelled)."""
    return class_counts


def class_counts(dataset) -> tuple[Counter, int]:
    counts: Counter = Counter()
    unlabelled = 0
    for item in dataset.images:
        ids = np.unique(item.instance_map)
        ids = ids[ids > 0]
        for instance_id in ids:
            if int(instance_id) in item.classes:
                counts[dataset.label_set.classes[item.classes[int(instance_id)]]] += 1
            else:
                unlabelled += 1
    return counts, unlabelled
