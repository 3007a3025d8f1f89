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
from tl_core.cache import DEFAULT_MEMORY_BUDGET_BYTES, FeatureCache, decode_images
from tl_core.data import Dataset, scan_dataset
from tl_core.scenario import SCENARIOS, Recommendation, classify_size, recommend

HIGH_SIMILARITY_THRESHOLD = 0.5
# A mean BatchNorm shift of this size maps to similarity exp(-1) ~ 0.37. Calibrated on real data here:
# ants/bees photos shift about 0.12 (similarity 0.70), upscaled handwritten digits about 0.72 (0.13).
SHIFT_SCALE = 0.35
# Layers whose shift exceeds this are "moved" by the data: freezing should stop before them.
SHIFT_GROWTH_THRESHOLD = 0.35
# Mean top-1 probability of the ImageNet classifier that maps to similarity 0 and 1 (linear in between).
CONFIDENCE_FLOOR, CONFIDENCE_CEILING = 0.15, 0.65
DEFAULT_SAMPLE_SIZE = 500
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
        sample_size: Images measured.
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

    On small data at least the first third of the blocks stays frozen (a few
    hundred images cannot retrain millions of weights); with no strong shift
    anywhere, the last block is retrained.

    Returns:
        ``(layers to freeze, name of the first trainable block, the reason in words)``.
    """
    blocks = blocks_from_layer_names(spec, layer_names)
    moved = next((entry for entry in profile if entry.shift > SHIFT_GROWTH_THRESHOLD), None)
    if moved is None:
        target = len(blocks) - 1
        why = f"no layer's shift exceeds {SHIFT_GROWTH_THRESHOLD}, so only the last block is retrained"
    else:
        target = next(number for number, block in enumerate(blocks) if block.start <= moved.index < block.end)
        why = f"the shift first exceeds {SHIFT_GROWTH_THRESHOLD} at layer '{moved.name}' ({moved.shift:.2f}), in block '{blocks[target].name}'"
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
    notes: list[str] = []

    pretrained = build_backbone(spec, "imagenet")
    features, shift_profile = _features_and_shift(pretrained, spec, pixels)
    if whole and keep.all():
        from tl_core.training import feature_cache_key

        # The same key training uses: a later feature-extraction run at this size reads these features.
        FeatureCache(cache_dir).save(feature_cache_key(spec, weights_identity(spec, "imagenet"), size, decoded.key), features)
    random_features, _ = _features_and_shift(build_backbone(spec, "none"), spec, pixels, with_shift=False)
    probe = _probe_accuracy(features, labels, seed)
    random_probe = _probe_accuracy(random_features, labels, seed)
    confidence = _imagenet_confidence(pixels, notes)

    mean_shift = float(np.mean([entry.shift for entry in shift_profile])) if shift_profile else 0.0
    components = {"probe": probe_similarity(probe, random_probe), "shift": shift_similarity(mean_shift)}
    if confidence is not None:
        components["confidence"] = confidence_similarity(confidence)
    score, verdict = combine(components)
    measurement = Measurement(
        sample_size=len(labels),
        chance_accuracy=float(np.bincount(labels).max() / len(labels)),
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
    )
    return measurement, [layer.name for layer in pretrained.layers]


def _stratified_sample(dataset: Dataset, sample_size: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    per_class = max(2, sample_size // dataset.num_classes)
    chosen = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.class_name == name]
        chosen.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    return sorted(chosen, key=lambda record: record.relative_path)


def _features_and_shift(backbone, spec: BackboneSpec, pixels: np.ndarray, with_shift: bool = True, batch_size: int = 32):
    """Pooled features and, per BatchNormalization layer, the shift of its input statistics; one pass."""
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
    for start in range(0, len(pixels), batch_size):
        pooled, moments = run(pixels[start : start + batch_size])
        features.append(pooled.numpy())
        moments = [(first.numpy(), second.numpy()) for first, second in moments]
        sums = moments if sums is None else [(a + c, b + d) for (a, b), (c, d) in zip(sums, moments, strict=True)]
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


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Cross-validated accuracy of a standardised logistic regression (up to 5 stratified folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        return float(np.bincount(labels).max() / len(labels))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    scores = cross_val_score(probe, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(np.mean(scores))


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


# --------------------------------------------------------------------------- advice


def advise(
    data_dir: str | Path | Dataset,
    backbone: str = "mobilenet_v2",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    cache_dir: str | None = None,
    seed: int = 0,
) -> Advice:
    """Measures the data and recommends scenario, strategy, freeze depth, learning rate and augmentation.

    Args:
        data_dir: A dataset folder, or an already scanned dataset.
        backbone: The backbone to advise for.
        sample_size: Images measured at most.
        cache_dir: The cache folder shared with training.
        seed: Seed of the split, sample and probe.
    """
    dataset = data_dir if isinstance(data_dir, Dataset) else scan_dataset(data_dir, seed=seed)
    spec = get_backbone(backbone)
    measurement, layer_names = measure_similarity(dataset, backbone, sample_size, cache_dir, seed)
    recommendation = recommend(dataset, measurement.similarity, similarity_source="measured", similarity_score=measurement.similarity_score)
    size = classify_size(dataset).size
    freeze, block, freeze_reason = freeze_depth_from_shift(measurement.shift_profile, layer_names, spec, size)
    strategy = recommendation.strategy
    if strategy == "feature_extraction":
        freeze, block = len(layer_names), "none (all frozen)"
    elif strategy in ("full_fine_tune", "from_scratch"):
        freeze, block = 0, "all"
    learning_rate = 1e-3 if strategy in ("feature_extraction", "from_scratch") else 1e-4
    augment = size == "small"
    reasons = _reasons(measurement, recommendation, strategy, freeze, block, len(layer_names), learning_rate, augment, size, freeze_reason)
    views = []
    if recommendation.scenario == 2:
        views = [
            f"Freeze the first {freeze} layers (up to block '{block}', where your images start to move the network's statistics) and retrain the rest at a low learning rate.",
            f"Transfer may barely help: the pretrained features beat random ones by only {measurement.probe_accuracy - measurement.random_probe_accuracy:+.0%} "
            "in the probe. A model trained from scratch may do as well; compare the strategies side by side before deciding.",
        ]
    recommendation = replace(recommendation, reasons=reasons)
    return Advice(recommendation, measurement, spec.name, freeze, block, len(layer_names), learning_rate, augment, reasons, views)


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
        f"({SCENARIOS[recommendation.scenario]['title']}), strategy {strategy}."
    )
    if strategy == "fine_tune":
        reasons.append(f"Freeze the first {freeze} of {layers} layers, up to block '{block}': {freeze_reason}.")
    reasons.append(f"Learning rate {learning_rate:g}" + (" (low: pretrained layers are being adjusted, not relearned)." if learning_rate < 1e-3 else "."))
    if augment:
        how = " (feature extraction: cache a few augmented views of the training images)" if strategy == "feature_extraction" else ""
        reasons.append(f"Augment the training images{how}: with little data, random changes are the cheapest defence against overfitting.")
    else:
        reasons.append("Augmentation is optional: there is enough data.")
    return reasons


# --------------------------------------------------------------------------- side by side


@dataclass(frozen=True)
class ComparisonRow:
    """One strategy's short run in a side-by-side comparison."""

    strategy: str
    val_accuracy: float | None  # best validation accuracy over the epochs
    val_loss: float | None  # lowest validation loss
    held_out_accuracy: float | None  # accuracy of the kept model on the evaluation split
    seconds: float
    epochs: int
    status: str
    error: str = ""


def candidate_strategies(scenario: int) -> list[str]:
    """The strategies worth comparing in a scenario: its own, its neighbours, and for scenario 2 both views."""
    return {
        1: ["feature_extraction", "fine_tune"],
        2: ["feature_extraction", "fine_tune", "from_scratch"],
        3: ["fine_tune", "full_fine_tune", "from_scratch"],
        4: ["feature_extraction", "fine_tune", "full_fine_tune"],
    }[scenario]


def compare_strategies(
    data_dir: str | Path,
    strategies: list[str],
    out_root: str | Path,
    backbone: str = "mobilenet_v2",
    epochs: int = 3,
    image_size: int | None = None,
    train_images_per_class: int | None = 100,
    freeze_layers: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    on_row=None,
    stop=None,
) -> list[ComparisonRow]:
    """Trains each strategy briefly on the same split and reports validation accuracy and time.

    Every run uses the same seed, so the same split and validation images; the
    training split can be subsampled per class to keep the comparison quick.
    Feature extraction reuses the feature cache; fine-tuning warms its head up
    for one epoch on the cached features.

    Args:
        data_dir: The dataset folder.
        strategies: Strategy names to compare, in order.
        out_root: Folder for the runs' files (one sub-folder per strategy).
        backbone: The backbone all runs start from.
        epochs: Epochs per run.
        image_size: Input size (None: the backbone's own).
        train_images_per_class: At most this many training images per class (None: all).
        freeze_layers: Freeze depth for ``fine_tune`` (None: its default).
        cache_dir: Cache folder shared with training.
        seed: Seed of everything.
        on_row: Called with each finished row (for progress).
        stop: A ``StopRequest`` that ends the comparison after the current run.

    Returns:
        One row per strategy, in the order given.
    """
    from tl_core.config import TrainConfig
    from tl_core.errors import TLError
    from tl_core.training import train

    rows = []
    for strategy in strategies:
        if stop is not None and stop.requested:
            break
        config = TrainConfig(
            data_dir=str(data_dir),
            out_dir=str(Path(out_root) / strategy),
            backbone=backbone,
            strategy=strategy,
            freeze_layers=freeze_layers if strategy == "fine_tune" else None,
            epochs=epochs,
            warmup_epochs=1,
            image_size=image_size,
            early_stopping_patience=0,
            max_train_images_per_class=train_images_per_class,
            cache_dir=cache_dir,
            seed=seed,
        )
        started = time.perf_counter()
        try:
            result = train(config, stop=stop)
        except TLError as error:
            rows.append(ComparisonRow(strategy, None, None, None, round(time.perf_counter() - started, 2), 0, "failed", str(error)))
        else:
            history = [entry for entry in result.history if entry.get("val_accuracy") is not None]
            rows.append(
                ComparisonRow(
                    strategy,
                    max((entry["val_accuracy"] for entry in history), default=None),
                    min((entry["val_loss"] for entry in history), default=None),
                    result.evaluation.accuracy if result.evaluation else None,
                    round(time.perf_counter() - started, 2),
                    len(result.history),
                    result.status,
                )
            )
        if on_row is not None:
            on_row(rows[-1])
    return rows


def best_row(rows: list[ComparisonRow]) -> ComparisonRow | None:
    """The winner: highest validation accuracy, then lowest validation loss, then fastest."""
    finished = [row for row in rows if row.val_accuracy is not None]
    if not finished:
        return None
    return max(finished, key=lambda row: (round(row.val_accuracy, 4), -(row.val_loss or 0.0), -row.seconds))
