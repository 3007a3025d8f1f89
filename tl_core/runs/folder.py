"""The run folder: what a run writes, and the one way to read it back.

A run folder holds::

    model.h5        the whole classifier, Keras' HDF5 format (loads with keras.models.load_model)
    model.keras     the same model in the native Keras format
    labels.json     class names in the order of the model's outputs
    metrics.json    evaluation on the held-out split and the training history
    run.json        the RunSummary: settings, data, device, timings, versions, notes
    images.json     every image the run used, with its split (what training again reuses)

and, when asked for, the portable files of ``tl_core.runs.portable``. The
names live here and nowhere else. ``run.json`` is a ``RunSummary``, written by
``to_dict`` and read by ``from_dict``, which accepts the folders of earlier
versions (missing keys take their defaults, unknown ones are kept). Every file
is written with ``tl_core.files.atomic_write``, so a folder never offers a
half-written ``model.h5`` as finished.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from tl_core.errors import RunError
from tl_core.files import atomic_write, write_json

KERAS_FILE, H5_FILE = "model.keras", "model.h5"
MODEL_FILES = (KERAS_FILE, H5_FILE)
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "run.json"
IMAGES_FILE = "images.json"
RUN_MARKERS = (SUMMARY_FILE, *MODEL_FILES, METRICS_FILE)  # any of these makes a folder a run folder
STATUSES = ("finished", "stopped", "failed")
DOWNLOAD_FILES = (H5_FILE, KERAS_FILE, LABELS_FILE, SUMMARY_FILE, METRICS_FILE)  # what a person takes away from a run


@dataclass(frozen=True)
class RunFile:
    """One file of a run folder as offered for download: its path, and its size in bytes (None when it is not there)."""

    path: Path
    size: int | None

    @property
    def name(self) -> str:
        return self.path.name

    def read(self) -> bytes:
        """The file's bytes (read when asked: a model file can be hundreds of MB)."""
        return self.path.read_bytes()


def run_files(run_dir: str | os.PathLike, names: Sequence[str]) -> dict[str, RunFile]:
    """The named files of a run folder, each with its size, or None for one that is missing or unreadable."""
    folder, files = Path(run_dir), {}
    for name in names:
        path = folder / name
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError:
            size = None
        files[name] = RunFile(path, size)
    return files


@dataclass
class RunSummary:
    """The contents of ``run.json``; the field names are its keys.

    Attributes:
        status: ``finished``, ``stopped`` or ``failed``.
        created: ISO time the run was written.
        config: The run's settings (``TrainConfig.to_dict()``, the recipe filled in).
        backbone: ``name``, ``display_name``, ``parameters`` and ``preprocessing`` of the backbone.
        image_size: Side of the square input.
        weights: What the backbone started from (``tl_core.models.weights.weights_identity``).
        strategy: The strategy trained.
        test_time_flip: Whether predictions average the image and its mirror image.
        frozen_layers, backbone_layers, trainable_parameters: What trained.
        best_epoch: The epoch whose weights were kept.
        phases: The epochs each phase ran (``tl_core.insight.curves.PhaseSpan.to_dict()``), in order.
        estimate: The time estimate made when the run started (``Estimate.to_dict()``).
        timings: That estimate against the seconds measured, per group of phases (``tl_core.training.timings.compare_with_estimate``).
        device: The device (``DeviceInfo.to_dict()``).
        feature_runtime: What ran the frozen backbone and why (``tl_core.runtime.RuntimeChoice.to_dict()``);
            None when it did not run (features from the cache, training from scratch).
        data: The dataset: ``root``, ``fingerprint``, ``class_names``, ``counts``, ``split_source``,
            ``split_fractions``, ``evaluation_split``, ``selection_split``, ``seed``.
        skipped, duplicates, suspicious: What the scan found.
        label_decisions: The user's label decisions applied (None when there were none).
        cache: What came from the caches.
        cache_keys: The cache entries of the run's decoded images and features.
        from_run: What was reused from the run this one trained again from.
        notes: What the run told the user.
        history: One entry per epoch.
        seconds: Seconds per phase and ``total``.
        versions: Library versions.
        error: The failure message, for a failed run.
        exports: The check of each portable file (``ExportCheck.to_dict()``), by format.
        export_check_images: The held-out images a later export is checked on.
        created_by: Who trained it, on a shared app: the signed-in visitor as ``tl_core.service.sharing.visitor_key``
            gives it (a one-way hash); empty on the local app and the command line.
        extra: Keys this version does not know (kept on a round trip).
    """

    status: str
    created: str = ""
    config: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)
    image_size: int | None = None
    weights: str = ""
    strategy: str = ""
    test_time_flip: bool = False
    frozen_layers: int | None = None
    backbone_layers: int | None = None
    trainable_parameters: int | None = None
    best_epoch: int | None = None
    phases: list = field(default_factory=list)
    estimate: dict | None = None
    timings: dict | None = None
    device: dict = field(default_factory=dict)
    feature_runtime: dict | None = None
    data: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    label_decisions: dict | None = None
    suspicious: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    cache_keys: dict = field(default_factory=dict)
    from_run: dict | None = None
    notes: list = field(default_factory=list)
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    error: str | None = None
    exports: dict | None = None
    export_check_images: list | None = None
    created_by: str = ""
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, values: dict) -> RunSummary:
        """A summary from ``run.json``'s contents; a value of the wrong kind takes the field's default."""
        if not isinstance(values, dict):
            raise ValueError("run.json does not hold an object")
        known = {item.name: item for item in fields(cls) if item.name != "extra"}
        settings = {}
        for name, item in known.items():
            if name not in values:
                continue
            value = values[name]
            expected = _container_type(item)
            if expected is not None and value is not None and not isinstance(value, expected):
                continue  # a damaged entry: the default stands
            settings[name] = value
        settings.setdefault("status", "")
        return cls(**settings, extra={name: value for name, value in values.items() if name not in known})

    def to_dict(self) -> dict:
        """``run.json``'s contents: every field (the optional ones only when set), then the unknown keys kept."""
        result = {}
        for item in fields(self):
            if item.name == "extra":
                continue
            value = getattr(self, item.name)
            if (item.name in ("error", "exports", "export_check_images", "feature_runtime", "timings") and value is None) or (item.name == "created_by" and not value):
                continue
            result[item.name] = value
        return {**result, **self.extra}

    @property
    def display_name(self) -> str:
        """The backbone as people call it (``MobileNetV2``), or its name."""
        return str(self.backbone.get("display_name") or self.config.get("backbone") or "")

    @property
    def input_size(self) -> int | None:
        """The side of the images the saved model takes: ``image_size``, or with a centre crop the larger frame whose middle it keeps."""
        if self.image_size and self.config.get("centre_crop"):
            from tl_core.data.images import framed_size

            return framed_size(self.image_size)
        return self.image_size

    @property
    def planned_phase_epochs(self) -> dict[str, int]:
        """The most epochs each phase could run (``{"head": 200, "fine_tune": 8}``), from ``phases`` or the settings."""
        planned = {span["phase"]: span["planned_epochs"] for span in self.phases if isinstance(span, dict) and span.get("planned_epochs")}
        if planned or not self.config:
            return planned
        from tl_core.config import TrainConfig

        try:
            return TrainConfig.from_dict(self.config).planned_phase_epochs
        except (TypeError, ValueError):
            return {}

    @property
    def class_names(self) -> list[str]:
        return list(self.data.get("class_names") or [])

    @property
    def evaluation_split(self) -> str:
        """The split the figures come from."""
        return str(self.data.get("evaluation_split") or "test")

    @property
    def selection_split(self) -> str:
        """The split whose validation loss chose the kept epoch."""
        return str(self.data.get("selection_split") or "val")

    @property
    def fingerprint(self) -> str:
        return str(self.data.get("fingerprint") or "")

    @property
    def dataset_name(self) -> str:
        """The data folder's name."""
        return Path(str(self.data.get("root") or self.config.get("data_dir") or "")).name

    @property
    def image_count(self) -> int | None:
        """Images the run used, all splits."""
        counts = self.data.get("counts") if isinstance(self.data.get("counts"), dict) else {}
        return sum(sum(split.values()) for split in counts.values() if isinstance(split, dict)) or None

    @property
    def total_seconds(self) -> float | None:
        return self.seconds.get("total")

    @property
    def split_options(self) -> dict:
        """The seed and fractions that recreate the run's split of its data (``scan_dataset`` keywords)."""
        options = {"seed": int(self.data.get("seed", 0) or 0)}
        fractions = self.data.get("split_fractions")
        if fractions:
            options.update(val_fraction=fractions.get("val", 0.15) or 0.15, test_fraction=fractions.get("test", 0.0))
        return options


def _container_type(item) -> type | tuple | None:
    """The container a field holds (dict, list, str, bool, int), to tell a damaged value from a good one."""
    annotation = str(item.type)
    for name, kind in (("dict", dict), ("list", list), ("str", str), ("bool", bool)):
        if annotation.startswith(name):
            return kind
    if annotation.startswith("int"):
        return (int, float)
    return None


def read_summary(run_dir: str | os.PathLike) -> RunSummary:
    """The ``RunSummary`` of a run folder.

    Raises:
        RunError: When the folder has no ``run.json`` or it cannot be read.
    """
    path = Path(run_dir).expanduser() / SUMMARY_FILE
    try:
        return RunSummary.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise RunError(f"Could not read '{path}': {' '.join(str(error).split())[:200]}. The run folder is damaged or not a run folder; train again, or pick another run.") from error


def update_summary(run_dir: str | os.PathLike, **changes) -> RunSummary:
    """Changes some fields of a run's ``run.json`` (written atomically) and returns the summary.

    Raises:
        RunError: When the file cannot be read or written.
    """
    path = Path(run_dir) / SUMMARY_FILE
    summary = read_summary(run_dir) if path.is_file() else RunSummary(status="")
    for name, value in changes.items():
        setattr(summary, name, value)
    try:
        write_json(path, summary.to_dict())
    except OSError as error:
        raise RunError(f"Could not update '{path}': {error.strerror or error}.") from error
    return summary


def write_run_folder(
    run_dir: Path, summary: RunSummary, model=None, class_names: Sequence[str] | None = None, evaluation=None, history: list[dict] | None = None
) -> None:
    """Writes the run's files; only ``run.json`` when no model is given.

    Args:
        run_dir: The run folder (created when missing).
        summary: What ``run.json`` holds.
        model: The Keras model, saved as ``model.keras`` and ``model.h5``.
        class_names: The model's classes, in the order of its outputs (``labels.json``).
        evaluation: The ``Evaluation`` on the held-out split, for ``metrics.json`` (with ``history``, the epochs).

    Raises:
        RunError: When the folder cannot be created or written (read-only, disk full).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if model is not None:
            for name in MODEL_FILES:
                save_model(model, run_dir / name)
            write_json(run_dir / LABELS_FILE, list(class_names or []))
        if evaluation is not None:
            write_json(run_dir / METRICS_FILE, metrics_document(evaluation, summary, history or []))
        write_json(run_dir / SUMMARY_FILE, summary.to_dict())
    except OSError as error:
        raise RunError(
            f"Could not write the run folder '{run_dir}': {error.strerror or error}. "
            "Choose a folder you can write to with enough free space (--out)."
        ) from error


def metrics_document(evaluation, summary: RunSummary, history: list[dict]) -> dict:
    """``metrics.json``: the evaluation, which split it comes from and which chose the kept epoch, and the epochs."""
    metrics = evaluation.to_dict()
    metrics["test_accuracy"] = metrics["accuracy"]
    metrics["evaluated_split"] = summary.data.get("evaluation_split")
    metrics["selection_split"] = summary.selection_split
    metrics["split_source"] = summary.data.get("split_source", "")
    metrics["history"] = history
    return metrics


def save_model(model, target: Path) -> None:
    """Saves a Keras model atomically (the format follows the file's extension)."""
    absl_logger = logging.getLogger("absl")
    previous_level = absl_logger.level
    try:
        # .h5 is what users ask for; Keras' "legacy format" warning would only confuse them.
        absl_logger.setLevel(logging.ERROR)
        atomic_write(target, model.save)
    finally:
        absl_logger.setLevel(previous_level)


# --------------------------------------------------------------------------- images.json: what training again reuses


@dataclass(frozen=True)
class EarlierRun:
    """What a new run takes from an earlier one (``--from-run``).

    Attributes:
        run_dir: The earlier run folder.
        summary: Its ``run.json``.
        images: Each image path it used: ``split``, ``size`` (bytes), ``mtime`` (ns) and ``row`` in its decoded-image cache entry.
        class_names: Its classes, in the model's output order.
    """

    run_dir: Path
    summary: RunSummary
    images: dict[str, dict]
    class_names: list[str]

    @property
    def cache_keys(self) -> dict:
        return self.summary.cache_keys or {}

    @property
    def splits(self) -> dict[str, str]:
        return {path: entry["split"] for path, entry in self.images.items()}


def write_images_manifest(run_dir: Path, records, row_of: dict[str, int]) -> None:
    """Writes ``images.json``: every image a run used, with what training again needs to reuse it."""
    rows = [
        {"path": record.path, "class": record.class_name, "split": record.split, "size": record.file_size, "mtime": record.modified_ns, "row": row_of[record.path]}
        for record in records
    ]
    write_json(run_dir / IMAGES_FILE, rows, indent=None)


def load_earlier_run(run_dir: str | os.PathLike) -> EarlierRun:
    """Reads what ``from_run`` needs from a run folder.

    Raises:
        RunError: When the folder lacks ``run.json`` or ``images.json`` (a run from an older version, or not a run folder).
    """
    folder = Path(run_dir).expanduser()
    try:
        summary = RunSummary.from_dict(json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8")))
        rows = json.loads((folder / IMAGES_FILE).read_text(encoding="utf-8"))
        images = {row["path"]: {"split": row["split"], "size": row["size"], "mtime": row["mtime"], "row": row["row"]} for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(
            f"'{folder}' cannot be trained again from: it has no readable {SUMMARY_FILE} and {IMAGES_FILE} ({' '.join(str(error).split())[:200]}). "
            "Pick a run made by this version (see 'python -m tl_core runs'), or train without --from-run."
        ) from error
    return EarlierRun(folder, summary, images, summary.class_names)


def held_out_images(run_dir: str | os.PathLike) -> set[tuple[str, str]] | None:
    """The (path, class) of every image a run was judged on, from its ``images.json``; None when that cannot be read.

    Two runs whose sets are equal report accuracies on the same images, whatever else changed in their data.
    """
    try:
        earlier = load_earlier_run(run_dir)
    except RunError:
        return None
    split = earlier.summary.evaluation_split
    rows = json.loads((earlier.run_dir / IMAGES_FILE).read_text(encoding="utf-8"))
    return {(row["path"], row["class"]) for row in rows if row.get("split") == split}


# --------------------------------------------------------------------------- the model and reports, loaded back


@dataclass
class TrainedRun:
    """A run folder loaded back: the model, its classes and its summary."""

    run_dir: Path
    model: object
    class_names: list[str]
    image_size: int
    summary: RunSummary


def load_run(run_dir: str | os.PathLike) -> TrainedRun:
    """Loads a run folder's model (safe mode: no code from the file is executed).

    Raises:
        RunError: When the folder or its files are missing or unreadable.
    """
    import keras

    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise RunError(f"Run folder '{folder}' does not exist. Pass the --out folder of a finished 'python -m tl_core train' run.")
    labels_path = folder / LABELS_FILE
    model_path = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
    summary = read_summary(folder) if (folder / SUMMARY_FILE).is_file() else RunSummary(status="")
    if model_path is None or not labels_path.is_file():
        hint = " The run was stopped before any epoch finished, so it has no model." if summary.status == "stopped" else ""
        raise RunError(f"Run folder '{folder}' has no model.keras/model.h5 and labels.json.{hint} Train again, or pass another run folder.")
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - reported with the file name
        raise RunError(f"Could not load '{model_path}': {' '.join(str(error).split())[:300]}. The file may be damaged; train again.") from error
    class_names = _read_json(labels_path)
    if model.output_shape[-1] != len(class_names):
        raise RunError(f"'{labels_path}' lists {len(class_names)} classes but the model has {model.output_shape[-1]} outputs. The run folder is inconsistent; train again.")
    return TrainedRun(folder, model, list(class_names), int(model.input_shape[1]), summary)


@dataclass(frozen=True)
class RunReport:
    """A finished run's reports, as the Evaluate and Export pages show them (no model is loaded)."""

    run_dir: Path
    evaluation: object  # tl_core.insight.metrics.Evaluation
    history: list[dict]
    summary: RunSummary
    class_names: list[str]
    evaluated_split: str
    selection_split: str = "val"  # the split whose validation loss chose the kept epoch


def read_report(run_dir: str | os.PathLike) -> RunReport:
    """The evaluation and summary of a run folder.

    Raises:
        RunError: When the folder lacks its reports or they cannot be read.
    """
    from tl_core.insight.metrics import evaluation_from_dict

    folder = Path(run_dir)
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        summary = RunSummary.from_dict(json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8")))
        evaluation = evaluation_from_dict(metrics)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"The run folder '{folder}' has no readable {METRICS_FILE} and {SUMMARY_FILE} ({error}). Train the model again, or pick another run.") from error
    split = metrics.get("evaluated_split") or "held-out"
    return RunReport(folder, evaluation, metrics.get("history", []), summary, metrics["class_names"], split, metrics.get("selection_split", "val"))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunError(f"Could not read '{path}': {error}. The run folder is damaged; train again.") from error
