"""Reading a run's learning curves: where validation loss starts rising while training loss falls."""

from __future__ import annotations

import math


def overfitting_epoch(history: list[dict] | tuple[dict, ...], patience: int = 2) -> int | None:
    """The first epoch after which validation loss kept rising while training loss kept falling.

    Args:
        history: Epoch entries with ``loss`` and ``val_loss``.
        patience: Consecutive epochs the two losses must move apart.

    Returns:
        The 1-based epoch where the divergence starts (the last epoch before
        validation loss began to rise), or None when there is none.
    """
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
