"""The paired bootstrap interval of a macro-F1 difference (mlcore.metrics.macro_f1_difference_interval)."""

import numpy as np

from mlcore.metrics import confusion_matrix, f1_score, macro_f1_difference_interval, macro_f1_of_confusions


def test_the_stacked_macro_f1_is_f1_scores_own_including_absent_classes():
    rng = np.random.default_rng(0)
    confusions, expected = [], []
    for n in (0, 1, 5, 50, 400):
        truth, pred = rng.integers(0, 4, n), rng.integers(0, 3, n)   # class 3 is never predicted; sometimes absent
        confusions.append(confusion_matrix(truth, pred, 4))
        expected.append(f1_score(truth, pred, 4) if n else 0.0)
    assert np.allclose(macro_f1_of_confusions(np.stack(confusions)), expected)


def noisy(truth: np.ndarray, error_rate: float, rng) -> np.ndarray:
    wrong = rng.random(truth.size) < error_rate
    return np.where(wrong, (truth + rng.integers(1, 3, truth.size)) % 3, truth)


def test_a_clearly_better_model_on_many_nuclei_has_an_interval_above_zero():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 3000)
    low, high = macro_f1_difference_interval(truth, noisy(truth, 0.1, rng), noisy(truth, 0.3, rng), 3)
    assert 0 < low < 0.2 < high < 0.3


def test_a_small_difference_on_few_nuclei_is_within_chance():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 3, 60)
    better, worse = noisy(truth, 0.25, rng), noisy(truth, 0.3, rng)
    low, high = macro_f1_difference_interval(truth, better, worse, 3)
    assert low < 0 < high and high - low > 0.1


def test_the_interval_is_paired_and_repeatable():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 500)
    pred = noisy(truth, 0.3, rng)
    assert macro_f1_difference_interval(truth, pred, pred, 3) == (0.0, 0.0)   # the same nuclei resampled for both
    other = noisy(truth, 0.3, rng)
    assert macro_f1_difference_interval(truth, pred, other, 3) == macro_f1_difference_interval(truth, pred, other, 3)
    assert macro_f1_difference_interval(truth[:0], pred[:0], other[:0], 3) == (0.0, 0.0)
