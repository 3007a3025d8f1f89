"""The run folder: writing the model files and reports, reading them back, predicting with them.

A run folder holds::

    model.h5        the whole classifier, Keras' HDF5 format (loads with keras.models.load_model)
    model.keras     the same model in the native Keras format
    labels.json     class names in the order of the model's outputs
    metrics.json    evaluation on the held-out split and the training history
    run.json        full config, data fingerprint, skipped files, seconds per phase, versions

Every file is written under a temporary name and renamed into place, so a
folder never offers a half-written ``model.h5`` as finished.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl_core.data import load_image, scan_dataset
from tl_core.errors import RunError
from tl_core.evaluation import Evaluation, evaluate_predictions

MODEL_FILES = ("model.keras", "model.h5")


def write_run_folder(
    run_dir: Path,
    summary: dict,
    model=None,
    class_names: Sequence[str] | None = None,
    evaluation: Evaluation | None = None,
    history: list[dict] | None = None,
) -> None:
    """Writes the run's files; only ``run.json`` when no model is given.

    Raises:
        RunError: When the folder cannot be created or written (read-only, disk full).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            for name in MODEL_FILES:
                _save_model_atomically(model, run_dir / name)
            write_text_atomically(run_dir / "labels.json", json.dumps(list(class_names or []), indent=2))
        if evaluation is not None:
            metrics = evaluation.to_dict()
            metrics["test_accuracy"] = metrics["accuracy"]
            data = summary.get("data", {})
            metrics["evaluated_split"] = data.get("evaluation_split")
            # Which images chose the kept epoch, and whether the reported figure comes from other images.
            metrics["selection_split"] = data.get("selection_split", "val")
            metrics["split_source"] = data.get("split_source", "")
            metrics["history"] = history or []
            write_text_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        write_text_atomically(run_dir / "run.json", json.dumps(summary, indent=2, default=str))
    except OSError as error:
        raise RunError(
            f"Could not write the run folder '{run_dir}': {error.strerror or error}. "
            "Choose a folder you can write to with enough free space (--out)."
        ) from error


def _save_model_atomically(model, target: Path) -> None:
    # Keras picks the format from the extension, so the temporary name keeps it.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-partial-", suffix=target.suffix)
    os.close(handle)
    os.unlink(temporary)
    absl_logger = logging.getLogger("absl")
    previous_level = absl_logger.level
    try:
        # .h5 is what users ask for; Keras' "legacy format" warning would only confuse them.
        absl_logger.setLevel(logging.ERROR)
        model.save(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        absl_logger.setLevel(previous_level)


def write_text_atomically(target: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-partial-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes owner-only files; these are ordinary reports
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class TrainedRun:
    """A run folder loaded back: the model, its classes and its summary."""

    run_dir: Path
    model: object
    class_names: list[str]
    image_size: int
    summary: dict


def load_run(run_dir: str | os.PathLike) -> TrainedRun:
    """Loads a run folder's model (safe mode: no code from the file is executed).

    Raises:
        RunError: When the folder or its files are missing or unreadable.
    """
    import keras

    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise RunError(f"Run folder '{folder}' does not exist. Pass the --out folder of a finished 'python -m tl_core train' run.")
    labels_path = folder / "labels.json"
    model_path = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
    if model_path is None or not labels_path.is_file():
        status = _read_json(folder / "run.json").get("status") if (folder / "run.json").is_file() else None
        hint = " The run was stopped before any epoch finished, so it has no model." if status == "stopped" else ""
        raise RunError(f"Run folder '{folder}' has no model.keras/model.h5 and labels.json.{hint} Train again, or pass another run folder.")
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - reported with the file name
        raise RunError(f"Could not load '{model_path}': {' '.join(str(error).split())[:300]}. The file may be damaged; train again.") from error
    class_names = _read_json(labels_path)
    summary = _read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
    image_size = int(model.input_shape[1])
    if model.output_shape[-1] != len(class_names):
        raise RunError(f"'{labels_path}' lists {len(class_names)} classes but the model has {model.output_shape[-1]} outputs. The run folder is inconsistent; train again.")
    return TrainedRun(folder, model, list(class_names), image_size, summary)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunError(f"Could not read '{path}': {error}. The run folder is damaged; train again.") from error


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
    data = run.summary.get("data", {})
    split_options = {"seed": int(data.get("seed", 0)), **_fractions(data.get("split_fractions"))}
    # Scanned without a generated split first: new evaluation data may have classes too small to split.
    dataset = scan_dataset(data_dir, make_splits=False, **split_options)
    unknown = [name for name in dataset.class_names if name not in run.class_names]
    if unknown:
        raise RunError(
            f"The dataset has class{'es' if len(unknown) > 1 else ''} {', '.join(repr(name) for name in unknown)} that the model does not know "
            f"(it knows {', '.join(run.class_names)}). Evaluate on folders named like the model's classes."
        )
    same_data = dataset.fingerprint() == data.get("fingerprint")
    if split == "auto":
        split = data.get("evaluation_split", "test") if same_data else ("all" if dataset.split_source.startswith("not split") else dataset.evaluation_split)
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


def _fractions(fractions: dict | None) -> dict:
    if not fractions:
        return {}
    return {"val_fraction": fractions.get("val", 0.15) or 0.15, "test_fraction": fractions.get("test", 0.0)}
