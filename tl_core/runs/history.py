"""The runs folder as a history: every run with what it trained on, how, and how well.

Each sub-folder of the runs folder (``$TL_CORE_RUNS_DIR``, default
``~/tl_core_runs``) that holds a ``run.json`` or a model file is a run. Its
row comes from ``run.json`` (and ``metrics.json`` for the accuracy). A folder
whose files are missing or unreadable is still listed, with the status
``incomplete`` or ``unreadable`` and the reason, so one bad folder never hides
the others. Nothing here writes, except ``delete_run`` and, while listing, the
removal of temporary files that a killed run left behind
(``tl_core.files.remove_abandoned_partials``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tl_core.errors import RunError
from tl_core.files import read_json, remove_abandoned_partials
from tl_core.insight.curves import phase_spans
from tl_core.runs.folder import METRICS_FILE, MODEL_FILES, RUN_MARKERS, STATUSES, SUMMARY_FILE, held_out_images, read_summary


@dataclass(frozen=True)
class RunRecord:
    """One row of the history.

    Attributes:
        run_dir: The run folder.
        name: The folder's name.
        created: ISO time the run was written (the folder's modification time when ``run.json`` lacks it).
        status: ``finished``, ``stopped``, ``failed``, ``incomplete`` (no ``run.json`` yet: training, or
            killed before it ended) or ``unreadable`` (a damaged ``run.json``).
        dataset: The data folder's name.
        fingerprint: The data's fingerprint (paths, sizes and times of the files).
        images: Images the run used, all splits.
        classes: Number of classes.
        backbone: The backbone's name.
        strategy: The strategy.
        frozen_layers: Backbone layers kept frozen.
        image_size: Side of the input.
        seed: The run's seed.
        epochs: Epochs trained (all phases).
        phases: The epochs of each phase, short: ``18 warm-up + 8 fine-tuning``.
        best_epoch: The epoch whose weights the model holds.
        estimated_seconds: What the estimate said when the run started.
        test_accuracy: Accuracy on the held-out split, when the run has a model.
        seconds: The run's duration.
        has_model: True when a model file is there.
        label_decisions: The user's label decisions the run applied, in words ("3 relabelled, 12 excluded"); empty when none.
        device: Where it trained, in words: ``GPU NVIDIA H100 80GB HBM3 · PyTorch · bfloat16`` or ``CPU · TensorFlow · float32``.
        created_by: Who trained it on a shared app (``RunSummary.created_by``); empty otherwise.
        problem: Why the row is incomplete or unreadable, or the failure message.
        config: The run's full settings (empty when unreadable).
        history: The run's epochs (for learning curves).
    """

    run_dir: Path
    name: str
    created: str
    status: str
    dataset: str = ""
    fingerprint: str = ""
    images: int | None = None
    classes: int | None = None
    backbone: str = ""
    strategy: str = ""
    frozen_layers: int | None = None
    image_size: int | None = None
    seed: int | None = None
    epochs: int | None = None
    phases: str = ""
    best_epoch: int | None = None
    estimated_seconds: float | None = None
    test_accuracy: float | None = None
    seconds: float | None = None
    has_model: bool = False
    label_decisions: str = ""
    device: str = ""
    created_by: str = ""
    problem: str = ""
    config: dict = field(default_factory=dict, repr=False)
    history: list = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """The row as ``runs --json`` prints it: without the full config and the epochs."""
        row = asdict(self)
        row["run_dir"] = str(self.run_dir)
        row.pop("config")
        row.pop("history")
        return row


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in RUN_MARKERS)


def list_runs(runs_dir: str | os.PathLike) -> list[RunRecord]:
    """Every run in ``runs_dir``, newest first; an absent folder has none."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        return []
    try:
        folders = [folder for folder in root.iterdir() if not folder.name.startswith(".") and is_run_folder(folder)]
    except OSError:
        return []
    for folder in folders:
        remove_abandoned_partials(folder)  # a run killed while writing its model leaves a hidden partial file
    records = [read_run(folder) for folder in folders]
    return sorted(records, key=lambda record: (record.created, record.name), reverse=True)


def read_run(folder: str | os.PathLike) -> RunRecord:
    """The history row of one run folder; never raises for damaged files."""
    folder = Path(folder)
    has_model = any((folder / name).is_file() for name in MODEL_FILES)
    modified = _modified(folder)
    if not (folder / SUMMARY_FILE).is_file():
        return RunRecord(folder, folder.name, modified, "incomplete", has_model=has_model, problem="no run.json: the run is still training, or ended before it could write one")
    try:
        summary = read_summary(folder)
    except RunError as error:
        return RunRecord(folder, folder.name, modified, "unreadable", has_model=has_model, problem=f"run.json cannot be read: {error}")
    metrics = read_json(folder / METRICS_FILE, {})
    metrics = metrics if isinstance(metrics, dict) else {}
    history = summary.history or metrics.get("history") or []
    return RunRecord(
        run_dir=folder,
        name=folder.name,
        created=str(summary.created or modified),
        status=summary.status if summary.status in STATUSES else "incomplete",
        dataset=summary.dataset_name,
        fingerprint=summary.fingerprint,
        images=summary.image_count,
        classes=len(summary.class_names) or None,
        backbone=summary.display_name,
        strategy=str(summary.strategy or summary.config.get("strategy") or ""),
        frozen_layers=summary.frozen_layers,
        image_size=summary.image_size or summary.config.get("image_size"),
        seed=summary.config.get("seed"),
        epochs=len(history) if history else None,
        phases=phases_in_short(history, summary.planned_phase_epochs) if isinstance(history, list) else "",
        best_epoch=summary.best_epoch,
        estimated_seconds=(summary.estimate or {}).get("seconds"),
        test_accuracy=metrics.get("test_accuracy"),
        seconds=summary.total_seconds,
        has_model=has_model,
        label_decisions=_decisions_in_words(summary.label_decisions),
        device=_device_in_words(summary.device, summary.feature_runtime),
        created_by=summary.created_by,
        problem=str(summary.error or ""),
        config=summary.config,
        history=history if isinstance(history, list) else [],
    )


def phases_in_short(history: list, planned: dict) -> str:
    """``18 warm-up + 8 fine-tuning``: the epochs of each phase, as a table cell."""
    spans = phase_spans([entry for entry in history if isinstance(entry, dict)], planned)
    return " + ".join(f"{span.epochs} {SHORT_TITLES.get(span.phase, span.phase) if not span.warm_up else 'warm-up'}" for span in spans)


SHORT_TITLES = {"head": "head", "fine_tune": "fine-tuning", "from_scratch": "from scratch"}


def _device_in_words(device: dict, feature_runtime: dict | None = None) -> str:
    """``GPU NVIDIA H100 80GB HBM3 · PyTorch · bfloat16``, or ``CPU · TensorFlow · float32 · backbone on ONNX Runtime``.

    Runs from before backends were recorded trained on TensorFlow.
    """
    from tl_core.backend import BACKEND_NAMES

    if not device:
        return ""
    where = f"GPU {device.get('name', '')}".strip() if device.get("kind") == "GPU" else "CPU"
    precision = device.get("precision") or {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(device.get("mixed_precision", ""), "float32")
    words = f"{where} · {BACKEND_NAMES.get(device.get('backend', 'tensorflow'), device.get('backend'))} · {precision}"
    if isinstance(feature_runtime, dict) and feature_runtime.get("runtime") not in (None, "keras"):
        from tl_core.runtime import TITLES

        words += f" · backbone on {TITLES.get(feature_runtime['runtime'], feature_runtime['runtime'])}"
    return words


def _decisions_in_words(applied) -> str:
    if not isinstance(applied, dict):
        return ""
    counts = {what: len(applied.get(what) or []) for what in ("relabelled", "excluded", "kept")}
    return ", ".join(f"{count} {what}" for what, count in counts.items() if count)


def _modified(folder: Path) -> str:
    try:
        return datetime.fromtimestamp(folder.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except OSError:
        return ""


def flatten_config(config: dict, prefix: str = "") -> dict:
    """A run's settings as one level, nested ones named like ``augmentation.zoom``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(first: dict, second: dict) -> list[str]:
    """The settings two runs' configs give different values, sorted (the run folder itself is not a setting)."""
    left, right = flatten_config(first), flatten_config(second)
    return sorted(key for key in left.keys() | right.keys() if key != "out_dir" and left.get(key) != right.get(key))


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side.

    Attributes:
        settings: ``(setting, first's value, second's value, differs)`` for every setting, the differing ones first.
        differing: The settings whose values differ.
        same_data: Whether both trained on the same files (their fingerprints are equal).
        same_held_out: How many held-out images both were judged on, when they were judged on exactly the same
            ones; None when not (or when a run's ``images.json`` cannot be read).
    """

    settings: list[tuple[str, str, str, bool]]
    differing: list[str]
    same_data: bool
    same_held_out: int | None


def compare_runs(first: RunRecord, second: RunRecord) -> RunComparison:
    """Their settings side by side, and whether their accuracies were measured on the same images."""
    differing = config_differences(first.config, second.config)
    left, right = flatten_config(first.config), flatten_config(second.config)
    keys = sorted((key for key in left.keys() | right.keys() if key != "out_dir"), key=lambda key: (key not in differing, key))
    settings = [(key, str(left.get(key, "")), str(right.get(key, "")), key in differing) for key in keys]
    judged = held_out_images(first.run_dir)
    same = len(judged) if judged and judged == held_out_images(second.run_dir) else None
    return RunComparison(settings, differing, bool(first.fingerprint) and first.fingerprint == second.fingerprint, same)


def delete_run(run_dir: str | os.PathLike, runs_dir: str | os.PathLike, may_delete: Callable[[str], str] | None = None) -> None:
    """Removes one run folder from ``runs_dir``.

    Args:
        run_dir: The run folder.
        runs_dir: The runs folder it must be directly inside.
        may_delete: Given the run's creator (``RunSummary.created_by``), why it may not be deleted
            ("" when it may); None allows every run (the local app, the command line).

    Raises:
        RunError: When the folder is not a run folder directly inside ``runs_dir``, ``may_delete``
            refuses it (nothing is removed then), or it cannot be removed.
    """
    root = Path(runs_dir).expanduser().resolve()
    folder = Path(run_dir).expanduser()
    if folder.is_symlink() or folder.resolve().parent != root or not is_run_folder(folder.resolve()):
        raise RunError(f"'{folder}' is not a run folder in '{root}'; nothing was deleted.")
    if may_delete is not None:
        refusal = may_delete(read_run(folder.resolve()).created_by)
        if refusal:
            raise RunError(f"'{folder.name}' was not deleted. {refusal}")
    try:
        shutil.rmtree(folder.resolve())
    except OSError as error:
        raise RunError(f"Could not delete '{folder}': {error.strerror or error}. Check its permissions, or delete it by hand.") from error
