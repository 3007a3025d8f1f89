"""Measured advice: the data placed in the matrix by measurement, and the strategy the candidates' numbers favour.

The matrix (size x measured similarity, ``tl_core.advice.scenario``) is the
prior; the measurement (``tl_core.advice.similarity``) and the candidates'
expected accuracy and time on this device (``tl_core.advice.candidates``) have
the last word. The advice also suggests the freeze depth (where the measured
domain shift grows), the learning rate, whether mirror images are valid
examples, and the epochs that fit the time budget.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tl_core.advice.candidates import DEFAULT_TIME_BUDGET_MINUTES, WITHIN_HALF_A_POINT, Candidate, candidate_reason, plan_candidates
from tl_core.advice.framing import CropProbe, probe_centre_crop, worth_probing
from tl_core.advice.scenario import SCENARIOS, Recommendation, classify_size, recommend
from tl_core.advice.similarity import DEFAULT_SAMPLE_SIZE, HIGH_SIMILARITY_THRESHOLD, SHIFT_GROWTH_THRESHOLD, LayerShift, Measurement, measure_similarity, probe_at_size
from tl_core.advice.sizes import candidate_sizes, size_reason, typical_side
from tl_core.config import STRATEGY_NAMES, WARMUP_STRATEGIES
from tl_core.data.records import Dataset
from tl_core.data.scan import scan_dataset
from tl_core.models.backbones import BackboneSpec, get_backbone, joined_backbone
from tl_core.models.blocks import blocks_from_layer_names, freeze_wording

# The most of feature extraction's errors the joined pair of networks is taken to remove (it removed 12-15 % on the
# shared sets): where even this share stays under half a point, the pair is not probed.
JOINED_BEST_ERROR_CUT = 1 / 3


@dataclass(frozen=True)
class Advice:
    """The measured recommendation: scenario, strategy, freeze depth, learning rate, augmentation, reasons."""

    recommendation: Recommendation
    measurement: Measurement
    backbone: str
    freeze_layers: int
    freeze_block: str
    backbone_layers: int
    learning_rate: float
    augment: bool
    reasons: list[str]
    views: list[str] = field(default_factory=list)  # the two readings of scenario 2, when it applies
    candidates: list[Candidate] = field(default_factory=list)  # every strategy weighed, with expected accuracy and time
    matrix_strategy: str = ""  # what the matrix alone recommends
    flip: str = "horizontal"  # "none" when mirror images look like another class
    epochs: int | None = None  # epochs of the recommended strategy's main phase (fitted to the time budget)
    time_budget_minutes: float = 0.0
    # The depth measured for fine-tuning (where the domain shift grows), whatever strategy is recommended.
    fine_tune_freeze_layers: int | None = None
    fine_tune_freeze_block: str = ""
    fine_tune_freeze_reason: str = ""
    image_size: int | None = None  # the input size of the recommended candidate (None: the backbone's own)
    image_size_reason: str = ""  # why, in one sentence
    typical_side: int | None = None  # the images' median short side, in pixels
    chosen_backbone: str | None = None  # the recommended candidate's backbone, where it is not ``backbone`` (a joined one)
    turns: bool = False  # turned images show the same class (``Measurement.turns_keep_class``), and mirror images do too
    centre_crop: bool = False  # the images' middles read better than the whole images (``tl_core.advice.framing``)
    crop_probe: CropProbe | None = None  # that measurement (None where it was not made)

    @property
    def overrides_matrix(self) -> bool:
        """The measured recommendation differs from what the matrix alone says for the data's cell."""
        return bool(self.matrix_strategy) and self.matrix_strategy != self.recommendation.strategy

    def override_text(self) -> str:
        """Where the measurement overrode the matrix, the one sentence every place that shows the advice says; "" elsewhere."""
        if not self.overrides_matrix:
            return ""
        return (
            f"The matrix alone says {STRATEGY_NAMES[self.matrix_strategy]} for scenario {self.recommendation.scenario}; measured on your images "
            f"and timed on this device, {STRATEGY_NAMES[self.recommendation.strategy]} is the better use of the {self.time_budget_minutes:g} min budget."
        )

    def to_dict(self) -> dict:
        recommendation = self.recommendation
        return {
            "scenario": recommendation.scenario,
            "title": recommendation.title,
            "size": recommendation.size,
            "similarity": recommendation.similarity,
            "similarity_score": round(self.measurement.similarity_score, 4),
            "strategy": recommendation.strategy,
            "backbone": self.backbone,
            "freeze_layers": self.freeze_layers,
            "freeze_block": self.freeze_block,
            "backbone_layers": self.backbone_layers,
            "learning_rate": self.learning_rate,
            "augment": self.augment,
            "reasons": list(self.reasons),
            "views": list(self.views),
            "matrix_strategy": self.matrix_strategy,
            "flip": self.flip,
            "epochs": self.epochs,
            "time_budget_minutes": self.time_budget_minutes,
            "fine_tune_freeze_layers": self.fine_tune_freeze_layers,
            "fine_tune_freeze_block": self.fine_tune_freeze_block,
            "image_size": self.image_size,
            "image_size_reason": self.image_size_reason,
            "typical_side": self.typical_side,
            "chosen_backbone": self.chosen_backbone,
            "turns": self.turns,
            "centre_crop": self.centre_crop,
            "crop_probe": asdict(self.crop_probe) if self.crop_probe else None,
            "candidates": [asdict(candidate) for candidate in self.candidates],
            "components": {key: round(value, 4) for key, value in self.measurement.components().items()},
            "measurement": asdict(self.measurement),
        }


def freeze_depth_from_shift(profile: list[LayerShift], layer_names: list[str], spec: BackboneSpec, size: str) -> tuple[int, str, str]:
    """Where to stop freezing: the start of the block in which the data first moves the statistics a lot.

    The measurement can only unfreeze more than the usual depth (the last third of
    the blocks retrain, ``default_freeze_layers``): where nothing moves, or where the
    shift grows only late, the usual depth stays, which is what fine-tuned well on
    photos in the benchmarks. On small data at least the first third of the blocks
    stays frozen (a few hundred images cannot retrain millions of weights).

    Returns:
        ``(layers to freeze, name of the first trainable block, the reason in words)``.
    """
    blocks = blocks_from_layer_names(spec, layer_names)
    usual = min(len(blocks) - 1, round(len(blocks) * 2 / 3))  # the block default_freeze_layers starts training at
    moved = next((entry for entry in profile if entry.shift > SHIFT_GROWTH_THRESHOLD), None)
    if moved is None:
        target = usual
        why = f"no layer's shift exceeds {SHIFT_GROWTH_THRESHOLD}: the features fit your images up to the top, so the usual last third of the blocks retrain"
    else:
        target = next(number for number, block in enumerate(blocks) if block.start <= moved.index < block.end)
        why = f"the shift first exceeds {SHIFT_GROWTH_THRESHOLD} at layer '{moved.name}' ({moved.shift:.2f}), in block '{blocks[target].name}'"
        if target > usual:
            target = usual
            why += f"; the last third of the blocks retrain at least, from '{blocks[target].name}'"
    if size == "small" and target < len(blocks) // 3:
        target = len(blocks) // 3
        why += f"; on small data the first third of the blocks stays frozen anyway, so training starts at '{blocks[target].name}'"
    target = max(1, min(target, len(blocks) - 1))
    return blocks[target].start, blocks[target].name, why


def advise(
    data_dir: str | Path | Dataset,
    backbone: str = "mobilenet_v2",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    cache_dir: str | None = None,
    seed: int = 0,
    time_budget_minutes: float = DEFAULT_TIME_BUDGET_MINUTES,
) -> Advice:
    """Measures the data and recommends scenario, strategy, freeze depth, learning rate and augmentation.

    The matrix (size x measured similarity) gives the prior; the strategy comes from the
    candidates' expected accuracy and estimated time on this device (``plan_candidates``).

    Args:
        data_dir: A dataset folder, or an already scanned dataset.
        backbone: The backbone to advise for.
        sample_size: Images measured at most.
        cache_dir: The cache folder shared with training.
        seed: Seed of the split, sample and probe.
        time_budget_minutes: How long a run may take; slower candidates are not recommended.
    """
    from tl_core.device import detect_device
    from tl_core.training.estimate import Throughput, remember_throughput

    dataset = data_dir if isinstance(data_dir, Dataset) else scan_dataset(data_dir, seed=seed)
    spec = get_backbone(backbone).member_specs[0]  # a joined backbone is measured with its first network and weighed beside it
    backbone = spec.name
    measurement, layer_names = measure_similarity(dataset, backbone, sample_size, cache_dir, seed)
    matrix = recommend(dataset, measurement.similarity, similarity_source="measured", similarity_score=measurement.similarity_score)
    size = classify_size(dataset).size
    measured_freeze, measured_block, freeze_reason = freeze_depth_from_shift(measurement.shift_profile, layer_names, spec, size)
    flip = "horizontal" if measurement.mirror_images_help else "none"
    device = detect_device()
    if measurement.forward_images_per_second:
        throughput = Throughput(device.key, spec.name, spec.default_size, measurement.forward_images_per_second, time.time())
        remember_throughput(throughput, cache_dir)
    else:
        from tl_core.training.estimate import forward_throughput

        throughput = forward_throughput(spec.name, spec.default_size, device.key, cache_dir)
    typical, sizes, size_probes = _probes_at_other_sizes(dataset, spec, measurement, sample_size, cache_dir, seed, device.key)
    joined_probes, joined_note = _probe_joined(dataset, spec, measurement, sample_size, cache_dir, seed, device.key)
    size_probes += joined_probes
    crop = probe_centre_crop(dataset, spec.name, sample_size, cache_dir, seed, len(dataset.records)) if worth_probing(measurement.feature_extraction_accuracy) else None
    planned = _with_middles(measurement, crop)
    _remember_expectations(dataset, spec, planned, size_probes, cache_dir)
    turns = measurement.turns_keep_class and flip != "none"
    plan = functools.partial(plan_candidates, dataset, planned, matrix.scenario, spec.name, measured_freeze, throughput, cache_dir, time_budget_minutes, flip, size_probes)
    candidates = plan(turns)
    turns_over_budget = turns and not any(row.within_budget for row in candidates if row.strategy == "feature_extraction" and row.backbone is None)
    if turns_over_budget:  # the turned views' six more passes would price feature extraction out of the budget: without them
        turns, candidates = False, plan(False)
    candidates = _credited_middles(candidates, crop)
    chosen = next(row for row in candidates if row.recommended)
    size_why = size_reason(chosen, candidates, sizes, typical, spec.default_size)
    strategy = chosen.strategy
    freeze, block = measured_freeze, measured_block
    if strategy == "feature_extraction":
        freeze, block = len(layer_names), "none (all frozen)"
    elif strategy != "fine_tune":
        freeze, block = 0, "all"
    learning_rate = 1e-4 if strategy in WARMUP_STRATEGIES else 1e-3  # the backbone layers train at a tenth of the head's rate
    augment = True
    blocks = blocks_from_layer_names(spec, layer_names)
    reasons = _reasons(measurement, matrix, strategy, freeze_wording(blocks, freeze), learning_rate, size, freeze_reason)
    reasons.insert(len(reasons) - 2, candidate_reason(candidates, matrix.strategy, time_budget_minutes) + joined_note)
    if len(sizes) > 1:
        reasons.insert(len(reasons) - 2, size_why)
    reasons += _view_reasons(measurement, flip, turns, turns_over_budget, time_budget_minutes, crop)
    views = _scenario_two_views(measurement, freeze_wording(blocks, measured_freeze)) if matrix.scenario == 2 else []
    recommendation = replace(matrix, strategy=strategy, reasons=reasons)
    return Advice(
        recommendation, measurement, spec.name, freeze, block, len(layer_names), learning_rate, augment, reasons, views,
        candidates=candidates, matrix_strategy=matrix.strategy, flip=flip, epochs=chosen.epochs, time_budget_minutes=time_budget_minutes,
        fine_tune_freeze_layers=measured_freeze, fine_tune_freeze_block=measured_block, fine_tune_freeze_reason=freeze_reason,
        image_size=chosen.image_size, image_size_reason=size_why, typical_side=typical, chosen_backbone=chosen.backbone, turns=turns,
        centre_crop=bool(crop and crop.pays), crop_probe=crop,
    )


def _with_middles(measurement: Measurement, crop: CropProbe | None) -> Measurement:
    """The measurement the candidates are weighed on: feature extraction's expectation moved by the middles' credited gain, where they pay.

    The run then reads every image's middle, whichever strategy and size it takes, so every candidate starts from it.
    """
    if crop is None or not crop.pays:
        return measurement
    return replace(measurement, feature_extraction_estimate=min(1.0, measurement.feature_extraction_accuracy + crop.credited_difference))


def _credited_middles(candidates: list[Candidate], crop: CropProbe | None) -> list[Candidate]:
    """Each expected candidate's basis, naming the middles' gain it starts from (``_with_middles``), where they pay."""
    if crop is None or not crop.pays:
        return candidates
    words = f"; it includes the {100 * crop.credited_difference:.1f} points that reading the middle of each image measured beyond its noise"
    return [replace(row, accuracy_basis=row.accuracy_basis + words) if row.expected_accuracy is not None else row for row in candidates]


def _view_reasons(measurement: Measurement, flip: str, turns: bool, turns_over_budget: bool, time_budget_minutes: float, crop: CropProbe | None) -> list[str]:
    """What the measurement says of mirror images, turned images and the images' middles, in words."""
    reasons = []
    if flip == "none":
        reasons.append(_no_flips_reason(measurement))
    if turns or turns_over_budget:
        reasons.append(_turns_reason(measurement, turns, time_budget_minutes))
    if crop is not None:
        reasons.append(_crop_reason(crop))
    return reasons


def _crop_reason(crop: CropProbe) -> str:
    """Why the run reads the images' middles, or the whole images."""
    measured = f"The middle of each image (80 % of each side) against the whole image, on the same {crop.images} images and folds: {crop.words()}. "
    if crop.pays:
        return measured + (
            "The subject sits in the middle of your photos, so the training reads each image's middle, and the saved model takes images "
            "a quarter larger than the network's input and keeps their middle (same time)."
        )
    return measured + "The middle does not read better by more than the probe's noise (the edges matter, as in scenes and surfaces), so the whole images are used."


def _scenario_two_views(measurement: Measurement, measured_freeze_text: str) -> list[str]:
    """The two readings of small data unlike ImageNet (the articles disagree there): measurement decides between them."""
    return [
        f"Keep {measured_freeze_text} at a low learning rate: the frozen layers end where your images start to move the network's statistics.",
        f"Transfer may barely help: the pretrained features beat random ones by only {measurement.probe_accuracy - measurement.random_probe_accuracy:+.0%} "
        "in the probe. A model trained from scratch may do as well; compare the strategies side by side before deciding.",
    ]


def _no_flips_reason(measurement: Measurement) -> str:
    """Why left-right flips are off: the probe reads mirror images as another class."""
    return (
        f"Mirror images look like another class here (a probe trained on your images gets {measurement.mirror_transfer_accuracy:.1%} of held-out "
        f"mirror images right, against {measurement.probe_accuracy:.1%} of the images themselves), as with text or digits: "
        "no left-right flips, in training or at test time."
    )


def _turns_reason(measurement: Measurement, turns: bool, time_budget_minutes: float) -> str:
    """Why the turned views are on (``turns``), or off although turned images show the same class (over the time budget)."""
    measured = (
        f"Turned images show the same class here: a probe trained on your images upright gets {measurement.turned_transfer_accuracy:.1%} of held-out images "
        f"turned a quarter turn right, against {measurement.probe_accuracy:.1%} upright, as with aerial or microscope images, where up is anywhere. "
    )
    if turns:
        return measured + "The training therefore learns from each image's eight turned and mirrored views, where they pay, and averages its answers over them."
    return measured + (
        f"Their six more passes of the backbone would take feature extraction over your time budget of {time_budget_minutes:g} min, so they stay off; "
        "the Setup page's box turns them on."
    )


def _remember_expectations(dataset: Dataset, spec: BackboneSpec, measurement: Measurement, size_probes, cache_dir: str | None) -> None:
    """Files feature extraction's expected accuracy at each size measured: estimates (here and later, on the Setup page or
    the command line) foresee from it whether a run will go on to the mirror images."""
    from tl_core.training.estimate import remember_expected_accuracy

    remember_expected_accuracy(dataset, spec.name, spec.default_size, measurement.feature_extraction_accuracy, cache_dir)
    for probe in size_probes:
        remember_expected_accuracy(dataset, probe.backbone or spec.name, probe.image_size, probe.expected_accuracy(measurement), cache_dir)


def _probe_joined(dataset: Dataset, spec: BackboneSpec, measurement: Measurement, sample_size: int, cache_dir: str | None, seed: int, device: str):
    """The probe of the joined backbone that starts with ``spec``'s network, where there is one and its weights are here, and a note in words ("" when none).

    Two networks trained apart make different mistakes: on cat breeds and aerial scenes the pair made 12-15 % fewer
    errors than MobileNetV2 alone, on ants and bees more (docs/benchmarks.md). The probe averages a probe per network,
    as the pair's head averages a head per network, compares that with MobileNetV2's probe on the same images and
    credits only the gain beyond its standard error (``SizeProbe.credited_difference``).
    Where feature extraction leaves so few errors that a third fewer would not reach ``WITHIN_HALF_A_POINT``, the
    pair cannot change the advice, and its probe (a second network over the sample) is skipped; the note says so.
    """
    from tl_core.models.weights import missing_weights, needed_weights
    from tl_core.training.estimate import Throughput, remember_throughput

    joined = joined_backbone(spec)
    if joined is None or missing_weights(needed_weights(joined, with_classifier=False)):
        return [], ""
    expected = measurement.feature_extraction_accuracy
    if (1.0 - expected) * JOINED_BEST_ERROR_CUT <= WITHIN_HALF_A_POINT:
        return [], (
            f" Feature extraction with {joined.display_name} was not weighed: feature extraction is expected to get {expected:.1%} right, "
            "so even a third fewer errors would add less than half a point."
        )
    # The runtime is chosen for the run that may follow (its conversion is then cached): two networks cost twice the forward passes.
    probe = probe_at_size(dataset, joined.name, spec.default_size, measurement.mirror_images_help, sample_size, cache_dir, seed, images_to_come=len(dataset.records))
    if probe.images_per_second:
        remember_throughput(Throughput(device, joined.name, spec.default_size, probe.images_per_second, time.time()), cache_dir)
    return [probe], ""


def _probes_at_other_sizes(dataset: Dataset, spec: BackboneSpec, measurement: Measurement, sample_size: int, cache_dir: str | None, seed: int, device: str):
    """The images' typical side, the input sizes weighed for them, and the probe at each size but the backbone's own (measured already)."""
    from tl_core.training.estimate import Throughput, remember_throughput

    typical = typical_side(dataset)
    sizes = candidate_sizes(typical, spec)
    probes = []
    for size in sizes:
        if size != spec.default_size:
            probe = probe_at_size(dataset, spec.name, size, measurement.mirror_images_help, sample_size, cache_dir, seed)
            if probe.images_per_second:  # later estimates at this size use it
                remember_throughput(Throughput(device, spec.name, size, probe.images_per_second, time.time()), cache_dir)
            probes.append(probe)
    return typical, sizes, probes


def _reasons(measurement: Measurement, recommendation: Recommendation, strategy: str, freeze_text: str, learning_rate: float, size: str, freeze_reason: str) -> list[str]:
    verdict = recommendation.size_verdict
    reasons = [verdict.reason if verdict else f"The data counts as {size}."]
    probe = (
        f"Probe: pretrained features separate your classes with {measurement.probe_accuracy:.0%} cross-validated accuracy, "
        f"random-weight features with {measurement.random_probe_accuracy:.0%} (chance {measurement.chance_accuracy:.0%}): "
        f"similarity {measurement.probe_similarity:.2f}."
    )
    shift = (
        f"Domain shift: your images move the backbone's BatchNorm statistics by {measurement.mean_shift:.2f} on average "
        f"(ImageNet-like photos: about 0.1): similarity {measurement.shift_similarity:.2f}."
    )
    reasons += [probe, shift]
    if measurement.imagenet_confidence is not None:
        reasons.append(
            f"An ImageNet classifier is {measurement.imagenet_confidence:.0%} sure of its top class on average "
            f"(photos of ImageNet-like things: 60% or more): similarity {measurement.confidence_similarity:.2f}."
        )
    reasons.append(
        f"Combined similarity {measurement.similarity_score:.2f} ({'at least' if measurement.similarity == 'high' else 'below'} "
        f"{HIGH_SIMILARITY_THRESHOLD}), so similarity is {measurement.similarity}: scenario {recommendation.scenario} "
        f"({SCENARIOS[recommendation.scenario]['title']}), where the matrix suggests {STRATEGY_NAMES[recommendation.strategy]}."
    )
    if strategy == "fine_tune":
        reasons.append(f"Freeze depth: {freeze_text}. Why: {freeze_reason}.")
    reasons.append(f"Learning rate {learning_rate:g}" + (" (low: pretrained layers are being adjusted, not relearned)." if learning_rate < 1e-3 else "."))
    if strategy != "feature_extraction":
        reasons.append("Augment the training images (flips, rotation, zoom, shift, contrast): random changes are the cheapest defence against overfitting.")
    elif measurement.mirror_images_help:
        reasons.append(
            "Augment through mirror images where they pay: once the first model is saved, if its validation errors leave at least half a point to win, "
            "the mirror images' features are computed and cached, the head trains on both and its answers are averaged over both."
        )
    return reasons
