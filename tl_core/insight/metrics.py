"""Turn a model's predicted probabilities into evaluation metrics.

This module is pure computation: it takes the true class index of each
image and the probabilities a model gave it, and returns an
:class:`Evaluation` holding plain Python numbers and lists. The app draws
charts from that object (with plotly) and the engine saves
:meth:`Evaluation.to_dict` as ``metrics.json``; :func:`evaluation_from_dict`
reads such a file back into an :class:`Evaluation`.

The predicted class of an image is the column with the highest probability
(the first such column when several are equal). Probabilities are not
checked to sum to one; any finite scores work.

Problems with the inputs (shapes that disagree, no samples, a label out of
range) raise ``ValueError``: they come from the calling code, not from the
user's data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

TOP_K_VALUES: tuple[int, ...] = (3, 5)
"""Values of k for top-k accuracy; each is reported only when k < number of classes."""

_DICT_KEYS: tuple[str, ...] = (
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
)


@dataclass(frozen=True)
class ClassReport:
    """Precision, recall and F1 of one class.

    Attributes:
        name: Class name.
        precision: Share of images predicted as this class that truly are it
            (0.0 when the class was never predicted).
        recall: Share of images of this class that were predicted as it
            (0.0 when the class has no images).
        f1: Harmonic mean of precision and recall (0.0 when both are 0.0).
        support: Number of images whose true class is this class.
    """

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Misclassified:
    """One image whose predicted class differs from its true class.

    Attributes:
        path: File path of the image ("" when no paths were given).
        true_class: Name of the true class.
        predicted_class: Name of the predicted class.
        confidence: Probability the model gave the predicted class.
        true_class_probability: Probability the model gave the true class.
    """

    path: str
    true_class: str
    predicted_class: str
    confidence: float
    true_class_probability: float


@dataclass(frozen=True)
class ConfusedPair:
    """An off-diagonal cell of the confusion matrix.

    Attributes:
        true_class: Name of the true class (the row).
        predicted_class: Name of the predicted class (the column).
        count: Number of images of ``true_class`` predicted as ``predicted_class``.
    """

    true_class: str
    predicted_class: str
    count: int


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one set of predictions.

    Every list-valued field follows the order of ``class_names`` where it is
    indexed by class. The object compares equal field by field; it holds lists,
    so it cannot be hashed.

    Attributes:
        class_names: Class names, in the order of the probability columns.
        accuracy: Share of images whose predicted class is the true class.
        per_class: One report per class name, in ``class_names`` order, also
            for classes absent from the data.
        macro_f1: Unweighted mean of the per-class F1 scores (absent classes
            count with F1 0.0).
        weighted_f1: Mean of the per-class F1 scores weighted by support.
        confusion_matrix: Counts; rows are true classes, columns predicted
            classes, both in ``class_names`` order.
        misclassified: Every wrongly predicted image, highest ``confidence``
            first (ties keep the input order).
        most_confused: Off-diagonal cells with a count above zero, largest
            count first; ties ordered by true class, then predicted class, in
            ``class_names`` order.
        roc_auc: Area under the ROC curve when there are exactly two classes,
            with ``class_names[1]`` as the positive class and its probability
            as the score; None for any other number of classes, or when
            only one class is present in the true labels.
        roc_curve: ``{"fpr": [...], "tpr": [...], "thresholds": [...]}`` under
            the same conditions as ``roc_auc``, else None. scikit-learn's
            first threshold is infinite (nothing predicted positive); it is
            replaced by the largest finite threshold plus 1.0 so the dict is
            JSON-safe and the thresholds stay strictly decreasing.
        top_k_accuracy: Share of images whose true class is among the k most
            probable, for each k in ``TOP_K_VALUES`` smaller than the number
            of classes; empty when there is no such k.
        count: Number of evaluated images.
    """

    class_names: list[str]
    accuracy: float
    per_class: list[ClassReport]
    macro_f1: float
    weighted_f1: float
    confusion_matrix: list[list[int]]
    misclassified: list[Misclassified]
    most_confused: list[ConfusedPair]
    roc_auc: float | None
    roc_curve: dict | None
    top_k_accuracy: dict[int, float]
    count: int

    def to_dict(self) -> dict:
        """Return the evaluation as JSON-serialisable plain data.

        Returns:
            A dict with the keys "accuracy", "class_names", "confusion_matrix",
            "per_class" (class name -> {"precision", "recall", "f1",
            "support"}), "macro_f1", "weighted_f1", "misclassified" (list of
            dicts with the :class:`Misclassified` fields), "most_confused"
            (list of dicts with the :class:`ConfusedPair` fields), "roc_auc",
            "roc_curve", "top_k_accuracy" (keys are k as strings) and "count".
        """
        return {
            "accuracy": float(self.accuracy),
            "class_names": [str(name) for name in self.class_names],
            "confusion_matrix": [[int(cell) for cell in row] for row in self.confusion_matrix],
            "per_class": {report.name: _class_report_to_dict(report) for report in self.per_class},
            "macro_f1": float(self.macro_f1),
            "weighted_f1": float(self.weighted_f1),
            "misclassified": [_misclassified_to_dict(item) for item in self.misclassified],
            "most_confused": [_confused_pair_to_dict(pair) for pair in self.most_confused],
            "roc_auc": None if self.roc_auc is None else float(self.roc_auc),
            "roc_curve": _roc_curve_to_plain(self.roc_curve),
            "top_k_accuracy": {str(k): float(value) for k, value in self.top_k_accuracy.items()},
            "count": int(self.count),
        }

    def normalized_confusion_matrix(self) -> list[list[float]]:
        """Return the confusion matrix with each row divided by its sum.

        Returns:
            Rows of floats that sum to 1.0 (the recall view of the matrix);
            a row whose counts are all zero stays all zeros.
        """
        return [_normalize_row(row) for row in self.confusion_matrix]


def evaluate_predictions(
    true_labels: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str] | None = None,
) -> Evaluation:
    """Compute the metrics of a model's predictions.

    Args:
        true_labels: True class index of each image (integers from 0 to
            ``len(class_names) - 1``).
        probabilities: Array of shape (number of images, number of classes);
            column i holds the probability of ``class_names[i]``.
        class_names: Class names, in column order; must be unique.
        paths: File path of each image, carried into the misclassified list;
            when None every path is "".

    Returns:
        The :class:`Evaluation` of the predictions.

    Raises:
        ValueError: If ``class_names`` is empty or has duplicates, the
            shapes of the inputs disagree, there are zero samples,
            ``probabilities`` holds NaN or infinite values, a label is not an
            integer or is out of range, or ``paths`` has the wrong length.
    """
    names = _validate_class_names(class_names)
    labels = _as_label_array(true_labels)
    scores = _as_probability_array(probabilities, len(labels), len(names))
    _check_label_range(labels, len(names))
    image_paths = _as_paths(paths, len(labels))

    predicted = np.argmax(scores, axis=1)
    class_indices = list(range(len(names)))
    matrix = confusion_matrix(labels, predicted, labels=class_indices)
    roc_auc, curve = _binary_roc(labels, scores)
    return Evaluation(
        class_names=names,
        accuracy=float(accuracy_score(labels, predicted)),
        per_class=_per_class_reports(labels, predicted, names),
        macro_f1=_average_f1(labels, predicted, class_indices, "macro"),
        weighted_f1=_average_f1(labels, predicted, class_indices, "weighted"),
        confusion_matrix=[[int(cell) for cell in row] for row in matrix],
        misclassified=_misclassified(labels, predicted, scores, names, image_paths),
        most_confused=_most_confused(matrix, names),
        roc_auc=roc_auc,
        roc_curve=curve,
        top_k_accuracy=_top_k_accuracy(labels, scores),
        count=len(labels),
    )


def evaluation_from_dict(data: Mapping[str, Any]) -> Evaluation:
    """Rebuild an :class:`Evaluation` from the output of :meth:`Evaluation.to_dict`.

    Works on the dict as read back from JSON (string keys in
    "top_k_accuracy"). Keys other than the ones ``to_dict`` writes are
    ignored.

    Args:
        data: A dict produced by :meth:`Evaluation.to_dict`, possibly after a
            JSON round trip.

    Returns:
        The equal :class:`Evaluation`.

    Raises:
        ValueError: If a key is missing or "per_class" does not name exactly
            the classes in "class_names".
    """
    missing = [key for key in _DICT_KEYS if key not in data]
    if missing:
        raise ValueError(f"evaluation data is missing keys: {missing}")
    names = [str(name) for name in data["class_names"]]
    per_class_data = data["per_class"]
    if sorted(per_class_data) != sorted(names):
        raise ValueError(f"per_class names {sorted(per_class_data)} do not match class_names {sorted(names)}")
    return Evaluation(
        class_names=names,
        accuracy=float(data["accuracy"]),
        per_class=[_class_report_from_dict(name, per_class_data[name]) for name in names],
        macro_f1=float(data["macro_f1"]),
        weighted_f1=float(data["weighted_f1"]),
        confusion_matrix=[[int(cell) for cell in row] for row in data["confusion_matrix"]],
        misclassified=[_misclassified_from_dict(item) for item in data["misclassified"]],
        most_confused=[_confused_pair_from_dict(item) for item in data["most_confused"]],
        roc_auc=None if data["roc_auc"] is None else float(data["roc_auc"]),
        roc_curve=_roc_curve_to_plain(data["roc_curve"]),
        top_k_accuracy={int(k): float(value) for k, value in data["top_k_accuracy"].items()},
        count=int(data["count"]),
    )


# Input validation


def _validate_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("class_names is empty: at least one class name is required")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"class_names must be unique, but these repeat: {duplicates}")
    return names


def _as_label_array(true_labels: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(true_labels)
    if labels.ndim != 1:
        raise ValueError(f"true_labels must be one-dimensional, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("true_labels is empty: there are no samples to evaluate")
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise ValueError(f"true_labels must be integer class indices, got values of dtype {labels.dtype}")


def _as_probability_array(probabilities: np.ndarray, sample_count: int, class_count: int) -> np.ndarray:
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"probabilities must be 2-dimensional (samples, classes), got shape {scores.shape}")
    rows, columns = scores.shape
    if columns != class_count:
        raise ValueError(f"probabilities has {columns} columns but {class_count} class names were given")
    if rows != sample_count:
        raise ValueError(f"probabilities has {rows} rows but {sample_count} true labels were given")
    finite = np.isfinite(scores).all(axis=1)
    if not finite.all():
        first_bad_row = int(np.argmin(finite))
        raise ValueError(f"probabilities has NaN or infinite values (first in row {first_bad_row})")
    return scores


def _check_label_range(labels: np.ndarray, class_count: int) -> None:
    out_of_range = (labels < 0) | (labels >= class_count)
    if out_of_range.any():
        position = int(np.argmax(out_of_range))
        raise ValueError(f"true label {int(labels[position])} at position {position} is out of range: expected 0 to {class_count - 1} for {class_count} classes")


def _as_paths(paths: Sequence[str] | None, sample_count: int) -> list[str]:
    if paths is None:
        return [""] * sample_count
    image_paths = [str(path) for path in paths]
    if len(image_paths) != sample_count:
        raise ValueError(f"number of paths ({len(image_paths)}) does not match number of true labels ({sample_count})")
    return image_paths


# Metrics


def _per_class_reports(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> list[ClassReport]:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels,
        predicted,
        labels=list(range(len(names))),
        average=None,
        zero_division=0,
    )
    return [
        ClassReport(
            name=name,
            precision=float(precision[index]),
            recall=float(recall[index]),
            f1=float(f1[index]),
            support=int(support[index]),
        )
        for index, name in enumerate(names)
    ]


def _average_f1(labels: np.ndarray, predicted: np.ndarray, class_indices: list[int], average: str) -> float:
    return float(f1_score(labels, predicted, labels=class_indices, average=average, zero_division=0))


def _misclassified(
    labels: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray,
    names: list[str],
    image_paths: list[str],
) -> list[Misclassified]:
    wrong_positions = np.flatnonzero(labels != predicted)
    mistakes = [
        Misclassified(
            path=image_paths[position],
            true_class=names[labels[position]],
            predicted_class=names[predicted[position]],
            confidence=float(scores[position, predicted[position]]),
            true_class_probability=float(scores[position, labels[position]]),
        )
        for position in wrong_positions
    ]
    # sorted() is stable, so equal confidences keep the input order.
    return sorted(mistakes, key=lambda mistake: -mistake.confidence)


def _most_confused(matrix: np.ndarray, names: list[str]) -> list[ConfusedPair]:
    cells = [
        (int(matrix[true_index, predicted_index]), true_index, predicted_index)
        for true_index in range(len(names))
        for predicted_index in range(len(names))
        if true_index != predicted_index and matrix[true_index, predicted_index] > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [
        ConfusedPair(
            true_class=names[true_index],
            predicted_class=names[predicted_index],
            count=count,
        )
        for count, true_index, predicted_index in cells
    ]


def _binary_roc(labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, dict | None]:
    if scores.shape[1] != 2 or len(np.unique(labels)) != 2:
        return None, None
    positive_scores = scores[:, 1]
    area = float(roc_auc_score(labels, positive_scores))
    false_positive_rate, true_positive_rate, thresholds = roc_curve(labels, positive_scores, pos_label=1)
    curve = {
        "fpr": [float(value) for value in false_positive_rate],
        "tpr": [float(value) for value in true_positive_rate],
        "thresholds": _finite_thresholds(thresholds),
    }
    return area, curve


def _finite_thresholds(thresholds: np.ndarray) -> list[float]:
    """Replace infinite thresholds by the largest finite threshold plus 1.0."""
    finite = thresholds[np.isfinite(thresholds)]
    replacement = float(finite.max()) + 1.0 if finite.size else 1.0
    return [float(value) if np.isfinite(value) else replacement for value in thresholds]


def _top_k_accuracy(labels: np.ndarray, scores: np.ndarray) -> dict[int, float]:
    class_count = scores.shape[1]
    return {k: float(top_k_accuracy_score(labels, scores, k=k, labels=list(range(class_count)))) for k in TOP_K_VALUES if k < class_count}


# Conversion to and from plain data


def _normalize_row(row: Sequence[int]) -> list[float]:
    total = sum(row)
    if total == 0:
        return [0.0 for _ in row]
    return [cell / total for cell in row]


def _class_report_to_dict(report: ClassReport) -> dict[str, float | int]:
    return {
        "precision": float(report.precision),
        "recall": float(report.recall),
        "f1": float(report.f1),
        "support": int(report.support),
    }


def _class_report_from_dict(name: str, data: Mapping[str, Any]) -> ClassReport:
    return ClassReport(
        name=name,
        precision=float(data["precision"]),
        recall=float(data["recall"]),
        f1=float(data["f1"]),
        support=int(data["support"]),
    )


def _misclassified_to_dict(item: Misclassified) -> dict[str, str | float]:
    return {
        "path": str(item.path),
        "true_class": str(item.true_class),
        "predicted_class": str(item.predicted_class),
        "confidence": float(item.confidence),
        "true_class_probability": float(item.true_class_probability),
    }


def _misclassified_from_dict(data: Mapping[str, Any]) -> Misclassified:
    return Misclassified(
        path=str(data["path"]),
        true_class=str(data["true_class"]),
        predicted_class=str(data["predicted_class"]),
        confidence=float(data["confidence"]),
        true_class_probability=float(data["true_class_probability"]),
    )


def _confused_pair_to_dict(pair: ConfusedPair) -> dict[str, str | int]:
    return {
        "true_class": str(pair.true_class),
        "predicted_class": str(pair.predicted_class),
        "count": int(pair.count),
    }


def _confused_pair_from_dict(data: Mapping[str, Any]) -> ConfusedPair:
    return ConfusedPair(
        true_class=str(data["true_class"]),
        predicted_class=str(data["predicted_class"]),
        count=int(data["count"]),
    )


def _roc_curve_to_plain(curve: Mapping[str, Sequence[float]] | None) -> dict | None:
    if curve is None:
        return None
    return {key: [float(value) for value in curve[key]] for key in ("fpr", "tpr", "thresholds")}
