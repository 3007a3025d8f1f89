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
from dataclasses import dataclass, field

import numpy as np

from tl_core.data.decoded import DEFAULT_MEMORY_BUDGET_BYTES, decode_images
from tl_core.data.records import Dataset
from tl_core.data.split import stratified_half, stratified_sample
from tl_core.features import (
    MIRRORED,
    ORIGINAL,
    QUARTER_TURN,
    FeatureCache,
    compiled_forward,
    forward_batches,
    out_of_fold_probabilities,
    out_of_fold_view_probabilities,
    view_keys,
)
from tl_core.models.backbones import get_backbone
from tl_core.models.weights import CLASSIFIER_WEIGHTS_FILE

HIGH_SIMILARITY_THRESHOLD = 0.5
# A mean BatchNorm shift of this size maps to similarity exp(-1) ~ 0.37. Calibrated on real data here:
# ants/bees photos shift about 0.12 (similarity 0.70), upscaled handwritten digits about 0.72 (0.13).
SHIFT_SCALE = 0.35
# Layers whose shift exceeds this are "moved" by the data: freezing should stop before them.
SHIFT_GROWTH_THRESHOLD = 0.35
# Mean top-1 probability of the ImageNet classifier that maps to similarity 0 and 1 (linear in between).
CONFIDENCE_FLOOR, CONFIDENCE_CEILING = 0.15, 0.65
DEFAULT_SAMPLE_SIZE = 500
# Mirror images count as another class when a probe trained on the images answers for their mirror images this much
# worse than for the images themselves. Measured on the advice's sample: handwritten digits lost 10.7 points (a
# mirrored 3 is no 3); aerial scenes lost 1.3, cat breeds gained 0.2, ants and bees 0.8. The probe trained with the
# mirror images could not tell these apart (digits -1.0 point, aerial -0.7: a few images each), and turning flips off
# on aerial cost feature extraction a point (0.952 -> 0.943).
MIRROR_LOSS_LIMIT = 0.03
TURN_LOSS_LIMIT = 0.0  # turned images must read at least as well as upright ones (see turns_same_class)
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
        mirror_transfer_accuracy: The probe trained on the images alone, answering for the held-out
            images' mirror images: near ``probe_accuracy`` where a mirror image shows the same class.
        turned_transfer_accuracy: The probe trained on the images alone, answering for the held-out images turned
            a quarter turn: near ``probe_accuracy`` where up is anywhere (aerial scenes, microscope images, surfaces).
        forward_images_per_second: The frozen backbone's forward pass on this device, at its own size.
        feature_extraction_estimate: Feature extraction's expected accuracy with the whole training
            split: the probe's accuracy on half its images and on all of them, extended along
            ``error = floor + a / sqrt(n)`` to the training images (``extrapolated_accuracy``).
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
    mirror_transfer_accuracy: float | None = None
    turned_transfer_accuracy: float | None = None

    @property
    def mirror_images_help(self) -> bool:
        """Whether mirror images are examples of the same class (photos: yes; text and digits: no), as the probe finds (``mirrors_same_class``)."""
        return self.mirror_transfer_accuracy is None or mirrors_same_class(self.probe_accuracy, self.mirror_transfer_accuracy)

    @property
    def turns_keep_class(self) -> bool:
        """Whether turned images are examples of the same class, as the probe finds (``turns_same_class``); False where not measured."""
        return self.turned_transfer_accuracy is not None and turns_same_class(self.probe_accuracy, self.turned_transfer_accuracy)

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


def mirrors_same_class(probe_accuracy: float, transfer_accuracy: float) -> bool:
    """Whether a probe trained on the images reads their mirror images about as well as the images (``MIRROR_LOSS_LIMIT``)."""
    return transfer_accuracy >= probe_accuracy - MIRROR_LOSS_LIMIT


def turns_same_class(probe_accuracy: float, turned_accuracy: float) -> bool:
    """Whether a probe trained on the images reads them turned a quarter turn at least as well as upright (``TURN_LOSS_LIMIT``).

    On 483 aerial scenes (seed 0) the probe read 92.3 % of them turned against 90.9 % upright; on cat breeds 70.7 %
    against 82.7 %; on ants and bees 94.7 % against 95.5 %. A first rule allowed a 3-point loss, as for mirror images,
    and turned the views on for ants and bees too, where they then cost 0.7-2.0 points with either strategy on every
    seed tried, while on aerial they gained 0.2-0.5. A wrong yes costs more than a missed gain, so any loss says no
    (on truly turn-free data about half the samples will read a little under, and miss the gain).
    """
    return turned_accuracy >= probe_accuracy - TURN_LOSS_LIMIT


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

    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_runner

    started = time.perf_counter()
    spec = get_backbone(backbone)
    size = spec.default_size
    decoded, keep, pixels, labels, labelled = decoded_sample(dataset, size, sample_size, cache_dir, seed)
    notes: list[str] = []

    pretrained = build_backbone(spec, "imagenet")
    features, shift_profile = _features_and_shift(pretrained, spec, pixels)
    speeds: list[float] = []
    # By the runtime chosen for this machine. Where none is remembered yet, it is measured here when the run that follows
    # will push enough images through the backbone to repay a conversion: the converted file and the choice are cached for
    # that run, and its time estimate then counts the speed-up (the advice's own few hundred images would not repay it).
    images_to_come = max(len(pixels), len(dataset.records))  # the run's first pass over every image
    runner = backbone_runner(build_feature_model(spec, pretrained, size), spec, weights_identity(spec, "imagenet"), size, images_to_come, cache_dir=cache_dir)
    mirrored_features = forward_batches(runner.forward(MIRRORED), pixels, speeds=speeds)
    turned_features = forward_batches(runner.forward(QUARTER_TURN), pixels)
    if keep.all():
        # The sample's keys: the probe of the images' middles (``tl_core.advice.framing``) reads these features, and where
        # the sample is the whole dataset they are training's keys, so a later feature-extraction run at this size does too.
        keys = view_keys(spec, weights_identity(spec, "imagenet"), size, decoded.key)
        FeatureCache(cache_dir).save(keys[ORIGINAL], features)
        FeatureCache(cache_dir).save(keys[MIRRORED], mirrored_features)
        FeatureCache(cache_dir).save(keys[QUARTER_TURN], turned_features)
    random_features = forward_batches(compiled_forward(build_feature_model(spec, build_backbone(spec, "none"), size), size), pixels)
    probe, random_probe, with_mirror, transfer, turned, estimate = _probes(
        features[labelled], mirrored_features[labelled], turned_features[labelled], random_features[labelled], labels[labelled], seed, len(dataset.split("train"))
    )
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
        mirror_transfer_accuracy=transfer,
        turned_transfer_accuracy=turned,
        forward_images_per_second=runner.keras_images_per_second(speeds[0] if speeds else None),
        feature_extraction_estimate=estimate,
    )
    return measurement, [layer.name for layer in pretrained.layers]


def decoded_sample(dataset: Dataset, size: int, sample_size: int, cache_dir: str | None, seed: int, centre_crop: bool = False):
    """The advice's sample decoded at ``size`` (``centre_crop``: their middles): the decoded images, which of the sample
    decoded, their pixels and labels, and which the probes learn from."""
    records = dataset.records if len(dataset.records) <= sample_size else stratified_sample(dataset, sample_size, seed)
    labels = np.array([record.label for record in records])
    decoded = decode_images(records, size, cache_dir=cache_dir, memory_budget_bytes=DEFAULT_MEMORY_BUDGET_BYTES, centre_crop=centre_crop)
    failed = {item.path for item in decoded.failed}
    keep = np.array([record.path not in failed for record in records])
    pixels, labels = decoded.pixels[keep] if not keep.all() else decoded.pixels, labels[keep]
    # The probes learn from labels: they never see the held-out test images, which must judge the final model alone.
    labelled = np.array([record.split != "test" for record in records])[keep]
    if np.bincount(labels[labelled], minlength=dataset.num_classes).min() < 2:
        labelled = np.ones(len(labels), dtype=bool)  # too few images outside the test split to probe: use them all
    return decoded, keep, pixels, labels, labelled


def probe_at_size(
    dataset: Dataset, backbone: str, size: int, mirrors: bool, sample_size: int = DEFAULT_SAMPLE_SIZE, cache_dir: str | None = None, seed: int = 0, images_to_come: int | None = None
):
    """Feature extraction measured at input ``size`` on the advice's sample (``tl_core.advice.sizes.SizeProbe``).

    The same sample and folds as ``measure_similarity``'s probe, so the sizes compare on equal
    terms, image for image; ``mirrors``: the probe trains and answers with mirror images too.
    ``images_to_come``: the images a run with this backbone would push through it, when the
    backbone's runtime is worth choosing now for that run (``tl_core.runtime``); else the sample's.
    """
    from tl_core.advice.sizes import SizeProbe
    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_runner

    spec = get_backbone(backbone)
    _, _, pixels, labels, labelled = decoded_sample(dataset, size, sample_size, cache_dir, seed)
    model = build_feature_model(spec, build_backbone(spec, "imagenet"), size)
    runner = backbone_runner(model, spec, weights_identity(spec, "imagenet"), size, max(len(pixels), images_to_come or 0), cache_dir=cache_dir)
    speeds: list[float] = []
    features = forward_batches(runner.forward(), pixels[labelled], speeds=speeds)
    mirrored = forward_batches(runner.forward(MIRRORED), pixels[labelled]) if mirrors else None
    speed = runner.keras_images_per_second(speeds[0] if speeds else None)
    if not spec.members:
        return SizeProbe(size, float(probe_right(features, labels[labelled], seed, mirrored=mirrored).mean()), speed, backbone=spec.name)
    # Two networks joined: a probe per network's part, their answers averaged as the joined head averages its heads
    # (tl_core.models.build.joined_head); the first network's probe alone, on the same folds, is the baseline, image by image.
    ends = np.cumsum(spec.member_dims)
    answers = [
        probe_probabilities(features[:, end - width : end], labels[labelled], seed, None if mirrored is None else mirrored[:, end - width : end])
        for end, width in zip(ends, spec.member_dims, strict=True)
    ]
    right, alone = sum(answers).argmax(axis=1) == labels[labelled], answers[0].argmax(axis=1) == labels[labelled]
    return SizeProbe(size, float(right.mean()), speed, backbone=spec.name, baseline_accuracy=float(alone.mean()), difference_error=paired_error(right, alone))


def paired_error(right: np.ndarray, baseline: np.ndarray) -> float:
    """The standard error of the difference between two probes' accuracies read on the same images, image by image
    (``right`` and ``baseline``: which images each got right)."""
    differences = right.astype(np.float64) - baseline
    return float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else 0.0


def _probes(
    features: np.ndarray, mirrored: np.ndarray, turned: np.ndarray, random_features: np.ndarray, labels: np.ndarray, seed: int, train_images: int
) -> tuple[float, float, float, float, float, float]:
    """The probe on pretrained features, on random-weight ones, with mirror images, on mirror images alone, on turned images alone, and feature extraction's expected accuracy.

    The probe learns from a few hundred images; feature extraction will have the whole training split
    (``train_images``). Half the probe's images give a second point of its learning curve, and the
    curve is extended.
    """
    probe, transfer, turned_transfer = _view_accuracies(features, labels, seed, [features, mirrored, turned])  # the same probes read on each view
    random_probe = _probe_accuracy(random_features, labels, seed)
    with_mirror = _probe_accuracy(features, labels, seed, mirrored=mirrored)
    mirrors_help = mirrors_same_class(probe, transfer)
    half = stratified_half(labels, seed)
    half_probe = _probe_accuracy(features[half], labels[half], seed, mirrored=mirrored[half] if mirrors_help else None)
    folds = int(min(5, np.bincount(labels).min()))
    probe_images = len(labels) * (folds - 1) // max(folds, 1)
    estimate = extrapolated_accuracy(half_probe, max(probe, with_mirror) if mirrors_help else probe, probe_images // 2, probe_images, train_images)
    return probe, random_probe, with_mirror, transfer, turned_transfer, estimate


def extrapolated_accuracy(accuracy_small: float, accuracy_large: float, images_small: int, images_large: int, images_target: int) -> float:
    """Accuracy with ``images_target`` training images, from two points of a learning curve.

    The error is taken to be ``floor + a / sqrt(n)``: a part more images do not remove (classes that
    overlap, as a small tile of grass may come from a golf course or a ball park) and a part that shrinks
    with the square root of the images. The two measured points fix both. A floor below zero (a curve
    steeper than that) is taken as zero, so the curve is never extended more steeply than ``1 / sqrt(n)``;
    the extended error is never below half the measured one either, so a noisy pair of points cannot
    promise much. A flat or rising curve is not extended.

    On 33,600 satellite tiles (the curve extended 61 times) this expects 64.5 % where feature extraction
    got 66.1 %; a power law without the floor had expected 75 %. On the five shared sets it moved the
    estimates by at most 0.4 points (docs/benchmarks.md).
    """
    error_small, error_large = 1.0 - accuracy_small, 1.0 - accuracy_large
    if images_target <= images_large or images_small <= 0 or images_large <= images_small or error_large <= 0 or error_small <= error_large:
        return accuracy_large
    shrink_small, shrink_large, shrink_target = (count**-0.5 for count in (images_small, images_large, images_target))
    floor = max(0.0, error_large - (error_small - error_large) / (shrink_small - shrink_large) * shrink_large)
    error = floor + (error_large - floor) * shrink_target / shrink_large
    return 1.0 - max(error, error_large / 2)


def _features_and_shift(backbone, spec, pixels: np.ndarray) -> tuple[np.ndarray, list[LayerShift]]:
    """Pooled features and, per BatchNormalization layer, the shift of its input statistics; one pass over the images.

    One model gives, per image, the pooled features followed by each BatchNorm input's
    channel means and the means of its squares; summed over the images they are the
    statistics the layer sees, compared with the ImageNet ones it stores.
    """
    import keras

    from tl_core.models.build import feature_maps, pool_maps, preprocessing_layers

    size = pixels.shape[1]
    batchnorms = [(index, layer) for index, layer in enumerate(backbone.layers) if isinstance(layer, keras.layers.BatchNormalization)]
    maps = list(feature_maps(spec, backbone).outputs)
    taps = keras.Model(backbone.inputs, [layer.input for _, layer in batchnorms] + maps)
    inputs = keras.Input((size, size, 3))
    images = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        images = layer(images)
    outputs = taps(images, training=False)
    tapped, maps = outputs[: len(batchnorms)], outputs[len(batchnorms) :]
    # The features the run's feature model gives (``build_feature_model``), from the same pass.
    features = pool_maps(spec, maps)
    channel_means = [keras.ops.mean(output, axis=(1, 2)) for output in tapped]
    squares = [keras.ops.mean(keras.ops.square(output), axis=(1, 2)) for output in tapped]
    statistics = keras.Model(inputs, keras.ops.concatenate([features, *channel_means, *squares], axis=-1))
    values = forward_batches(compiled_forward(statistics, size), pixels)
    features, columns = values[:, : spec.feature_dim], spec.feature_dim
    widths = [int(layer.input.shape[-1]) for _, layer in batchnorms]
    firsts, seconds = [], []
    for width in widths:
        firsts.append(values[:, columns : columns + width].mean(axis=0))
        columns += width
    for width in widths:
        seconds.append(values[:, columns : columns + width].mean(axis=0))
        columns += width
    profile = []
    for (index, layer), mean, second in zip(batchnorms, firsts, seconds, strict=True):
        variance = np.maximum(second - mean**2, 0.0)
        stored_mean = keras.ops.convert_to_numpy(layer.moving_mean)
        stored_variance = keras.ops.convert_to_numpy(layer.moving_variance)
        mean_shift = np.abs(mean - stored_mean) / np.sqrt(stored_variance + 1e-3)
        variance_shift = np.abs(np.log((variance + 1e-3) / (stored_variance + 1e-3)))
        profile.append(LayerShift(index, layer.name, float((np.median(mean_shift) + np.median(variance_shift)) / 2)))
    return np.ascontiguousarray(features), profile


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int, mirrored: np.ndarray | None = None) -> float:
    """Cross-validated accuracy of a standardised logistic regression (up to 5 stratified folds).

    With ``mirrored`` (the features of the same images mirrored left to right), the probe
    does what feature extraction does with flips: it trains on both and averages its
    answers for an image and its mirror image.
    """
    return float(probe_right(features, labels, seed, mirrored).mean())


def probe_right(features: np.ndarray, labels: np.ndarray, seed: int, mirrored: np.ndarray | None = None) -> np.ndarray:
    """Which images ``_probe_accuracy``'s probe gets right (each answered by the folds that did not learn from it)."""
    return probe_probabilities(features, labels, seed, mirrored).argmax(axis=1) == labels


def probe_probabilities(features: np.ndarray, labels: np.ndarray, seed: int, mirrored: np.ndarray | None = None) -> np.ndarray:
    """``_probe_accuracy``'s probe's class probabilities of each image, from the folds that did not learn from it
    (every image given the largest class where a class has too few images for two folds)."""
    folds, num_classes = int(min(5, np.bincount(labels).min())), int(labels.max()) + 1
    if folds < 2:
        return np.tile(np.eye(num_classes)[np.bincount(labels).argmax()], (len(labels), 1))
    return out_of_fold_probabilities(features, labels, num_classes, folds, seed, _probe_model, mirrored=mirrored)


def _view_accuracies(features: np.ndarray, labels: np.ndarray, seed: int, views: list[np.ndarray]) -> list[float]:
    """The probe's cross-validated accuracy read on each view of the held-out images (its folds as ``_probe_accuracy``'s), trained once per fold."""
    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        return [float(np.bincount(labels).max() / len(labels))] * len(views)
    answers = out_of_fold_view_probabilities(features, labels, int(labels.max()) + 1, folds, seed, _probe_model, views)
    return [float((probabilities.argmax(axis=1) == labels).mean()) for probabilities in answers]


def _probe_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))


def _imagenet_confidence(pixels: np.ndarray, notes: list[str]) -> float | None:
    """Mean top-1 probability of MobileNet 0.75's ImageNet classifier, or None when its weights are missing."""
    import keras

    from tl_core.models.weights import keras_models_folder

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
