"""The closed vocabulary of events a training run emits.

The engine calls ``on_event(event)`` with one of these frozen dataclasses and
knows nothing about who listens: the command line prints them, the app puts
them on a queue and redraws its charts, tests record them. A listener tells
them apart with ``isinstance`` (or by ``event.kind``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base class of every event."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class TrainingStarted(Event):
    """The run has checked its inputs and is about to do work."""

    config: dict[str, Any]
    device: dict[str, Any]
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    estimate: dict[str, Any] = field(default_factory=dict)  # the time estimate (``Estimate.to_dict()``): seconds per part


@dataclass(frozen=True)
class PhaseStarted(Event):
    """A named step of the run begins: decoding, feature extraction, a training phase, evaluation, export."""

    phase: str
    description: str
    total: int = 0  # items (images, epochs) the phase will go through; 0 when unknown


@dataclass(frozen=True)
class ProgressUpdated(Event):
    """Progress inside a phase that is not an epoch loop (decoding images, extracting features)."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class BatchEnded(Event):
    """One training batch is done."""

    phase: str
    epoch: int  # 1-based, counted across phases
    batch: int  # 1-based within the epoch
    batches: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class EpochEnded(Event):
    """One epoch is done; ``metrics`` holds loss/accuracy for train and validation."""

    phase: str
    epoch: int  # 1-based, counted across phases
    epochs: int  # planned epochs over all phases (the warm-up's own count once the phase after it starts)
    metrics: dict[str, float]
    seconds: float
    phase_epoch: int = 0  # 1-based within the phase
    phase_epochs: int = 0  # planned epochs of the phase (at most, where early stopping may end it)


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should know that is not an error (cache hit, augmentation skipped, early stop)."""

    message: str


@dataclass(frozen=True)
class ModelSaved(Event):
    """The model files are in the run folder and ready to use; the run may still improve them (and then says so again)."""

    run_dir: str
    test_accuracy: float
    seconds: float  # since the run started


@dataclass(frozen=True)
class TrainingStopped(Event):
    """The run ended early because a stop was requested; what was trained so far is kept."""

    reason: str
    epochs_done: int


@dataclass(frozen=True)
class TrainingFinished(Event):
    """The run is complete (or stopped and saved): the run folder and headline numbers."""

    status: str  # "finished" or "stopped"
    run_dir: str
    test_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class TrainingFailed(Event):
    """The run could not complete; ``message`` says why and what to try."""

    message: str
    error_type: str = ""


EventHandler = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """The default listener: does nothing."""


class Interrupted(Exception):
    """Raised inside the engine when a stop request arrives during a step that is not an epoch loop (decoding, features)."""


@dataclass
class StopRequest:
    """A thread-safe flag a caller sets to stop a run; the run checks it after every batch."""

    _flag: threading.Event = field(default_factory=threading.Event)
    reason: str = "stop requested"

    def request(self, reason: str = "stop requested by the user") -> None:
        self.reason = reason
        self._flag.set()

    @property
    def requested(self) -> bool:
        return self._flag.is_set()

    def check(self) -> None:
        """Raises ``Interrupted`` when a stop has been requested."""
        if self.requested:
            raise Interrupted(self.reason)
