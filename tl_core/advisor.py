"""Measured advice: how similar is the user's data to ImageNet, and what should train?

Three measurements on a sample of the user's images (a few hundred at most),
each turned into a similarity in [0, 1]:

1. **Probe gain**: a cross-validated logistic regression on the pretrained
   backbone's pooled features, against the same probe on features of the same
   architecture with random weights. Pretrained features that separate the
   classes much better than random ones mean the pretraining transfers.
2. **Domain shift**: how far the images move the statistics of the inputs of
   every BatchNormalization layer away from the ImageNet statistics stored in
   it, layer by layer. Photos like ImageNet's barely move them; X-rays or
   handwriting move them a lot. Where the shift grows with depth is a natural
   place to stop freezing.
3. **ImageNet confidence**: where an ImageNet classifier top is available
   (MobileNet 0.75 with its 1000-class top), how confidently it assigns the
   images to ImageNet classes.

The components are averaged (those that could be measured) into
``similarity_score``; 0.5 and above is "high". The pass that measures the
domain shift also yields the bottleneck features; when the sample is the
whole dataset they go into the same feature cache training reads, so feature
extraction does not run twice.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tl_core.backbones import BackboneSpec, blocks_from_layer_names, get_backbone
from tl_core.cache import DEFAULT_MEMORY_BUDGET_BYTES, FeatureCache, decode_images, feature_cache_key, mirrored_feature_cache_key
from tl_core.config import STRATEGY_NAMES
from tl_core.data import Dataset, scan_dataset
from tl_core.scenario import SCENARIOS, Recommendation, candidate_strategies, classify_size, recommend

HIGH_SIMILARITY_THRESHOLD = 0.5
# A mean BatchNorm shift of this size maps to similarity exp(-1) ~ 0.37. Calibrated on real data here:
# ants/bees photos shift about 0.12 (similarity 0.70), upscaled handwritten digits about 0.72 (0.13).
SHIFT_SCALE = 0.35
# Layers whose shift exceeds this are "moved" by the data: freezing should stop before them.
SHIFT_GROWTH_THRESHOLD = 0.35
# Mean top-1 probability of the ImageNet classifier that maps to similarity 0 and 1 (linear in between).
CONFIDENCE_FLOOR, CONFIDENCE_CEILING = 0.15, 0.65
DEFAULT_SAMPLE_SIZE = 500
DEFAULT_TIME_BUDGET_MINUTES = 10.0
# Share of feature extraction's errors fine-tuning removes, from the benchmarks in the README (with at least
# FULL_CUT_IMAGES_PER_CLASS training images per class; proportionally less below).
FINE_TUNE_ERROR_CUT = 0.35
FULL_CUT_IMAGES_PER_CLASS = 300
# A candidate this much less accurate than the best, but faster, is recommended instead.
WITHIN_A_POINT = 0.01
# Mirror images count as harmless when the probe trained with them loses at most this much accuracy.
MIRROR_TOLERANCE = 0.005
CLASSIFIER_WEIGHTS_FILE = "mobilenet_7_5_224_tf.h5"
COMPONENT_NAMES = {"probe": "probe gain", "shift": "domain shift", "confidence": "ImageNet confidence"}


@dataclass(frozen=True)
class LayerShift:
    """How far the data moves one BatchNormalization layer's input statistics."""

    index: int  # the layer's index in the backbone
    name: str
    shift: float  # (mean shift + log-variance shift) / 2, averaged over channels


@dataclass(frozen=True)
class Measurement:
    """The similarity measurements and how they combine.

    Attributes:
        sample_size: Images the probes learned from (held-out test images are never among them).
        chance_accuracy: Accuracy of always answering the largest class.
        probe_accuracy: Cross-validated accuracy of the probe on pretrained features.
        random_probe_accuracy: The same probe on features of randomly initialised weights.
        probe_similarity: ``(probe - random) / (1 - random)``, clipped to [0, 1].
        shift_profile: One entry per BatchNormalization layer, in depth order.
        mean_shift: Mean of the profile.
        shift_similarity: ``exp(-mean_shift / SHIFT_SCALE)``.
        imagenet_confidence: Mean top-1 probability of the ImageNet classifier (None when unavailable).
        confidence_similarity: The confidence mapped to [0, 1] (None when unavailable).
        similarity_score: Mean of the available similarities.
        similarity: ``"high"`` or ``"low"``.
        seconds: Time the measurement took.
        notes: What could not be measured and why.
        mirror_probe_accuracy: The probe trained on the images and their mirror images, answering
            for both (what feature extraction with flips does): its expected accuracy.
        forward_images_per_second: The frozen backbone's forward pass on this device, at its own size.
        feature_extraction_estimate: Feature extraction's expected accuracy with the whole training
            split: the probe's accuracy on half its images and on all of them, extended along
            ``error = a * n ** -b`` to the training images (``extrapolated_accuracy``).
    """

    sample_size: int
    chance_accuracy: float
    probe_accuracy: float
    random_probe_accuracy: float
    probe_similarity: float
    shift_profile: list[LayerShift]
    mean_shift: float
    shift_similarity: float
    imagenet_confidence: float | None
    confidence_similarity: float | None
    similarity_score: float
    similarity: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    mirror_probe_accuracy: float | None = None
    forward_images_per_second: float | None = None
    feature_extraction_estimate: float | None = None

    @property
    def mirror_images_help(self) -> bool:
        """Whether mirror images are examples of the same class (photos: yes; text and digits: no), as the probe finds."""
        return self.mirror_probe_accuracy is None or self.mirror_probe_accuracy >= self.probe_accuracy - MIRROR_TOLERANCE

    @property
    def probe_for_feature_extraction(self) -> float:
        """The probe that does what feature extraction will do: with mirror images when they help."""
        return max(self.probe_accuracy, self.mirror_probe_accuracy or 0.0) if self.mirror_images_help else self.probe_accuracy

    @property
    def feature_extraction_accuracy(self) -> float:
        """What feature extraction is expected to reach on the whole training split (the probe's learning curve, extended)."""
        return self.feature_extraction_estimate if self.feature_extraction_estimate is not None else self.probe_for_feature_extraction

    def components(self) -> dict[str, float]:
        """The similarity of each measured component, by key (probe, shift, confidence)."""
        values = {"probe": self.probe_similarity, "shift": self.shift_similarity, "confidence": self.confidence_similarity}
        return {key: value for key, value in values.items() if value is not None}


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
            "candidates": [asdict(candidate) for candidate in self.candidates],
            "components": {key: round(value, 4) for key, value in self.measurement.components().items()},
            "measurement": asdict(self.measurement),
        }


# --------------------------------------------------------------------------- combining (pure, unit-tested)


def probe_similarity(probe_accuracy: float, random_probe_accuracy: float) -> float:
    """The share of the headroom above random-weight features that pretrained features win."""
    headroom = 1.0 - random_probe_accuracy
    if headroom <= 1e-9:
        return 0.0  # random features already separate the classes perfectly: pretraining adds nothing measurable
    return float(min(max((probe_accuracy - random_probe_accuracy) / headroom, 0.0), 1.0))


def shift_similarity(mean_shift: float) -> float:
    return float(math.exp(-max(mean_shift, 0.0) / SHIFT_SCALE))


def confidence_similarity(confidence: float | None) -> float | None:
    if confidence is None:
        return None
    return float(min(max((confidence - CONFIDENCE_FLOOR) / (CONFIDENCE_CEILING - CONFIDENCE_FLOOR), 0.0), 1.0))


def combine(components: dict[str, float]) -> tuple[float, str]:
    """The mean of the measured components and its verdict (``high`` at 0.5 and above)."""
    if not components:
        raise ValueError("No similarity component was measured; at least one is needed.")
    score = float(sum(components.values()) / len(components))
    return score, "high" if score >= HIGH_SIMILARITY_THRESHOLD else "low"


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


# --------------------------------------------------------------------------- measuring


def measure_similarity(
    dataset: Dataset,
    backbone: str = "mobilenet_v2",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    cache_dir: str | None = None,
    seed: int = 0,
) -> tuple[Measurement, list[str]]:
    """Measures how similar a dataset is to ImageNet (see the module docstring).

    Args:
        dataset: The scanned dataset.
        backbone: The backbone whose pretrained weights are judged.
        sample_size: Images measured at most (stratified, seeded sample).
        cache_dir: The cache folder shared with training.
        seed: Seed of the sample and of the probe's folds.

    Returns:
        The measurement and the backbone's layer names (for the freeze depth).
    """

    from tl_core.models import build_backbone, weights_identity

    started = time.perf_counter()
    spec = get_backbone(backbone)
    size = spec.default_size
    whole = len(dataset.records) <= sample_size
    records = dataset.records if whole else _stratified_sample(dataset, sample_size, seed)
    labels = np.array([record.label for record in records])
    decoded = decode_images(records, size, cache_dir=cache_dir, memory_budget_bytes=DEFAULT_MEMORY_BUDGET_BYTES)
    failed = {item.path for item in decoded.failed}
    keep = np.array([record.path not in failed for record in records])
    pixels, labels = decoded.pixels[keep] if not keep.all() else decoded.pixels, labels[keep]
    # The probes learn from labels: they never see the held-out test images, which must judge the final model alone.
    labelled = np.array([record.split != "test" for record in records])[keep]
    if np.bincount(labels[labelled], minlength=dataset.num_classes).min() < 2:
        labelled = np.ones(len(labels), dtype=bool)  # too few images outside the test split to probe: use them all
    notes: list[str] = []

    pretrained = build_backbone(spec, "imagenet")
    features, shift_profile = _features_and_shift(pretrained, spec, pixels)
    speeds: list[float] = []
    mirrored_features, _ = _features_and_shift(pretrained, spec, np.ascontiguousarray(pixels[:, :, ::-1]), with_shift=False, timings=speeds)
    if whole and keep.all():
        # The same keys training uses: a later feature-extraction run at this size reads these features.
        key = feature_cache_key(spec, weights_identity(spec, "imagenet"), size, decoded.key)
        FeatureCache(cache_dir).save(key, features)
        FeatureCache(cache_dir).save(mirrored_feature_cache_key(key), mirrored_features)
    random_features, _ = _features_and_shift(build_backbone(spec, "none"), spec, pixels, with_shift=False)
    probe = _probe_accuracy(features[labelled], labels[labelled], seed)
    random_probe = _probe_accuracy(random_features[labelled], labels[labelled], seed)
    with_mirror = _probe_accuracy(features[labelled], labels[labelled], seed, mirrored=mirrored_features[labelled])
    # The probe learns from a few hundred images; feature extraction will have the whole training split.
    # Half the probe's images give a second point of its learning curve, and the curve is extended.
    mirrors_help = with_mirror >= probe - MIRROR_TOLERANCE
    half = _stratified_half(labels[labelled], seed)
    half_probe = _probe_accuracy(features[labelled][half], labels[labelled][half], seed, mirrored=mirrored_features[labelled][half] if mirrors_help else None)
    folds = int(min(5, np.bincount(labels[labelled]).min()))
    probe_images = int(labelled.sum()) * (folds - 1) // max(folds, 1)
    estimate = extrapolated_accuracy(half_probe, max(probe, with_mirror) if mirrors_help else probe, probe_images // 2, probe_images, len(dataset.split("train")))
    confidence = _imagenet_confidence(pixels, notes)

    mean_shift = float(np.mean([entry.shift for entry in shift_profile])) if shift_profile else 0.0
    components = {"probe": probe_similarity(probe, random_probe), "shift": shift_similarity(mean_shift)}
    if confidence is not None:
        components["confidence"] = confidence_similarity(confidence)
    score, verdict = combine(components)
    measurement = Measurement(
        sample_size=int(labelled.sum()),
        chance_accuracy=float(np.bincount(labels[labelled]).max() / labelled.sum()),
        probe_accuracy=probe,
        random_probe_accuracy=random_probe,
        probe_similarity=components["probe"],
        shift_profile=shift_profile,
        mean_shift=mean_shift,
        shift_similarity=components["shift"],
        imagenet_confidence=confidence,
        confidence_similarity=components.get("confidence"),
        similarity_score=score,
        similarity=verdict,
        seconds=round(time.perf_counter() - started, 2),
        notes=notes,
        mirror_probe_accuracy=with_mirror,
        forward_images_per_second=speeds[0] if speeds else None,
        feature_extraction_estimate=estimate,
    )
    return measurement, [layer.name for layer in pretrained.layers]


def extrapolated_accuracy(accuracy_small: float, accuracy_large: float, images_small: int, images_large: int, images_target: int) -> float:
    """Accuracy with ``images_target`` training images, from two points of a learning curve.

    The error is taken to fall as a power of the training images, ``error = a * n ** -b``,
    through the two measured points; ``b`` is at most 1 (error halving when the images
    double), and the extended error is never below half the measured one, so a noisy
    pair of points cannot promise much. A flat or rising curve is not extended.
    """
    error_small, error_large = 1.0 - accuracy_small, 1.0 - accuracy_large
    if images_target <= images_large or images_small <= 0 or images_large <= images_small or error_large <= 0 or error_small <= error_large:
        return accuracy_large
    exponent = min(1.0, math.log(error_small / error_large) / math.log(images_large / images_small))
    error = max(error_large * (images_large / images_target) ** exponent, error_large / 2)
    return 1.0 - error


def _stratified_half(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a seeded half of each class."""
    rng = np.random.default_rng(seed + 1)
    chosen = [np.sort(rng.permutation(np.flatnonzero(labels == label))[: max(2, int(np.sum(labels == label)) // 2)]) for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def _stratified_sample(dataset: Dataset, sample_size: int, seed: int) -> list:
    """Up to ``sample_size`` images, as many of each class, drawn from outside the test split where the class has enough there."""
    rng = np.random.default_rng(seed)
    per_class = max(2, sample_size // dataset.num_classes)
    chosen = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.class_name == name]
        outside_test = [record for record in members if record.split != "test"]
        members = outside_test if len(outside_test) >= 2 else members
        chosen.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    return sorted(chosen, key=lambda record: record.relative_path)


def _features_and_shift(backbone, spec: BackboneSpec, pixels: np.ndarray, with_shift: bool = True, batch_size: int = 32, timings: list[float] | None = None):
    """Pooled features and, per BatchNormalization layer, the shift of its input statistics; one pass.

    With ``timings``, the pass appends its images per second (full batches after the first) when ``with_shift`` is False:
    then it is the plain forward pass a run makes.
    """
    import keras
    import tensorflow as tf

    from tl_core.models import preprocessing_layers

    batchnorms = [(index, layer) for index, layer in enumerate(backbone.layers) if isinstance(layer, keras.layers.BatchNormalization)] if with_shift else []
    taps = keras.Model(backbone.inputs, [layer.input for _, layer in batchnorms] + [backbone.output])
    preprocess = preprocessing_layers(spec.preprocessing)

    @tf.function(input_signature=[tf.TensorSpec([None, *pixels.shape[1:]], tf.uint8)])
    def run(batch):
        images = tf.cast(batch, tf.float32)
        for layer in preprocess:
            images = layer(images)
        outputs = taps(images, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        moments = [(tf.reduce_sum(tf.reduce_mean(output, axis=[1, 2]), axis=0), tf.reduce_sum(tf.reduce_mean(tf.square(output), axis=[1, 2]), axis=0)) for output in outputs[:-1]]
        return tf.reduce_mean(outputs[-1], axis=[1, 2]), moments

    features, sums = [], None
    timed_images, timed_seconds = 0, 0.0
    for start in range(0, len(pixels), batch_size):
        started = time.perf_counter()
        pooled, moments = run(pixels[start : start + batch_size])
        features.append(pooled.numpy())
        moments = [(first.numpy(), second.numpy()) for first, second in moments]
        if start and start + batch_size <= len(pixels):  # full batches after the first, which traces the function
            timed_images, timed_seconds = timed_images + batch_size, timed_seconds + time.perf_counter() - started
        sums = moments if sums is None else [(a + c, b + d) for (a, b), (c, d) in zip(sums, moments, strict=True)]
    if timings is not None and timed_images:
        timings.append(timed_images / timed_seconds)
    profile = []
    for (index, layer), (first, second) in zip(batchnorms, sums or [], strict=False):
        mean = first / len(pixels)
        variance = np.maximum(second / len(pixels) - mean**2, 0.0)
        stored_mean = keras.ops.convert_to_numpy(layer.moving_mean)
        stored_variance = keras.ops.convert_to_numpy(layer.moving_variance)
        mean_shift = np.abs(mean - stored_mean) / np.sqrt(stored_variance + 1e-3)
        variance_shift = np.abs(np.log((variance + 1e-3) / (stored_variance + 1e-3)))
        profile.append(LayerShift(index, layer.name, float((np.median(mean_shift) + np.median(variance_shift)) / 2)))
    return np.concatenate(features).astype(np.float32), profile


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int, mirrored: np.ndarray | None = None) -> float:
    """Cross-validated accuracy of a standardised logistic regression (up to 5 stratified folds).

    With ``mirrored`` (the features of the same images mirrored left to right), the probe
    does what feature extraction does with flips: it trains on both and averages its
    answers for an image and its mirror image.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tl_core.label_issues import out_of_fold_probabilities

    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        return float(np.bincount(labels).max() / len(labels))
    probabilities = out_of_fold_probabilities(
        features, labels, int(labels.max()) + 1, folds, seed, lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)), mirrored=mirrored
    )
    return float((probabilities.argmax(axis=1) == labels).mean())


def _imagenet_confidence(pixels: np.ndarray, notes: list[str]) -> float | None:
    """Mean top-1 probability of MobileNet 0.75's ImageNet classifier, or None when its weights are missing."""
    import keras

    from tl_core.models import keras_models_folder

    if not (keras_models_folder() / CLASSIFIER_WEIGHTS_FILE).exists():
        notes.append(
            f"ImageNet confidence not measured: the classifier weights '{CLASSIFIER_WEIGHTS_FILE}' are not in '{keras_models_folder()}'. "
            "The score uses the other two measurements."
        )
        return None
    classifier = keras.applications.MobileNet(alpha=0.75, weights="imagenet", include_top=True)
    images = pixels if pixels.shape[1] == 224 else keras.ops.convert_to_numpy(keras.ops.image.resize(pixels.astype(np.float32), (224, 224)))
    probabilities = np.concatenate(
        [classifier.predict_on_batch(np.asarray(images[start : start + 64], dtype=np.float32) / 127.5 - 1.0) for start in range(0, len(images), 64)]
    )
    return float(probabilities.max(axis=1).mean())


# --------------------------------------------------------------------------- candidates: expected accuracy and time


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

    The share (``FINE_TUNE_ERROR_CUT``) comes from the benchmark table in the README; with
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
    from tl_core.config import AugmentConfig, TrainConfig
    from tl_core.estimate import estimate_run

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


def _candidate_reason(rows: list[Candidate], matrix_strategy: str, time_budget_minutes: float) -> str:
    from tl_core.estimate import duration_text

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


# --------------------------------------------------------------------------- advice


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
    from tl_core.estimate import Throughput, remember_throughput

    dataset = data_dir if isinstance(data_dir, Dataset) else scan_dataset(data_dir, seed=seed)
    spec = get_backbone(backbone)
    measurement, layer_names = measure_similarity(dataset, backbone, sample_size, cache_dir, seed)
    matrix = recommend(dataset, measurement.similarity, similarity_source="measured", similarity_score=measurement.similarity_score)
    size = classify_size(dataset).size
    measured_freeze, measured_block, freeze_reason = freeze_depth_from_shift(measurement.shift_profile, layer_names, spec, size)
    flip = "horizontal" if measurement.mirror_images_help else "none"
    device = detect_device()
    if measurement.forward_images_per_second:
        throughput = Throughput(device.key, spec.name, spec.default_size, measurement.forward_images_per_second, time.time())
        remember_throughput(throughput)
    else:
        from tl_core.estimate import forward_throughput

        throughput = forward_throughput(spec.name, spec.default_size, device.key)
    candidates = plan_candidates(dataset, measurement, matrix.scenario, spec.name, measured_freeze, throughput, cache_dir, time_budget_minutes, flip)
    chosen = next(row for row in candidates if row.recommended)
    strategy = chosen.strategy
    freeze, block = measured_freeze, measured_block
    if strategy == "feature_extraction":
        freeze, block = len(layer_names), "none (all frozen)"
    elif strategy in ("full_fine_tune", "from_scratch"):
        freeze, block = 0, "all"
    learning_rate = 1e-3 if strategy in ("feature_extraction", "from_scratch") else 1e-4
    augment = True
    reasons = _reasons(measurement, matrix, strategy, freeze, block, len(layer_names), learning_rate, augment, size, freeze_reason)
    reasons.insert(len(reasons) - 2, _candidate_reason(candidates, matrix.strategy, time_budget_minutes))
    if flip == "none":
        reasons.append(
            f"Mirror images look like another class here (the probe trained with them scores {measurement.mirror_probe_accuracy:.1%} against "
            f"{measurement.probe_accuracy:.1%} without), as with text or digits: no left-right flips, in training or at test time."
        )
    views = []
    if matrix.scenario == 2:
        views = [
            f"Freeze the first {measured_freeze} layers (up to block '{measured_block}', where your images start to move the network's statistics) and retrain the rest at a low learning rate.",
            f"Transfer may barely help: the pretrained features beat random ones by only {measurement.probe_accuracy - measurement.random_probe_accuracy:+.0%} "
            "in the probe. A model trained from scratch may do as well; compare the strategies side by side before deciding.",
        ]
    recommendation = replace(matrix, strategy=strategy, reasons=reasons)
    return Advice(
        recommendation, measurement, spec.name, freeze, block, len(layer_names), learning_rate, augment, reasons, views,
        candidates=candidates, matrix_strategy=matrix.strategy, flip=flip, epochs=chosen.epochs, time_budget_minutes=time_budget_minutes,
    )


def _reasons(
    measurement: Measurement, recommendation: Recommendation, strategy: str, freeze: int, block: str, layers: int, learning_rate: float, augment: bool, size: str, freeze_reason: str
) -> list[str]:
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
        reasons.append(f"Freeze the first {freeze} of {layers} layers, up to block '{block}': {freeze_reason}.")
    reasons.append(f"Learning rate {learning_rate:g}" + (" (low: pretrained layers are being adjusted, not relearned)." if learning_rate < 1e-3 else "."))
    if strategy != "feature_extraction":
        reasons.append("Augment the training images (flips, rotation, zoom, shift, contrast): random changes are the cheapest defence against overfitting.")
    elif measurement.mirror_images_help:
        reasons.append("Augment through mirror images: their features are cached once, the head trains on both and its answers are averaged over both.")
    return reasons
