"""The one adapter between Keras' training loop and the engine's events."""

from __future__ import annotations

import math
import time

import keras

from tl_core.events import BatchEnded, EpochEnded
from tl_core.training.context import RunContext
from tl_core.training.loops import current_learning_rate


class EventBridge(keras.callbacks.Callback):
    """Turns Keras callbacks into engine events, watches for stop requests and keeps the best weights.

    The best epoch is the one with the lowest validation loss over the whole
    run (phases included), so a fine-tuning phase that never beats its warm-up
    leaves the warm-up's head in place.
    """

    def __init__(self, run: RunContext, phase: str, target: keras.Model, batches: int, planned: int = 0, warm_up: bool = False) -> None:
        super().__init__()
        self.run = run
        self.phase = phase
        self.target = target
        self.batches = batches
        self.planned = planned  # epochs this phase runs at most
        self.warm_up = warm_up  # the head's phase before fine-tuning
        self.first_epoch = len(run.history) + 1
        self.best_weights = target.get_weights()  # the starting point counts until an epoch beats it
        self.epochs_without_improvement = 0
        self.epoch_started = 0.0
        self.last_batch_event = 0.0
        self.batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        self.batch = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batch = batch + 1
        now = time.perf_counter()
        if now - self.last_batch_event >= 0.2 or self.batch == self.batches:
            self.last_batch_event = now
            metrics = {name: float(value) for name, value in (logs or {}).items() if name in ("loss", "accuracy", "cross_entropy")}
            self.run.on_event(BatchEnded(self.phase, len(self.run.history) + 1, self.batch, self.batches, metrics))
        if self.run.stop.requested:
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.run.stop.requested:
            self.model.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        if run.stop.requested:
            run.notice(f"Stopped during epoch {len(run.history) + 1} after {self.batch} of {self.batches} batches; that epoch is not counted.")
            return
        logs = {name: float(value) for name, value in (logs or {}).items()}
        seconds = time.perf_counter() - self.epoch_started
        # fit reports the smoothed training loss as "loss" when label smoothing is on; plain cross-entropy is "cross_entropy".
        entry = {
            "epoch": len(run.history) + 1,
            "phase": self.phase,
            "loss": logs.get("cross_entropy", logs.get("loss")),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_cross_entropy", logs.get("val_loss")),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": current_learning_rate(self.model.optimizer) if getattr(self.model, "optimizer", None) is not None else run.config.learning_rate,
            "seconds": round(seconds, 3),
        }
        run.history.append(entry)
        metrics = {key: value for key, value in entry.items() if key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        phase_epoch = entry["epoch"] - self.first_epoch + 1
        run.on_event(EpochEnded(self.phase, entry["epoch"], max(run.planned_epochs, entry["epoch"]), metrics, seconds, phase_epoch, max(self.planned, phase_epoch)))
        val_loss = entry["val_loss"] if entry["val_loss"] is not None else math.inf
        if val_loss < run.best_loss:
            run.best_loss, run.best_epoch = val_loss, entry["epoch"]
            self.best_weights = self.target.get_weights()
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            patience = run.config.early_stopping_patience
            if patience and self.epochs_without_improvement >= patience and (not self.planned or phase_epoch < self.planned):
                self.model.stop_training = True
                run.notice(self.early_stopping_note(entry["epoch"], phase_epoch, patience))

    def early_stopping_note(self, epoch: int, phase_epoch: int, patience: int) -> str:
        """What early stopping did, naming the epoch whose weights are kept (the run's lowest validation loss so far)."""
        run = self.run
        ended = f"after epoch {epoch} ({phase_epoch} of at most {self.planned})" if self.planned else f"after epoch {epoch}"
        why = f"the validation loss had not improved for {patience} epochs"
        if self.warm_up:
            return (
                f"The head's warm-up stopped early {ended}: {why}. The head goes into fine-tuning with the weights of epoch {run.best_epoch} "
                f"(val_loss {run.best_loss:.4f}), the best so far."
            )
        return f"Early stopping {ended}: {why}; the model keeps the weights of epoch {run.best_epoch} (val_loss {run.best_loss:.4f})."

    def restore_best(self) -> None:
        self.target.set_weights(self.best_weights)
