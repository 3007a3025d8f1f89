"""Using a trained run: the class of new images, and the evaluation of a run on a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset
from tl_core.errors import RunError
from tl_core.insight.metrics import Evaluation, evaluate_predictions
from tl_core.runs.folder import TrainedRun


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image (or why there is none)."""

    path: str
    predicted_class: str | None
    confidence: float | None
    top: list[tuple[str, float]]
    error: str = ""

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "top": [{"class": name, "probability": probability} for name, probability in self.top],
            "error": self.error,
        }


def predict_files(run: TrainedRun, paths: Sequence[str | os.PathLike], top_k: int = 3) -> list[Prediction]:
    """Predicts the class of each image file; unreadable files get an error instead of stopping the rest."""
    arrays, readable, predictions = [], [], {}
    for path in paths:
        try:
            arrays.append(load_image(path, run.image_size))
            readable.append(str(path))
        except FileNotFoundError:
            predictions[str(path)] = Prediction(str(path), None, None, [], error="file not found")
        except Exception as error:  # noqa: BLE001 - any decoder failure is reported for that file
            predictions[str(path)] = Prediction(str(path), None, None, [], error=f"not a readable image ({type(error).__name__}: {error})")
    if arrays:
        probabilities = predict_arrays(run, np.stack(arrays))
        for path, row in zip(readable, probabilities, strict=False):
            predictions[path] = _prediction(path, row, run.class_names, top_k)
    return [predictions[str(path)] for path in paths]


def predict_arrays(run: TrainedRun, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for uint8 images of the run's size, shape (n, classes)."""
    outputs = [np.asarray(run.model.predict_on_batch(pixels[start : start + batch_size].astype(np.float32))) for start in range(0, len(pixels), batch_size)]
    return np.concatenate(outputs).astype(np.float64)


def _prediction(path: str, row: np.ndarray, class_names: Sequence[str], top_k: int) -> Prediction:
    order = np.argsort(-row)[: max(1, top_k)]
    top = [(class_names[index], float(row[index])) for index in order]
    return Prediction(path, top[0][0], top[0][1], top)


def evaluate_run(run: TrainedRun, data_dir: str | os.PathLike, split: str = "auto") -> tuple[Evaluation, dict]:
    """Evaluates a trained run on a dataset.

    Args:
        run: The loaded run.
        data_dir: A dataset folder whose class names are among the run's classes.
        split: ``"auto"``: the dataset's test split when it has split folders (else
            its validation split); for the run's own data the run's evaluation split;
            for a plain folder of classes, every image. Or ``"all"``, ``"train"``,
            ``"val"``, ``"test"``.

    Returns:
        The evaluation and a dict describing what was evaluated (split, counts, skipped files).

    Raises:
        RunError: When the dataset has classes the model does not know or the split is empty.
    """
    summary = run.summary
    split_options = summary.split_options
    # Scanned without a generated split first: new evaluation data may have classes too small to split.
    dataset = scan_dataset(data_dir, make_splits=False, **split_options)
    unknown = [name for name in dataset.class_names if name not in run.class_names]
    if unknown:
        raise RunError(
            f"The dataset has class{'es' if len(unknown) > 1 else ''} {', '.join(repr(name) for name in unknown)} that the model does not know "
            f"(it knows {', '.join(run.class_names)}). Evaluate on folders named like the model's classes."
        )
    same_data = dataset.fingerprint() == summary.fingerprint
    if split == "auto":
        split = summary.evaluation_split if same_data else ("all" if dataset.split_source.startswith("not split") else dataset.evaluation_split)
    if split in ("train", "val") or (split == "test" and same_data):
        dataset = scan_dataset(data_dir, **split_options)  # the run's own split, recreated from its seed
    records = dataset.records if split == "all" else dataset.split(split)
    if not records:
        raise RunError(f"The {split} split of '{dataset.root}' has no images. Choose another split with --split.")
    pixels = np.stack([load_image(record.path, run.image_size) for record in records])
    probabilities = predict_arrays(run, pixels)
    labels = [run.class_names.index(record.class_name) for record in records]
    evaluation = evaluate_predictions(labels, probabilities, run.class_names, [record.path for record in records])
    details = {"split": split, "images": len(records), "root": str(dataset.root), "skipped": [vars(item) for item in dataset.skipped]}
    return evaluation, details
