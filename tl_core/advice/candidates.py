"""The strategies weighed for the user's data: what each should reach, and how long it takes on this device."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tl_core.advice.scenario import candidate_strategies, classify_size
from tl_core.advice.similarity import Measurement
from tl_core.config import STRATEGY_NAMES, AugmentConfig, TrainConfig
from tl_core.data.records import Dataset
from tl_core.training.estimate import duration_text, estimate_run

DEFAULT_TIME_BUDGET_MINUTES = 10.0
# Share of feature extraction's errors fine-tuning removes, from the benchmarks in docs/benchmarks.md (with at least
# FULL_CUT_IMAGES_PER_CLASS training images per class; proportionally less below).
FINE_TUNE_ERROR_CUT = 0.35
FULL_CUT_IMAGES_PER_CLASS = 300
# A candidate this much less accurate than the best, but faster, is recommended instead.
WITHIN_A_POINT = 0.01


@dataclass(frozen=True)
class Candidate:
    """One strategy weighed for the user's data: what it should reach, and how long it takes here.

    Attributes:
        strategy: The strategy.
        expected_accuracy: Accuracy it is expected to reach (None: not predictable, compare to measure).
        accuracy_basis: Where that number comes from, in words.
        seconds: Estimated time of a full run on this device.
        epochs: Epochs of its main phase (fitted to the time budget for fine-tuning).
        within_budget: Whether it fits the time budget.
        recommended: The one the advice recommends.
    """

    strategy: str
    expected_accuracy: float | None
    accuracy_basis: str
    seconds: float | None
    epochs: int | None
    within_budget: bool
    recommended: bool = False


def expected_fine_tune_accuracy(feature_extraction_accuracy: float, train_images_per_class: float) -> float:
    """Fine-tuning's expected accuracy: feature extraction's, with a share of its errors removed.

    The share (``FINE_TUNE_ERROR_CUT``) comes from the benchmark table in docs/benchmarks.md; with
    fewer than ``FULL_CUT_IMAGES_PER_CLASS`` training images per class the unfrozen layers
    have less to learn from, so the share shrinks in proportion.
    """
    cut = FINE_TUNE_ERROR_CUT * min(1.0, train_images_per_class / FULL_CUT_IMAGES_PER_CLASS)
    return feature_extraction_accuracy + (1.0 - feature_extraction_accuracy) * cut


def plan_candidates(
    dataset: Dataset,
    measurement: Measurement,
    scenario: int,
    backbone: str,
    freeze_layers: int,
    throughput,
    cache_dir: str | None = None,
    time_budget_minutes: float = DEFAULT_TIME_BUDGET_MINUTES,
    flip: str = "horizontal",
) -> list[Candidate]:
    """Each strategy worth weighing in this scenario, with its expected accuracy and time; one is recommended.

    The recommendation is the most accurate candidate that fits the time budget, except
    that a cheaper one within ``WITHIN_A_POINT`` of it wins: a point of accuracy is not
    worth many more minutes by default, and the user sees both and can choose.
    Fine-tuning's epochs are cut to fit the budget (at least two), else it does not fit.
    """
    budget = time_budget_minutes * 60
    per_class = classify_size(dataset).images_per_class
    base = measurement.feature_extraction_accuracy
    rows = []
    for strategy in candidate_strategies(scenario):
        config = TrainConfig(
            data_dir=str(dataset.root), out_dir="", backbone=backbone, strategy=strategy, cache_dir=cache_dir,
            freeze_layers=freeze_layers if strategy == "fine_tune" else None, augmentation=AugmentConfig(flip=flip),
        ).validated()
        estimate = estimate_run(config, dataset, throughput)
        epochs = config.epochs
        if strategy in ("fine_tune", "full_fine_tune", "from_scratch") and estimate.seconds > budget:
            per_epoch = estimate.parts[strategy] / config.epochs
            fitting = int((budget - (estimate.seconds - estimate.parts[strategy])) // per_epoch) if per_epoch > 0 else config.epochs
            if fitting >= 2:
                epochs = min(config.epochs, fitting)
                estimate = estimate_run(replace(config, epochs=epochs), dataset, throughput)
        if strategy == "feature_extraction":
            expected, basis = base, f"measured: a cross-validated probe on {measurement.sample_size} of your images, its learning curve extended to your training images"
        elif strategy in ("fine_tune", "full_fine_tune"):
            expected = expected_fine_tune_accuracy(base, per_class)
            basis = "feature extraction's measured accuracy with about a third of its errors removed, as fine-tuning did in our benchmarks"
        else:
            expected, basis = None, "not predictable from the probe; compare the strategies to measure it"
        rows.append(Candidate(strategy, expected, basis, estimate.seconds, epochs, estimate.seconds <= budget))
    return _with_recommendation(rows)


def _with_recommendation(rows: list[Candidate]) -> list[Candidate]:
    rated = [row for row in rows if row.within_budget and row.expected_accuracy is not None]
    if rated:
        best = max(rated, key=lambda row: row.expected_accuracy)
        chosen = min((row for row in rated if row.expected_accuracy >= best.expected_accuracy - WITHIN_A_POINT), key=lambda row: row.seconds)
    else:
        chosen = min(rows, key=lambda row: row.seconds if row.seconds is not None else math.inf)
    return [replace(row, recommended=row is chosen) for row in rows]


def candidate_reason(rows: list[Candidate], matrix_strategy: str, time_budget_minutes: float) -> str:
    chosen = next(row for row in rows if row.recommended)
    listed = "; ".join(
        f"{STRATEGY_NAMES[row.strategy]}: {'~' + format(row.expected_accuracy, '.1%') if row.expected_accuracy is not None else 'accuracy unknown'}"
        f" in about {duration_text(row.seconds)}{'' if row.within_budget else ' (over the time budget)'}"
        for row in rows
    )
    best = max((row for row in rows if row.expected_accuracy is not None), key=lambda row: row.expected_accuracy)
    if chosen is not best and chosen.expected_accuracy is not None and best.within_budget:
        why = f"{STRATEGY_NAMES[chosen.strategy]} is within a point of the most accurate candidate and faster, so it is recommended; choose {STRATEGY_NAMES[best.strategy]} for the last few tenths"
    elif chosen is best:
        why = f"{STRATEGY_NAMES[chosen.strategy]} is expected to be the most accurate within your time budget of {time_budget_minutes:g} min"
    else:
        why = f"{STRATEGY_NAMES[chosen.strategy]} fits your time budget of {time_budget_minutes:g} min"
    matrix = "" if chosen.strategy == matrix_strategy else f" (the matrix alone would say {STRATEGY_NAMES[matrix_strategy]}; the measurement has the last word)"
    return f"Expected on this device: {listed}. So {why}{matrix}."
