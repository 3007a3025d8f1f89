"""What the command line prints while a run trains, and the run history as a table."""

from __future__ import annotations

import sys
from pathlib import Path


class ConsolePrinter:
    """Prints a run's events as short lines: one per phase and epoch, progress every tenth."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.last_tenth: dict[str, int] = {}
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)
            self.stream.flush()

    def _print(self, text: str) -> None:
        if self.interactive:
            text = "\r\033[K" + text
        print(text, file=self.stream)

    def _on_TrainingStarted(self, event) -> None:  # noqa: N802 - named after the event class
        config = event.config
        splits = ", ".join(f"{split} {sum(counts.values())}" for split, counts in event.counts.items())
        device = event.device
        where = f"GPU {device['name']}" if device["kind"] == "GPU" else f"CPU ({device['reason']})"
        self._print(f"training {config['backbone']} ({config['strategy']}) on {len(event.class_names)} classes [{splits} images]; device: {where}")

    def _on_PhaseStarted(self, event) -> None:  # noqa: N802
        self._print(f"== {event.phase}: {event.description}")

    def _on_ProgressUpdated(self, event) -> None:  # noqa: N802
        tenth = int(10 * event.done / max(event.total, 1))
        if tenth > self.last_tenth.get(event.phase, -1) or event.done == event.total:
            if self.last_tenth.get(event.phase) == 10:
                return
            self.last_tenth[event.phase] = tenth
            self._print(f"   {event.phase}: {event.done}/{event.total}")

    def _on_BatchEnded(self, event) -> None:  # noqa: N802
        if self.interactive:
            loss = event.metrics.get("loss")
            text = f"   epoch {event.epoch} batch {event.batch}/{event.batches}" + (f" loss {loss:.4f}" if loss is not None else "")
            print("\r\033[K" + text, end="", file=self.stream)

    def _on_EpochEnded(self, event) -> None:  # noqa: N802
        metrics = event.metrics
        phase = event.phase.replace("_", " ")
        if event.phase_epochs:
            at_most = "at most " if event.phase == "head" else ""
            parts = [f"epoch {event.epoch} [{phase} {event.phase_epoch} of {at_most}{event.phase_epochs}]"]
        else:
            parts = [f"epoch {event.epoch}/{event.epochs} [{phase}]"]
        for name, label in (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc")):
            if metrics.get(name) is not None:
                parts.append(f"{label} {metrics[name]:.4f}")
        parts.append(f"{event.seconds:.1f}s")
        self._print("  ".join(parts))

    def _on_Notice(self, event) -> None:  # noqa: N802
        self._print(f"note: {event.message}")

    def _on_ModelSaved(self, event) -> None:  # noqa: N802
        self._print(f"model saved: accuracy {event.test_accuracy:.4f} on the held-out split; model.h5 and model.keras are ready in {event.run_dir} ({event.seconds:.1f}s)")

    def _on_TrainingStopped(self, event) -> None:  # noqa: N802
        self._print(f"stopped ({event.reason}) after {event.epochs_done} epochs")

    def _on_TrainingFinished(self, event) -> None:  # noqa: N802
        if event.test_accuracy is None:
            self._print(f"{event.status}: no epoch completed, so no model was saved; details in {event.run_dir}/run.json ({event.seconds:.1f}s)")
            return
        folder = Path(event.run_dir)
        files = sorted(path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")) if folder.is_dir() else []
        self._print(f"{event.status}: accuracy {event.test_accuracy:.4f} on the held-out split; wrote {', '.join(files)} to {event.run_dir} ({event.seconds:.1f}s)")
        if "model.onnx" not in files and "model.tflite" not in files:
            self._print(f"TFLite and ONNX files, when you need them: python -m tl_core export {event.run_dir} --format tflite onnx")


def format_run_table(records) -> str:
    """The history as an aligned text table, one line per run."""
    headers = ("created", "status", "dataset", "images", "classes", "backbone", "strategy", "frozen", "size", "seed", "epochs", "accuracy", "minutes", "device", "run")
    rows = [
        (
            record.created.replace("T", " ")[:16], record.status, record.dataset, _cell(record.images), _cell(record.classes), record.backbone,
            record.strategy, _cell(record.frozen_layers), _cell(record.image_size), _cell(record.seed), _cell(record.epochs),
            "" if record.test_accuracy is None else f"{record.test_accuracy:.3f}", "" if record.seconds is None else f"{record.seconds / 60:.1f}", record.device, record.name,
        )
        for record in records
    ]
    widths = [max(len(str(row[index])) for row in [headers, *rows]) for index in range(len(headers))]
    return "\n".join("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows])


def _cell(value) -> str:
    return "" if value is None else str(value)
