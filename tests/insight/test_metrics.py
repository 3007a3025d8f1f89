"""Tests for tl_core.insight.metrics, on small cases computed by hand."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from tl_core.insight.metrics import ClassReport, ConfusedPair, Evaluation, Misclassified, evaluate_predictions, evaluation_from_dict

THREE_CLASSES = ["cat", "dog", "fox"]

# Hand-built 3-class case.
#   true:      0 0 0 0 1 1 2 2
#   predicted: 0 0 0 1 1 1 2 1
# Confusion matrix (rows true, columns predicted):
#   cat: [3, 1, 0]
#   dog: [0, 2, 0]
#   fox: [0, 1, 1]
# precision = diagonal / column sum = 3/3, 2/4, 1/1
# recall    = diagonal / row sum    = 3/4, 2/2, 1/2
# f1        = 2pr/(p+r)             = 6/7, 2/3, 2/3
# macro f1  = (6/7 + 2/3 + 2/3) / 3              = 46/63
# weighted  = (4 * 6/7 + 2 * 2/3 + 2 * 2/3) / 8  = 16/21
# accuracy  = 6/8
HAND_TRUE = [0, 0, 0, 0, 1, 1, 2, 2]
HAND_PROBABILITIES = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.6, 0.1],  # cat predicted as dog, confidence 0.6
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.1, 0.8],
        [0.1, 0.5, 0.4],  # fox predicted as dog, confidence 0.5
    ]
)
HAND_PATHS = [f"image_{index}.jpg" for index in range(8)]


def hand_evaluation() -> Evaluation:
    return evaluate_predictions(
        HAND_TRUE, HAND_PROBABILITIES, THREE_CLASSES, HAND_PATHS
    )


def test_perfect_two_class_prediction() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])

    evaluation = evaluate_predictions(
        [0, 1, 0, 1], probabilities, ["negative", "positive"]
    )

    assert evaluation.accuracy == 1.0
    assert evaluation.roc_auc == 1.0
    assert evaluation.misclassified == []
    assert evaluation.most_confused == []
    assert evaluation.confusion_matrix == [[2, 0], [0, 2]]
    assert evaluation.macro_f1 == 1.0
    assert evaluation.weighted_f1 == 1.0
    assert evaluation.top_k_accuracy == {}
    assert evaluation.count == 4


def test_two_class_roc_curve_is_finite_with_replaced_first_threshold() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])

    curve = evaluate_predictions(
        [0, 1, 0, 1], probabilities, ["negative", "positive"]
    ).roc_curve

    assert curve is not None
    assert set(curve) == {"fpr", "tpr", "thresholds"}
    assert len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"])
    assert all(np.isfinite(curve["thresholds"]))
    # The infinite first threshold becomes the largest finite one (0.8) plus 1.0.
    assert curve["thresholds"][0] == pytest.approx(1.8)
    assert curve["fpr"][0] == 0.0 and curve["tpr"][0] == 0.0
    assert curve["fpr"][-1] == 1.0 and curve["tpr"][-1] == 1.0


def test_two_class_auc_uses_second_class_as_positive() -> None:
    # Positive-class scores: negatives 0.1, 0.6; positives 0.4, 0.8.
    # Of the 4 (positive, negative) pairs, 3 are ranked correctly: AUC = 0.75.
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]])

    evaluation = evaluate_predictions(
        [0, 0, 1, 1], probabilities, ["negative", "positive"]
    )

    assert evaluation.roc_auc == pytest.approx(0.75)


def test_three_class_metrics_match_hand_computation() -> None:
    evaluation = hand_evaluation()

    assert evaluation.class_names == THREE_CLASSES
    assert evaluation.count == 8
    assert evaluation.accuracy == pytest.approx(6 / 8)
    assert evaluation.confusion_matrix == [[3, 1, 0], [0, 2, 0], [0, 1, 1]]
    expected = [
        ClassReport("cat", precision=1.0, recall=3 / 4, f1=6 / 7, support=4),
        ClassReport("dog", precision=2 / 4, recall=1.0, f1=2 / 3, support=2),
        ClassReport("fox", precision=1.0, recall=1 / 2, f1=2 / 3, support=2),
    ]
    for report, wanted in zip(evaluation.per_class, expected, strict=True):
        assert report.name == wanted.name
        assert report.support == wanted.support
        assert report.precision == pytest.approx(wanted.precision)
        assert report.recall == pytest.approx(wanted.recall)
        assert report.f1 == pytest.approx(wanted.f1)
    assert evaluation.macro_f1 == pytest.approx(46 / 63)
    assert evaluation.weighted_f1 == pytest.approx(16 / 21)


def test_three_classes_have_no_roc_and_no_top_k() -> None:
    evaluation = hand_evaluation()

    assert evaluation.roc_auc is None
    assert evaluation.roc_curve is None
    assert evaluation.top_k_accuracy == {}


def test_class_never_predicted_gets_zero_precision_without_warning() -> None:
    # "fox" is in the data but never predicted; "owl" is absent altogether.
    probabilities = np.array(
        [
            [0.9, 0.05, 0.03, 0.02],
            [0.1, 0.8, 0.05, 0.05],
            [0.6, 0.3, 0.05, 0.05],
            [0.2, 0.7, 0.05, 0.05],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluation = evaluate_predictions(
            [0, 1, 2, 2], probabilities, ["cat", "dog", "fox", "owl"]
        )

    fox, owl = evaluation.per_class[2], evaluation.per_class[3]
    assert fox == ClassReport("fox", precision=0.0, recall=0.0, f1=0.0, support=2)
    assert owl == ClassReport("owl", precision=0.0, recall=0.0, f1=0.0, support=0)
    assert evaluation.confusion_matrix == [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    # cat and dog: precision 1/2, recall 1, F1 2/3. Absent or never-predicted
    # classes still count in the macro average: (2/3 + 2/3 + 0 + 0) / 4.
    assert evaluation.macro_f1 == pytest.approx(1 / 3)


def test_misclassified_most_confident_first_with_paths() -> None:
    probabilities = np.array(
        [
            [0.5, 0.3, 0.2],  # true 1, predicted 0 at 0.5
            [0.1, 0.1, 0.8],  # true 2, correct
            [0.05, 0.9, 0.05],  # true 0, predicted 1 at 0.9
            [0.2, 0.1, 0.7],  # true 1, predicted 2 at 0.7
            [0.1, 0.7, 0.2],  # true 2, predicted 1 at 0.7 (tie: keeps input order)
        ]
    )
    paths = ["a.png", "b.png", "c.png", "d.png", "e.png"]

    evaluation = evaluate_predictions(
        [1, 2, 0, 1, 2], probabilities, THREE_CLASSES, paths
    )

    assert evaluation.misclassified == [
        Misclassified(
            "c.png", "cat", "dog", confidence=0.9, true_class_probability=0.05
        ),
        Misclassified(
            "d.png", "dog", "fox", confidence=0.7, true_class_probability=0.1
        ),
        Misclassified(
            "e.png", "fox", "dog", confidence=0.7, true_class_probability=0.2
        ),
        Misclassified(
            "a.png", "dog", "cat", confidence=0.5, true_class_probability=0.3
        ),
    ]


def test_misclassified_paths_are_empty_without_paths() -> None:
    evaluation = evaluate_predictions(HAND_TRUE, HAND_PROBABILITIES, THREE_CLASSES)

    assert [item.path for item in evaluation.misclassified] == ["", ""]


def test_hand_case_misclassified_list() -> None:
    assert hand_evaluation().misclassified == [
        Misclassified(
            "image_3.jpg", "cat", "dog", confidence=0.6, true_class_probability=0.3
        ),
        Misclassified(
            "image_7.jpg", "fox", "dog", confidence=0.5, true_class_probability=0.4
        ),
    ]


def test_most_confused_largest_first_then_class_order() -> None:
    # true -> predicted: fox->cat twice, dog->fox once, cat->dog once, correct cat once.
    probabilities = np.array(
        [
            [0.8, 0.1, 0.1],  # fox -> cat
            [0.1, 0.1, 0.8],  # dog -> fox
            [0.7, 0.2, 0.1],  # fox -> cat
            [0.1, 0.8, 0.1],  # cat -> dog
            [0.9, 0.05, 0.05],  # cat -> cat
        ]
    )

    evaluation = evaluate_predictions([2, 1, 2, 0, 0], probabilities, THREE_CLASSES)

    assert evaluation.most_confused == [
        ConfusedPair("fox", "cat", 2),
        ConfusedPair("cat", "dog", 1),
        ConfusedPair("dog", "fox", 1),
    ]


def test_top_k_accuracy_for_four_classes() -> None:
    # True class ranks: 4th, 1st, 3rd, 4th -> top-3 accuracy 2/4.
    probabilities = np.array(
        [
            [0.1, 0.2, 0.3, 0.4],
            [0.1, 0.6, 0.2, 0.1],
            [0.4, 0.3, 0.2, 0.1],
            [0.5, 0.3, 0.15, 0.05],
        ]
    )

    evaluation = evaluate_predictions([0, 1, 2, 3], probabilities, ["a", "b", "c", "d"])

    assert evaluation.top_k_accuracy == {3: pytest.approx(0.5)}
    assert evaluation.accuracy == pytest.approx(0.25)


def test_top_k_accuracy_reports_three_and_five_for_six_classes() -> None:
    probabilities = np.full((6, 6), 0.02) + np.eye(6) * 0.9

    evaluation = evaluate_predictions(list(range(6)), probabilities, list("abcdef"))

    assert evaluation.top_k_accuracy == {3: 1.0, 5: 1.0}


@pytest.mark.parametrize(
    "evaluation_factory",
    [
        hand_evaluation,
        lambda: evaluate_predictions(
            [0, 1, 1, 0],
            np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]]),
            ["negative", "positive"],
            ["w.jpg", "x.jpg", "y.jpg", "z.jpg"],
        ),
        lambda: evaluate_predictions(
            [0, 1, 2, 3, 4, 5, 0],
            np.full((7, 6), 0.1) + np.eye(7, 6)[[0, 1, 2, 3, 4, 5, 3]] * 0.5,
            list("abcdef"),
        ),
    ],
    ids=["three classes", "two classes", "six classes"],
)
def test_to_dict_is_json_safe_and_round_trips(evaluation_factory) -> None:
    evaluation = evaluation_factory()

    data = evaluation.to_dict()
    text = json.dumps(data, allow_nan=False)
    restored = evaluation_from_dict(json.loads(text))

    assert restored == evaluation
    assert evaluation_from_dict(data) == evaluation


def test_to_dict_keys_and_shapes() -> None:
    data = hand_evaluation().to_dict()

    assert set(data) == {
        "accuracy",
        "class_names",
        "confusion_matrix",
        "per_class",
        "macro_f1",
        "weighted_f1",
        "misclassified",
        "most_confused",
        "roc_auc",
        "roc_curve",
        "top_k_accuracy",
        "count",
    }
    assert list(data["per_class"]) == THREE_CLASSES
    assert data["per_class"]["dog"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert data["most_confused"] == [
        {"true_class": "cat", "predicted_class": "dog", "count": 1},
        {"true_class": "fox", "predicted_class": "dog", "count": 1},
    ]
    assert data["misclassified"][0] == {
        "path": "image_3.jpg",
        "true_class": "cat",
        "predicted_class": "dog",
        "confidence": 0.6,
        "true_class_probability": 0.3,
    }
    assert data["roc_auc"] is None and data["roc_curve"] is None
    assert data["count"] == 8


def test_to_dict_top_k_keys_are_strings() -> None:
    probabilities = np.full((6, 6), 0.02) + np.eye(6) * 0.9

    data = evaluate_predictions(list(range(6)), probabilities, list("abcdef")).to_dict()

    assert data["top_k_accuracy"] == {"3": 1.0, "5": 1.0}


def test_evaluation_from_dict_reports_missing_keys() -> None:
    data = hand_evaluation().to_dict()
    del data["accuracy"]
    del data["count"]

    with pytest.raises(
        ValueError,
        match=re.escape("evaluation data is missing keys: ['accuracy', 'count']"),
    ):
        evaluation_from_dict(data)


def test_normalized_confusion_matrix_keeps_zero_rows() -> None:
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]
    )

    evaluation = evaluate_predictions([0, 0, 0, 2], probabilities, THREE_CLASSES)

    assert evaluation.confusion_matrix == [[2, 1, 0], [0, 0, 0], [0, 0, 1]]
    normalized = evaluation.normalized_confusion_matrix()
    assert normalized[0] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert normalized[1] == [0.0, 0.0, 0.0]
    assert normalized[2] == [0.0, 0.0, 1.0]


def test_roc_is_none_when_only_one_class_present() -> None:
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluation = evaluate_predictions(
            [0, 0, 0], probabilities, ["negative", "positive"]
        )

    assert evaluation.roc_auc is None
    assert evaluation.roc_curve is None
    assert evaluation.accuracy == pytest.approx(2 / 3)
    json.dumps(evaluation.to_dict(), allow_nan=False)


def test_accepts_numpy_labels_and_integral_floats() -> None:
    from_list = hand_evaluation()
    from_int_array = evaluate_predictions(
        np.array(HAND_TRUE, dtype=np.int32),
        HAND_PROBABILITIES,
        THREE_CLASSES,
        HAND_PATHS,
    )
    from_float_array = evaluate_predictions(
        np.array(HAND_TRUE, dtype=float), HAND_PROBABILITIES, THREE_CLASSES, HAND_PATHS
    )

    assert from_int_array == from_list
    assert from_float_array == from_list


TWO_BY_TWO = np.array([[0.9, 0.1], [0.3, 0.7]])


@pytest.mark.parametrize(
    ("true_labels", "probabilities", "class_names", "paths", "message"),
    [
        (
            [0, 1],
            np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]),
            ["a", "b"],
            None,
            "probabilities has 3 columns but 2 class names were given",
        ),
        (
            [0, 1, 1],
            TWO_BY_TWO,
            ["a", "b"],
            None,
            "probabilities has 2 rows but 3 true labels were given",
        ),
        (
            [],
            np.zeros((0, 2)),
            ["a", "b"],
            None,
            "true_labels is empty: there are no samples to evaluate",
        ),
        (
            [0, 2],
            TWO_BY_TWO,
            ["a", "b"],
            None,
            "true label 2 at position 1 is out of range: expected 0 to 1 for 2 classes",
        ),
        (
            [-1, 0],
            TWO_BY_TWO,
            ["a", "b"],
            None,
            (
                "true label -1 at position 0 is out of range: "
                "expected 0 to 1 for 2 classes"
            ),
        ),
        (
            [0, 1],
            TWO_BY_TWO,
            ["a", "b"],
            ["only_one.jpg"],
            "number of paths (1) does not match number of true labels (2)",
        ),
        (
            [0, 1],
            np.array([0.9, 0.1]),
            ["a", "b"],
            None,
            "probabilities must be 2-dimensional (samples, classes), got shape (2,)",
        ),
        (
            [[0, 1]],
            TWO_BY_TWO,
            ["a", "b"],
            None,
            "true_labels must be one-dimensional, got shape (1, 2)",
        ),
        (
            [0.5, 1.0],
            TWO_BY_TWO,
            ["a", "b"],
            None,
            "true_labels must be integer class indices, got values of dtype float64",
        ),
        (
            [0, 1],
            np.array([[0.9, 0.1], [np.nan, 0.7]]),
            ["a", "b"],
            None,
            "probabilities has NaN or infinite values (first in row 1)",
        ),
        (
            [0, 1],
            TWO_BY_TWO,
            [],
            None,
            "class_names is empty: at least one class name is required",
        ),
        (
            [0, 1],
            np.full((2, 3), 1 / 3),
            ["a", "b", "a"],
            None,
            "class_names must be unique, but these repeat: ['a']",
        ),
    ],
    ids=[
        "too many columns",
        "row count mismatch",
        "zero samples",
        "label too large",
        "negative label",
        "path count mismatch",
        "one-dimensional probabilities",
        "two-dimensional labels",
        "fractional label",
        "nan probability",
        "no class names",
        "duplicate class names",
    ],
)
def test_invalid_input_raises_value_error(
    true_labels, probabilities, class_names, paths, message
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_predictions(true_labels, probabilities, class_names, paths)
