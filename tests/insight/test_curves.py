"""Reading learning curves: phases, the kept epoch, overfitting judged within a phase, the epochs in words."""

from __future__ import annotations

from tl_core.insight.curves import best_epoch, epochs_in_words, overfitting_epoch, phase_spans

from fake_engine import CANNED_HISTORY


def warm_up_then_fine_tuning(fine_tune_val_losses: list[float]) -> list[dict]:
    """The issue's run: a warm-up whose validation loss bottoms out at epoch 12 and creeps up while the training loss falls,
    then fine-tuning from epoch 19 with the given validation losses."""
    history = []
    for epoch in range(1, 19):
        val_loss = 0.50 - 0.012 * epoch if epoch <= 12 else 0.356 + 0.001 * (epoch - 12)
        history.append({"epoch": epoch, "phase": "head", "loss": 1.0 / epoch, "val_loss": round(val_loss, 4)})
    for number, val_loss in enumerate(fine_tune_val_losses):
        history.append({"epoch": 19 + number, "phase": "fine_tune", "loss": 0.30 - 0.02 * number, "val_loss": val_loss})
    return history


def test_overfitting_epoch_marks_where_the_losses_part() -> None:
    history = [{"epoch": number, **metrics} for number, metrics in enumerate(CANNED_HISTORY, start=1)]
    assert overfitting_epoch(history) == 3
    assert overfitting_epoch(history[:4]) is None  # one rising epoch is noise, not a trend
    steady = [{"epoch": number, "loss": 1 / number, "val_loss": 1 / number} for number in range(1, 8)]
    assert overfitting_epoch(steady) is None
    assert overfitting_epoch([{"epoch": 1, "loss": 1.0, "val_loss": None}] * 4) is None


def test_a_warm_up_plateau_followed_by_a_better_fine_tuning_is_not_overfitting() -> None:
    history = warm_up_then_fine_tuning([0.36, 0.30, 0.26, 0.23, 0.21, 0.22, 0.215, 0.22])
    assert best_epoch(history) == 23
    # Within the warm-up alone the losses part from epoch 12, but the kept weights come from epoch 23, later and better.
    assert overfitting_epoch(history[:18]) == 12
    assert overfitting_epoch(history) is None
    assert overfitting_epoch(history, kept_epoch=12) == 12  # had the run kept epoch 12, the divergence after it would count


def test_overfitting_in_the_phase_that_holds_the_kept_epoch_is_marked() -> None:
    history = warm_up_then_fine_tuning([0.36, 0.30, 0.26, 0.23, 0.21, 0.24, 0.27, 0.31])
    assert best_epoch(history) == 23 and overfitting_epoch(history) == 23


def test_a_window_across_the_phase_change_is_not_a_divergence() -> None:
    """The warm-up's last two epochs rise and fine-tuning's first epoch starts higher: three epochs apart, but two phases."""
    history = [
        {"epoch": 1, "phase": "head", "loss": 0.9, "val_loss": 0.50},
        {"epoch": 2, "phase": "head", "loss": 0.8, "val_loss": 0.40},
        {"epoch": 3, "phase": "head", "loss": 0.7, "val_loss": 0.41},
        {"epoch": 4, "phase": "fine_tune", "loss": 0.6, "val_loss": 0.45},
        {"epoch": 5, "phase": "fine_tune", "loss": 0.5, "val_loss": 0.30},
    ]
    assert overfitting_epoch(history, kept_epoch=2) is None


def test_phases_and_the_epochs_in_words() -> None:
    history = warm_up_then_fine_tuning([0.36, 0.30, 0.26, 0.23, 0.21, 0.22, 0.215, 0.22])
    spans = phase_spans(history, {"head": 200, "fine_tune": 8})
    assert [(span.phase, span.first_epoch, span.last_epoch, span.stopped_early) for span in spans] == [("head", 1, 18, True), ("fine_tune", 19, 26, False)]
    assert spans[0].title == "the head's warm-up" and spans[1].title == "fine-tuning"
    assert epochs_in_words(spans) == "26 epochs: 18 of the head's warm-up (epochs 1-18; stopped early, at most 200) and 8 of fine-tuning (epochs 19-26)"
    alone = phase_spans([{"epoch": 1, "phase": "head"}, {"epoch": 2, "phase": "head"}], {"head": 200})
    assert alone[0].title == "the head" and epochs_in_words(alone) == "2 epochs of the head (stopped early, at most 200)"
