import numpy as np
import pytest

from mlcore.metrics import classification_report, confusion_matrix, f1_score, precision_recall_f1


def test_confusion_rows_are_truth_columns_are_predictions():
    assert confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_f1_against_hand_computed_values():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: P=2/2 R=2/3 F1=0.8; class 1: P=1/2 R=1/2 F1=0.5; class 2: P=1/2 R=1/1 F1=2/3
    precision, recall, f1, support = precision_recall_f1(y_true, y_pred, 3)
    np.testing.assert_allclose(precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(f1, [0.8, 0.5, 2 / 3])
    assert support.tolist() == [3, 2, 1]
    assert f1_score(y_true, y_pred, 3, "macro") == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert f1_score(y_true, y_pred, 3, "weighted") == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)


def test_argument_order_matters_and_is_true_then_pred():
    y_true = [0, 0, 0, 0, 1]
    y_pred = [0, 0, 0, 1, 1]
    weighted = f1_score(y_true, y_pred, 2, "weighted")
    swapped = f1_score(y_pred, y_true, 2, "weighted")
    # by truth support: class 0 (F1 6/7) x4, class 1 (F1 2/3) x1
    assert weighted == pytest.approx((4 * 6 / 7 + 2 / 3) / 5)
    assert swapped != pytest.approx(weighted)
    report = classification_report(y_true, y_pred, ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}


def test_absent_classes_do_not_count_in_the_macro_average():
    # class 2 is neither true nor predicted (like PanNuke's "dead" in a small sample)
    assert f1_score([0, 1, 1], [0, 1, 1], 3, "macro") == 1.0
    # a class predicted but never true counts (F1 0)
    assert f1_score([0, 1], [0, 2], 3, "macro") == pytest.approx(1 / 3)


def test_report_keys_and_empty_input():
    report = classification_report([], [], ["a", "b"])
    assert set(report) == {"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion"}
    assert report["n"] == 0 and report["macro_f1"] == 0.0
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
