"""The strategies weighed for the user's data: what each should reach, and how long it takes on this device."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tl_core.advice.scenario import candidate_strategies, classify_size
from tl_core.advice.similarity import Measurement
from tl_core.advice.sizes import SizeProbe
from tl_core.config import IMAGE_TRAINING_STRATEGIES, STRATEGY_NAMES, WARMUP_STRATEGIES, AugmentConfig, TrainConfig
from tl_core.data.records import Dataset
from tl_core.models.backbones import get_backbone
from tl_core.training.estimate import Throughput, duration_text, estimate_run

DEFAULT_TIME_BUDGET_MINUTES = 10.0
# Share of feature extraction's errors fine-tuning removes on images unlike ImageNet, with at least
# FULL_CUT_IMAGES_PER_CLASS training images per class (proportionally less below), from the clothing set behind
# issue 11 (0.866 -> 0.917). On images like ImageNet's the frozen features already fit, and the share shrinks with the
# measured similarity (``unfamiliarity``): see ``expected_fine_tune_accuracy`` and docs/benchmarks.md.
FINE_TUNE_ERROR_CUT = 0.35
FULL_CUT_IMAGES_PER_CLASS = 100
# Where turned images show the same class (``AugmentConfig.turns``), fine-tuning learns from every training image turned
# too, and removes this further share of its own remaining errors. On aerial scenes (three seeds) it made 19-26 % fewer
# errors with turns than without (0.973 -> 0.978 and 0.980), where feature extraction's turned views gained 0.2 points
# (0.966 -> 0.968): frozen features only average the views, while unfrozen layers learn from them (docs/benchmarks.md).
TURNED_COPIES_CUT = 0.2
# Similarity scores at or above FAMILIAR_SIMILARITY count as ImageNet's own kind of images (no share for fine-tuning);
# at or below FAMILIAR_SIMILARITY - UNFAMILIAR_SPAN, as wholly unlike them (the whole share).
FAMILIAR_SIMILARITY = 0.9
UNFAMILIAR_SPAN = 0.4
# A candidate this much less accurate than the best, but faster, is recommended instead: half a point, so that
# `auto` never lands further than that below the best candidate it weighed.
WITHIN_HALF_A_POINT = 0.005
# A probe's learning curve extended this many times its own training images or more is named a rough guess.
FAR_EXTENSION = 10


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
        image_size: The input size it runs at (None: the backbone's own).
        backbone: The backbone it runs, where it is not the advised one (a joined backbone, for feature extraction).
    """

    strategy: str
    expected_accuracy: float | None
    accuracy_basis: str
    seconds: float | None
    epochs: int | None
    within_budget: bool
    recommended: bool = False
    image_size: int | None = None
    backbone: str | None = None

    @property
    def title(self) -> str:
        """``fine-tuning at 64 px`` (the size only where it is not the backbone's own; the backbone where it is not the advised one)."""
        name = STRATEGY_NAMES[self.strategy]
        if self.backbone:
            name += f" with {get_backbone(self.backbone).display_name}"
        return f"{name} at {self.image_size} px" if self.image_size else name


def unfamiliarity(similarity_score: float) -> float:
    """How unlike ImageNet's images the data measured, from 0 (``FAMILIAR_SIMILARITY`` or more) to 1 (``UNFAMILIAR_SPAN`` below it)."""
    return min(1.0, max(0.0, (FAMILIAR_SIMILARITY - similarity_score) / UNFAMILIAR_SPAN))


def fine_tune_error_cut(train_images_per_class: float, similarity_score: float, turns: bool = False) -> float:
    """The share of feature extraction's errors fine-tuning is expected to remove.

    Fine-tuning retrains the top of the network, so it removes the errors that come from
    features made for other images: the further the measured similarity is from ImageNet's
    own photos, the larger the share (``unfamiliarity``). With fewer than
    ``FULL_CUT_IMAGES_PER_CLASS`` training images per class the unfrozen layers have less to
    learn from, so the share shrinks in proportion. With ``turns`` (turned images show the
    same class) it learns from the turned images too: ``TURNED_COPIES_CUT`` of the errors
    left after that share go as well.
    """
    share = FINE_TUNE_ERROR_CUT * unfamiliarity(similarity_score) * min(1.0, train_images_per_class / FULL_CUT_IMAGES_PER_CLASS)
    return 1.0 - (1.0 - share) * (1.0 - TURNED_COPIES_CUT) if turns else share


def expected_fine_tune_accuracy(feature_extraction_accuracy: float, train_images_per_class: float, similarity_score: float, turns: bool = False) -> float:
    """Fine-tuning's expected accuracy: feature extraction's, with ``fine_tune_error_cut`` of its errors removed."""
    return feature_extraction_accuracy + (1.0 - feature_extraction_accuracy) * fine_tune_error_cut(train_images_per_class, similarity_score, turns)


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
    size_probes: Sequence[SizeProbe] = (),
    turns: bool = False,
) -> list[Candidate]:
    """Each strategy worth weighing in this scenario, at each input size measured, with its expected accuracy and time; one is recommended.

    The recommendation is the most accurate candidate that fits the time budget, except
    that a cheaper one within ``WITHIN_HALF_A_POINT`` of it wins: a few tenths of a point are
    not worth many more minutes by default, and the user sees both and can choose.
    Fine-tuning's epochs are cut to fit the budget (at least two), else it does not fit.
    ``size_probes``: feature extraction measured at sizes other than the backbone's own
    (``tl_core.advice.sizes``); each adds the scenario's pretrained strategies at that size.
    A probe of another backbone (a joined one, ``SizeProbe.backbone``) adds feature extraction with it.
    ``turns``: feature extraction adds the turned views' passes where the mirror images' pays (``AugmentConfig.turns``).
    """
    per_class = classify_size(dataset).images_per_class
    rows = [
        _candidate(strategy, None, dataset, throughput, measurement.feature_extraction_accuracy, per_class, backbone, freeze_layers, cache_dir, time_budget_minutes, flip, measurement, turns=turns)
        for strategy in candidate_strategies(scenario)
    ]
    for probe in size_probes:
        other = probe.backbone if probe.backbone not in (None, backbone) else None
        if other:  # another backbone, at the advised backbone's own size: feature extraction with it
            speed = probe.images_per_second or throughput.images_per_second / 2  # unmeasured (a tiny sample): two networks, about twice the time
            measured = Throughput(throughput.device, other, probe.image_size, speed, throughput.measured)
            size = None if probe.image_size == throughput.image_size else probe.image_size
            gain = _gain_words(probe)
            rows.append(
                _candidate("feature_extraction", size, dataset, measured, probe.expected_accuracy(measurement), per_class, other, 0, cache_dir, time_budget_minutes, flip, measurement, joined=gain, turns=turns)
            )
            continue
        speed = probe.images_per_second or throughput.images_per_second * (throughput.image_size / probe.image_size) ** 2
        at_size = Throughput(throughput.device, throughput.backbone, probe.image_size, speed, throughput.measured)
        rows += [
            _candidate(strategy, probe.image_size, dataset, at_size, probe.expected_accuracy(measurement), per_class, backbone, freeze_layers, cache_dir, time_budget_minutes, flip, measurement, turns=turns)
            for strategy in candidate_strategies(scenario)
            if strategy != "from_scratch"  # its accuracy is not predictable at any size; the backbone's own size stands for it
        ]
    return _with_recommendation(rows)


def _candidate(
    strategy: str, image_size: int | None, dataset: Dataset, throughput, base: float, per_class: float, backbone: str, freeze_layers: int,
    cache_dir: str | None, time_budget_minutes: float, flip: str, measurement: Measurement, joined: str = "", turns: bool = False,
) -> Candidate:
    """One (strategy, size) weighed: ``base`` is feature extraction's expected accuracy at that size (``joined``: with ``backbone``, another one, and its probe's gain in words)."""
    sample_size = measurement.sample_size
    budget = time_budget_minutes * 60
    config = TrainConfig(
        data_dir=str(dataset.root), out_dir="", backbone=backbone, strategy=strategy, cache_dir=cache_dir, image_size=image_size,
        freeze_layers=freeze_layers if strategy == "fine_tune" else None, augmentation=AugmentConfig(flip=flip, turns=turns),
    ).validated()
    estimate = estimate_run(config, dataset, throughput)
    epochs = config.epochs
    if strategy in IMAGE_TRAINING_STRATEGIES and estimate.seconds > budget:
        per_epoch = estimate.parts[strategy] / config.epochs
        fitting = int((budget - (estimate.seconds - estimate.parts[strategy])) // per_epoch) if per_epoch > 0 else config.epochs
        if fitting >= 2:
            epochs = min(config.epochs, fitting)
            estimate = estimate_run(replace(config, epochs=epochs), dataset, throughput)
    at = f" at {image_size} px" if image_size else ""
    if joined:
        basis = (
            f"measured: a probe per network on the same {sample_size} of your images, their answers averaged as the model averages its two heads, "
            f"against {get_backbone(backbone).member_specs[0].display_name}'s probe alone on the same folds: {joined}, less its standard error, added to that network's expectation"
        )
        return Candidate(strategy, base, basis, estimate.seconds, epochs, estimate.seconds <= budget, image_size=image_size, backbone=backbone)
    if strategy == "feature_extraction" and image_size:
        expected = base
        basis = f"measured: the probe{at} on the same {sample_size} of your images, its difference from the probe at the network's size added to that size's expectation"
    elif strategy == "feature_extraction":
        expected, basis = base, f"measured: a cross-validated probe on {sample_size} of your images, {extension_words(sample_size, classify_size(dataset).train_images)}"
    elif strategy in WARMUP_STRATEGIES:  # fine-tuning from ImageNet weights
        expected = expected_fine_tune_accuracy(base, per_class, measurement.similarity_score, turns)
        turned = f", and it learns from your images turned too, which removed a further {TURNED_COPIES_CUT:.0%} of its errors on aerial scenes" if turns else ""
        basis = (
            f"feature extraction's measured accuracy{at} with {fine_tune_error_cut(per_class, measurement.similarity_score, turns):.0%} of its errors removed: "
            f"fine-tuning removes more where your images measure unlike ImageNet's (similarity {measurement.similarity_score:.2f}) "
            f"and where each class has more training images ({per_class:.0f}){turned}; not probed itself: a short fine-tuning probe on a few hundred images "
            "could not tell a gain of a point from its noise"
        )
    else:
        expected, basis = None, "not predictable from the probe; compare the strategies to measure it"
    return Candidate(strategy, expected, basis, estimate.seconds, epochs, estimate.seconds <= budget, image_size=image_size)


def extension_words(sample_size: int, train_images: int) -> str:
    """How far the probe's learning curve was extended: to the training images, and a warning where that is far beyond the probe's.

    The probe learns from four fifths of its sample in each fold. Extended ``FAR_EXTENSION`` times or more, the curve
    is a guess: two points a few hundred images apart say little about where it flattens (33,600 satellite tiles,
    extended 61 times: 1.6 points low with the floor of ``extrapolated_accuracy``; a power law without it was 9 high).
    """
    probe_images = max(1, sample_size * 4 // 5)
    words = f"its learning curve extended to your {train_images:,} training images"
    if train_images >= FAR_EXTENSION * probe_images:
        words += f" ({train_images / probe_images:.0f} times the probe's {probe_images:,}: this far out the estimate is a rough guess)"
    return words


def _gain_words(probe: SizeProbe) -> str:
    """``83.0% against 81.5% (+1.5 ± 1.2 points)``: a joined probe against its first network's probe."""
    if probe.baseline_accuracy is None:
        return f"{probe.probe_accuracy:.1%}"
    difference = 100 * (probe.probe_accuracy - probe.baseline_accuracy)
    return f"{probe.probe_accuracy:.1%} against {probe.baseline_accuracy:.1%} ({difference:+.1f} ± {100 * probe.difference_error:.1f} points)"


def best_candidate(rows: Sequence[Candidate]) -> Candidate:
    """The most accurate row that fits the budget, or a faster one at its size within ``WITHIN_HALF_A_POINT`` of it; the fastest where none is rated.

    Only a row at the same size takes the lead for speed: a smaller size must measure at least as
    well (on a 64 px copy of aerial, 128 px probed 0.4 points under 224 px and trained 5 points under).
    """
    rated = [row for row in rows if row.within_budget and row.expected_accuracy is not None]
    if rated:
        best = max(rated, key=lambda row: row.expected_accuracy)
        close = [row for row in rated if row.image_size == best.image_size and row.expected_accuracy >= best.expected_accuracy - WITHIN_HALF_A_POINT]
        return min(close, key=lambda row: row.seconds)
    return min(rows, key=lambda row: row.seconds if row.seconds is not None else math.inf)


def _with_recommendation(rows: list[Candidate]) -> list[Candidate]:
    chosen = best_candidate(rows)
    return [replace(row, recommended=row is chosen) for row in rows]


def candidate_reason(rows: list[Candidate], matrix_strategy: str, time_budget_minutes: float) -> str:
    chosen = next(row for row in rows if row.recommended)
    listed = "; ".join(
        f"{row.title}: {'~' + format(row.expected_accuracy, '.1%') if row.expected_accuracy is not None else 'accuracy unknown'}"
        f" in about {duration_text(row.seconds)}{'' if row.within_budget else ' (over the time budget)'}"
        for row in rows
    )
    rated = [row for row in rows if row.expected_accuracy is not None]
    in_budget = [row for row in rated if row.within_budget]
    best = max(in_budget or rated, key=lambda row: row.expected_accuracy)
    if chosen is not best and chosen.expected_accuracy is not None and best.within_budget:
        why = f"{chosen.title} is within half a point of the most accurate candidate in the budget and faster, so it is recommended; choose {best.title} for the last few tenths"
    elif chosen is best:
        why = f"{chosen.title} is expected to be the most accurate within your time budget of {time_budget_minutes:g} min"
    else:
        why = f"{chosen.title} fits your time budget of {time_budget_minutes:g} min"
    matrix = "" if chosen.strategy == matrix_strategy else f" (the matrix alone would say {STRATEGY_NAMES[matrix_strategy]}; the measurement has the last word)"
    return f"Expected on this device: {listed}. So {why}{matrix}."
