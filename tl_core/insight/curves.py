"""Reading a run's learning curves: its phases, the epoch whose weights were kept, and where overfitting starts.

One rule for each, used by the run itself, the app's pages, the command line and
``run.json``, so they tell the same story:

- ``phase_spans``: which epochs each phase ran (a fine-tuning run has the head's
  warm-up, then fine-tuning; epochs are counted across phases);
- ``best_epoch``: the epoch with the lowest validation loss (the first of equals),
  whose weights the run keeps;
- ``overfitting_epoch``: judged within each phase, since a warm-up's plateau says
  nothing about the phase after it, and not reported where the kept weights come
  from a later, better epoch;
- ``epochs_in_words``: the epochs of each phase in one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PHASE_TITLES = {"head": "the head", "fine_tune": "fine-tuning", "from_scratch": "training from scratch"}


@dataclass(frozen=True)
class PhaseSpan:
    """The epochs one phase of a run ran.

    Attributes:
        phase: ``head``, ``fine_tune`` or ``from_scratch``.
        first_epoch: Its first epoch, counted across phases (1-based).
        last_epoch: Its last epoch.
        planned_epochs: The most it could have run (None when unknown).
        warm_up: True for the head's phase when a phase on images follows it.
    """

    phase: str
    first_epoch: int
    last_epoch: int
    planned_epochs: int | None = None
    warm_up: bool = False

    @property
    def epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1

    @property
    def stopped_early(self) -> bool:
        return self.planned_epochs is not None and self.epochs < self.planned_epochs

    @property
    def title(self) -> str:
        """``the head's warm-up``, ``the head``, ``fine-tuning`` or ``training from scratch``."""
        return "the head's warm-up" if self.warm_up else PHASE_TITLES.get(self.phase, self.phase.replace("_", " "))

    def to_dict(self) -> dict:
        return {
            "phase": self.phase, "title": self.title, "first_epoch": self.first_epoch, "last_epoch": self.last_epoch,
            "epochs": self.epochs, "planned_epochs": self.planned_epochs, "stopped_early": self.stopped_early,
        }


def phase_spans(history: Sequence[dict], planned: dict[str, int] | None = None) -> list[PhaseSpan]:
    """The phases of a run in order, each with its first and last epoch.

    Args:
        history: Epoch entries with ``epoch`` and ``phase``.
        planned: The planned epochs of each phase, when known (``{"head": 200, "fine_tune": 8}``).
    """
    spans: list[list] = []
    for number, entry in enumerate(history, start=1):
        phase, epoch = entry.get("phase") or "", int(entry.get("epoch", number))
        if spans and spans[-1][0] == phase:
            spans[-1][2] = epoch
        else:
            spans.append([phase, epoch, epoch])
    planned = planned or {}
    return [
        PhaseSpan(phase, first, last, planned.get(phase), warm_up=phase == "head" and index < len(spans) - 1)
        for index, (phase, first, last) in enumerate(spans)
    ]


def epochs_in_words(spans: Sequence[PhaseSpan]) -> str:
    """``26 epochs: 18 of the head's warm-up (epochs 1-18; stopped early, at most 200) and 8 of fine-tuning (epochs 19-26)``."""
    total = sum(span.epochs for span in spans)
    if not spans:
        return "no epoch"
    count = f"{total} epoch{'s' if total != 1 else ''}"
    early = [f"stopped early, at most {span.planned_epochs}" if span.stopped_early else "" for span in spans]
    if len(spans) == 1:
        return f"{count} of {spans[0].title}" + (f" ({early[0]})" if early[0] else "")
    pieces = [f"{span.epochs} of {span.title} (epochs {span.first_epoch}-{span.last_epoch}{'; ' + note if note else ''})" for span, note in zip(spans, early, strict=True)]
    return f"{count}: {', '.join(pieces[:-1])} and {pieces[-1]}"


def best_epoch(history: Sequence[dict]) -> int | None:
    """The epoch with the lowest validation loss, the first of equals: the one whose weights a run keeps."""
    best, lowest = None, math.inf
    for number, entry in enumerate(history, start=1):
        value = entry.get("val_loss")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value < lowest:
            best, lowest = int(entry.get("epoch", number)), value
    return best


def overfitting_epoch(history: Sequence[dict], patience: int = 2, kept_epoch: int | None = None) -> int | None:
    """The first epoch after which validation loss kept rising while training loss kept falling, within one phase.

    Args:
        history: Epoch entries with ``loss``, ``val_loss`` and ``phase``.
        patience: Consecutive epochs the two losses must move apart.
        kept_epoch: The epoch whose weights the run keeps (None: ``best_epoch(history)``). A divergence
            before it is not reported: a later, better epoch was kept, so the run did not end overfitted there.

    Returns:
        The 1-based epoch where the divergence starts (the last epoch before
        validation loss began to rise), or None when there is none.
    """
    kept = best_epoch(history) if kept_epoch is None else kept_epoch
    position = 0
    for span in phase_spans(history):
        entries = list(history[position : position + span.epochs])
        position += span.epochs
        start = _divergence(entries, patience)
        if start is not None and (kept is None or start >= kept):
            return start
    return None


def _divergence(history: Sequence[dict], patience: int) -> int | None:
    losses = [(entry.get("loss"), entry.get("val_loss")) for entry in history]
    for start in range(len(losses) - patience):
        window = losses[start : start + patience + 1]
        if any(value is None or (isinstance(value, float) and math.isnan(value)) for pair in window for value in pair):
            continue
        train_falls = all(later[0] < earlier[0] for earlier, later in zip(window, window[1:], strict=False))
        validation_rises = all(later[1] > earlier[1] for earlier, later in zip(window, window[1:], strict=False))
        if train_falls and validation_rises:
            return history[start].get("epoch", start + 1)
    return None
