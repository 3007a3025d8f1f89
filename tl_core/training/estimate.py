"""How long a run will take on this device: a measured forward pass, the model's arithmetic and the recipe's epochs.

The one slow thing in a run is the backbone. So the estimate needs one
measurement per device, backbone and image size: how many images per second
the frozen backbone's forward pass handles (``forward_throughput``, a few
seconds, remembered in the cache folder). Everything else is counted:

- decoding: a few of the dataset's own images are decoded and timed;
- feature extraction: one forward pass per image and cached view;
- the head: thousands of steps on feature vectors, a few seconds at most;
- training backbone layers: a forward pass plus the backward pass through the
  unfrozen layers, which costs about twice their share of the forward
  arithmetic (``trainable_share``, from the layers' kernels and output sizes),
  plus the augmentation, per training image and epoch; a forward pass per
  validation image and epoch;
- the evaluation: a forward pass per held-out image, two with test-time flipping.

That is the model of the arithmetic (``Estimate.model_parts``). What a training
step costs beyond it, and how long tracing and writing files take, depends on
the device: every finished run records its estimate against what it took, and
the estimates after it on the same device are corrected by what those runs
measured (``tl_core.training.timings``). Early stopping can make a run shorter.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tl_core.config import IMAGE_TRAINING_STRATEGIES, TrainConfig, default_formats
from tl_core.data.decoded import decoded_images_cached
from tl_core.data.images import load_image
from tl_core.data.records import Dataset
from tl_core.features import MIRRORS_WORTH_POINTS, extra_views, mirror_gain_points
from tl_core.files import default_cache_dir, read_json, write_json
from tl_core.models.backbones import get_backbone
from tl_core.models.blocks import default_freeze_layers
from tl_core.training.timings import MIRROR_FEATURES, MIRROR_HEAD, group_of, grouped, learned_corrections

THROUGHPUT_FILE = "throughput.json"
EXPECTATIONS_FILE = "expected_accuracy.json"  # the advice's expected feature-extraction accuracy per dataset, backbone and size
KEPT_EXPECTATIONS = 200
RECENT_MEASUREMENTS = 5  # the throughput is the median of this many of the latest measurements
# Seconds per image for the random affine resampling of one augmented training image on a CPU core (measured
# in benchmarks.speed: about 35 ms per batch of 32 at 224 px), scaled by pixels.
AUGMENT_SECONDS_PER_224_IMAGE = 0.0011
HEAD_SECONDS_PER_FEATURE_EPOCH = 2e-5
SETUP_SECONDS = 1.5  # scanning, building the model (measured: the "rest" of in-process runs on 2 cores, 2 s with the files)
FILES_SECONDS = 1.5  # writing model.h5, model.keras and the reports at the end
# Tracing the compiled training step (and its validation step) once per phase on images, and the exported model before the evaluation.
TRACE_SECONDS = 4.0
HEAD_TRACE_SECONDS = 1.0  # tracing the head's compiled loop and its validation
HEAD_EPOCHS_PER_PATIENCE = 2  # see expected_epochs
# A training step costs the forward pass plus the backward pass through the layers that train. The backward pass costs
# about twice their share of the forward arithmetic on a GPU; on a CPU the gradients of depthwise and grouped convolutions
# are slower still (measured with MobileNetV2 on 2 cores: a fine-tuning epoch took 1.5-1.6 times what a factor of 2 gives).
BACKWARD_FACTOR = {"GPU": 2.0, "CPU": 3.5}
# Converting and checking each portable file, measured with MobileNetV2 on 2 CPU cores (benchmarks.portable).
# The time follows the graph's operations rather than its parameters (VGG16 converts as fast as MobileNetV2,
# ResNet50 takes 75 s for both files), so it is not scaled: an error of a minute at most, on runs of many minutes.
START_UP = "start_up"  # the part of an app-started run's estimate before the run's own clock (``Estimate.with_start_up``)
PORTABLE_SECONDS = {"tflite": 10.0, "int8": 12.0, "onnx": 6.0}


@dataclass(frozen=True)
class Throughput:
    """The frozen backbone's forward pass on this device.

    Attributes:
        device: The device it was measured on (``DeviceInfo.describe()``).
        backbone: The backbone's name.
        image_size: Side of the square input.
        images_per_second: Images the forward pass handles per second, batch 32.
        measured: ``time.time()`` of the measurement.
    """

    device: str
    backbone: str
    image_size: int
    images_per_second: float
    measured: float


@dataclass(frozen=True)
class Estimate:
    """Roughly how long a run takes, and where the time goes.

    Attributes:
        seconds: The whole run.
        parts: Seconds per step (``decode``, ``features``, ``head``, ``fine_tune`` ...), as corrected by earlier runs here.
        basis: What the estimate rests on, in words.
        model_parts: The same steps from the arithmetic alone, before any correction.
        corrections: The factor each group of steps was multiplied by (``tl_core.training.timings``); empty before any run here.
        epochs: Planned epochs of each phase of epochs (``head``, ``fine_tune`` ...).
        learned_from: Earlier runs on this device the corrections come from.
        expected_epochs: The epochs each phase of epochs is expected to run (the head's warm-up: the share earlier runs here ran).
        epoch_seconds: Seconds per epoch of each phase of epochs, as corrected, without the tracing of its first epoch.
        trace_seconds: The tracing each phase of epochs spends in its first epoch.
    """

    seconds: float
    parts: dict[str, float]
    basis: str
    model_parts: dict[str, float] = field(default_factory=dict)
    corrections: dict[str, float] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    learned_from: int = 0
    expected_epochs: dict[str, int] = field(default_factory=dict)
    epoch_seconds: dict[str, float] = field(default_factory=dict)
    trace_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def minutes(self) -> float:
        return self.seconds / 60

    def describe(self) -> str:
        """``about 6 min`` or ``about 40 s``, for a person."""
        return f"about {duration_text(self.seconds)}"

    def to_dict(self) -> dict:
        return asdict(self)

    def with_start_up(self, seconds: float) -> Estimate:
        """The same estimate with ``seconds`` first for starting the training process (``START_UP``), as runs the app started took here."""
        return replace(
            self, seconds=round(self.seconds + seconds, 1), parts={START_UP: round(seconds, 1), **self.parts},
            basis=f"{self.basis}; starting the training process as long as the last runs here took to start",
        )


def duration_text(seconds: float) -> str:
    """``40 s``, ``6 min``, ``1 h 20 min``: rounded the way a person would say it."""
    if seconds < 55:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{max(1, round(minutes)):.0f} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


# --------------------------------------------------------------------------- the one measurement


def forward_throughput(backbone: str, image_size: int, device: str, cache_dir: str | os.PathLike | None = None, measure: bool = True) -> Throughput | None:
    """Images per second of the frozen backbone's forward pass here, measured once and remembered.

    A measurement at another size of the same backbone stands in, scaled by the pixels, so
    changing the image size on the Setup page costs no new measurement.

    Args:
        backbone: The backbone's name.
        image_size: Side of the square input.
        device: The device the measurement is filed under (``DeviceInfo.key``).
        cache_dir: Folder of ``throughput.json`` (the default cache folder when None).
        measure: Measure now when nothing is remembered (a few seconds); False returns None instead.

    Returns:
        The throughput, or None when it was not measured and ``measure`` is False.
    """
    path = Path(cache_dir or default_cache_dir()) / THROUGHPUT_FILE
    key = f"{device}|{backbone}|{image_size}"
    remembered = _remembered(path)
    if key in remembered:
        return _throughput(remembered[key])
    same_backbone = [_throughput(entry) for entry in remembered.values() if entry.get("device") == device and entry.get("backbone") == backbone]
    if same_backbone:
        nearest = min(same_backbone, key=lambda entry: abs(entry.image_size - image_size))
        scaled = nearest.images_per_second * (nearest.image_size / image_size) ** 2
        return Throughput(device, backbone, image_size, scaled, nearest.measured)
    if not measure:
        return None
    throughput = Throughput(device, backbone, image_size, measure_forward(backbone, image_size), time.time())
    remember_throughput(throughput, cache_dir)
    return throughput


def remember_throughput(throughput: Throughput, cache_dir: str | os.PathLike | None = None) -> None:
    """Files a throughput measured elsewhere (the advice's own forward pass) for later estimates.

    The estimate uses the median of the last ``RECENT_MEASUREMENTS`` measurements: one taken while
    another program kept the cores busy does not set every later estimate.
    """
    path = Path(cache_dir or default_cache_dir()) / THROUGHPUT_FILE
    remembered = _remembered(path)  # another process may have added entries meanwhile
    key = f"{throughput.device}|{throughput.backbone}|{throughput.image_size}"
    earlier = remembered.get(key, {}).get("recent") or ([remembered[key]["images_per_second"]] if key in remembered else [])
    recent = [*earlier, throughput.images_per_second][-RECENT_MEASUREMENTS:]
    remembered[key] = {**asdict(throughput), "images_per_second": statistics.median(recent), "recent": recent}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, remembered, indent=1)


def _remembered(path: Path) -> dict:
    remembered = read_json(path, {})
    return {key: entry for key, entry in remembered.items() if isinstance(entry, dict)} if isinstance(remembered, dict) else {}


def _throughput(entry: dict) -> Throughput:
    return Throughput(**{name: entry[name] for name in ("device", "backbone", "image_size", "images_per_second", "measured")})


def measure_forward(backbone: str, image_size: int, batch_size: int = 32, batches: int = 3) -> float:
    """Times the compiled forward pass of the backbone (random weights: the speed is the same) on random images."""
    from tl_core.features import compiled_forward
    from tl_core.models.build import build_backbone, build_feature_model

    spec = get_backbone(backbone)
    forward = compiled_forward(build_feature_model(spec, build_backbone(spec, "none"), image_size), image_size)
    images = np.random.default_rng(0).integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
    forward(images)  # trace and warm up
    started = time.perf_counter()
    for _ in range(batches):
        forward(images)
    return batch_size * batches / (time.perf_counter() - started)


# --------------------------------------------------------------------------- what the advice expects of the data


def remember_expected_accuracy(dataset: Dataset, backbone: str, image_size: int, accuracy: float, cache_dir: str | os.PathLike | None = None) -> None:
    """Files the advice's expected feature-extraction accuracy for these images at this size, for later estimates.

    The estimate of a feature-extraction run uses it to foresee whether the mirror images'
    second pass of the backbone will be found worth it (``tl_core.training.mirrors``).
    """
    from tl_core.data.decoded import decoded_images_key

    path = Path(cache_dir or default_cache_dir()) / EXPECTATIONS_FILE
    remembered = read_json(path, {})
    remembered = remembered if isinstance(remembered, dict) else {}
    key = _expectation_key(backbone, decoded_images_key(dataset.records, image_size))
    remembered.pop(key, None)  # then added last: the oldest entries are the ones dropped
    remembered[key] = round(float(accuracy), 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dict(list(remembered.items())[-KEPT_EXPECTATIONS:]), indent=1)


def remembered_expected_accuracy(dataset: Dataset, backbone: str, image_size: int, cache_dir: str | os.PathLike | None = None) -> float | None:
    """The advice's expected feature-extraction accuracy for these images at this size (None when no advice measured it)."""
    from tl_core.data.decoded import decoded_images_key

    remembered = read_json(Path(cache_dir or default_cache_dir()) / EXPECTATIONS_FILE, {})
    value = remembered.get(_expectation_key(backbone, decoded_images_key(dataset.records, image_size))) if isinstance(remembered, dict) else None
    return float(value) if isinstance(value, int | float) and 0.0 <= value <= 1.0 else None


def _expectation_key(backbone: str, images_key: str) -> str:
    return f"{backbone}|{images_key}"


def mirrors_foreseen(config: TrainConfig, dataset: Dataset) -> tuple[bool, str]:
    """Whether a first feature-extraction run is expected to go on to the mirror images, and why in words.

    The run decides after its first model, from that model's validation errors
    (``tl_core.training.mirrors.mirrors_pay``). Before the run, the advice's
    expected accuracy stands in for them; without an advice, the mirror images are counted.
    """
    spec = get_backbone(config.backbone)
    expected = remembered_expected_accuracy(dataset, spec.name, config.image_size or spec.default_size, config.cache_dir)
    if expected is None:
        return True, ""
    count = len(dataset.split("val"))
    gain = mirror_gain_points((1.0 - expected) * count, count)
    if gain < MIRRORS_WORTH_POINTS:
        return False, f"the mirror images' pass is not counted: at the {expected:.1%} the advice expects, they would add about {gain:.1f} points, so the run skips them"
    return True, ""


# --------------------------------------------------------------------------- the model's arithmetic


@functools.cache
def layer_costs(backbone: str, image_size: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The backbone's layer names, and the multiply-adds of each layer on one image of this size.

    A layer's cost is its kernel's size times its output positions. Layers without a kernel
    (batch normalisation, activations, pooling) cost little next to the convolutions and count as zero.
    """
    import keras

    spec = get_backbone(backbone)
    if spec.members:  # the networks side by side: their layers one after the other
        parts = [layer_costs(member.name, image_size) for member in spec.member_specs]
        return tuple(name for names, _ in parts for name in names), tuple(cost for _, costs in parts for cost in costs)
    constructor = getattr(keras.applications, spec.constructor)
    model = constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3), **dict(spec.constructor_kwargs))
    costs = []
    names = tuple(layer.name for layer in model.layers)
    for layer in model.layers:
        kernel = next((weight for weight in layer.weights if "kernel" in weight.path.split("/")[-1]), None)
        if kernel is None:
            costs.append(0.0)
            continue
        output_shape = layer.output.shape
        positions = math.prod(dimension or 1 for dimension in output_shape[1:-1]) if len(output_shape) > 2 else 1
        costs.append(float(math.prod(kernel.shape)) * positions)
    return names, tuple(costs)


def trainable_share(backbone: str, image_size: int, frozen_layers: int) -> float:
    """The share of the backbone's forward arithmetic in the layers after the first ``frozen_layers``."""
    _, costs = layer_costs(backbone, image_size)
    total = sum(costs) or 1.0
    return sum(costs[frozen_layers:]) / total


# --------------------------------------------------------------------------- the estimate


def decode_seconds_per_image(dataset: Dataset, image_size: int, sample: int = 12) -> float:
    """Seconds one core takes to decode and resize one of this dataset's images (a few are timed)."""
    records = dataset.records[:: max(1, len(dataset.records) // sample)][:sample]
    started = time.perf_counter()
    for record in records:
        try:
            load_image(record.path, image_size)
        except Exception:  # noqa: BLE001 - a broken file is the scan's business; here it only costs no time
            continue
    return (time.perf_counter() - started) / max(len(records), 1)


def estimate_run(
    config: TrainConfig, dataset: Dataset, throughput: Throughput, frozen_layers: int | None = None, decode_seconds: float | None = None, learn: bool = True,
) -> Estimate:
    """Roughly how long ``config`` takes on ``dataset`` with this throughput.

    Args:
        config: The run's settings, with a concrete strategy.
        dataset: The scanned dataset.
        throughput: The forward pass measured at the run's backbone and image size.
        frozen_layers: Layers kept frozen when fine-tuning (None: the config's, or the default depth).
        decode_seconds: Seconds per image to decode on one core (None: timed on a few of the images).
        learn: Correct the arithmetic by what earlier runs on this device took (``timings.json`` in the cache folder).

    Returns:
        The estimate, with the seconds of each step.
    """
    mirrors, mirrors_why = mirrors_foreseen(config, dataset) if config.strategy == "feature_extraction" else (True, "")
    parts, epochs = model_parts(config, dataset, throughput, frozen_layers, decode_seconds, mirrors=mirrors)
    factors, shares, runs = learned_corrections(throughput.device, config.backbone, config.cache_dir) if learn else ({}, {}, 0)
    corrected = {}
    for name, seconds in parts.items():
        group = group_of(name)
        share = expected_epochs(group, epochs[group], config.early_stopping_patience, shares) / epochs[group] if group in epochs else 1.0
        corrected[name] = seconds * factors.get(group, 1.0) * share
    basis = f"forward pass measured at {throughput.images_per_second:.0f} images/s on {throughput.device}"
    speedup, runtime = feature_speedup(config, dataset, throughput)
    if speedup != 1.0:
        basis += f"; the backbone's features {speedup:.1f}x that on {runtime}, as measured earlier here (by a run or the advice)"
    if runs:
        basis += f", corrected by what {runs} earlier run{'s' if runs != 1 else ''} here took"
    if mirrors_why:
        basis += f"; {mirrors_why}"
    traces = {group: HEAD_TRACE_SECONDS if group == "head" else TRACE_SECONDS for group in epochs}
    expected = {group: expected_epochs(group, planned, config.early_stopping_patience, shares) for group, planned in epochs.items()}
    return Estimate(
        round(sum(corrected.values()), 1), {name: round(value, 1) for name, value in corrected.items()}, basis,
        model_parts={name: round(value, 1) for name, value in parts.items()}, corrections={group: round(value, 3) for group, value in factors.items()},
        epochs=epochs, learned_from=runs,
        expected_epochs=expected,
        epoch_seconds={group: round(max(grouped(parts)[group] - traces[group], 0.0) / planned * factors.get(group, 1.0), 4) for group, planned in epochs.items()},
        trace_seconds=traces,
    )


def expected_epochs(group: str, planned: int, patience: int | None, shares: dict[str, float]) -> int:
    """The epochs a phase is expected to run: all of them, but the head's, which early stopping ends.

    The head stops once its validation loss has not improved for ``patience`` epochs: in our runs
    (cats_dogs, aerial, cat_breeds, flowers) after 18 to 63 of its 200, about twice the patience and
    ten more. Earlier runs on this device replace that guess with the share of its epochs they ran.
    """
    if group != "head" or not patience:
        return planned
    if "head" in shares:
        return max(1, round(planned * shares["head"]))
    return min(planned, HEAD_EPOCHS_PER_PATIENCE * patience + 10)


def feature_speedup(config: TrainConfig, dataset: Dataset, throughput: Throughput) -> tuple[float, str]:
    """How much faster than the measured Keras pass the run's bottleneck features go, and on which runtime.

    Where an earlier run on this machine chose another runtime for the same backbone, weights and
    size (``tl_core.runtime``), its measured speed-up; else 1 (Keras, or a choice not measured yet).
    """
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import KERAS, MEASURE_FROM_IMAGES, backbone_identity, choice_file, remembered_choice

    if config.strategy == "from_scratch" or " GPU" in f" {throughput.device}" or len(dataset.records) < MEASURE_FROM_IMAGES:
        return 1.0, KERAS
    spec = get_backbone(config.backbone)
    size = config.image_size or spec.default_size
    try:
        identity = weights_identity(spec, config.weights or "imagenet")
    except OSError:  # a weights file gone: the run will say so
        return 1.0, KERAS
    choice = remembered_choice(choice_file(backbone_identity(spec, identity, size), config.cache_dir))
    if choice is None or choice.runtime == KERAS or not choice.speedup:
        return 1.0, KERAS
    return choice.speedup, choice.title


def model_parts(
    config: TrainConfig, dataset: Dataset, throughput: Throughput, frozen_layers: int | None = None, decode_seconds: float | None = None, mirrors: bool = True,
) -> tuple[dict, dict]:
    """The seconds of each step from the arithmetic alone, and the planned epochs of each phase of epochs (see ``estimate_run``).

    ``mirrors``: a first feature-extraction run is expected to go on to the mirror images (``mirrors_foreseen``).
    """
    from tl_core.data.decoded import decoded_images_key
    from tl_core.features import FeatureCache, feature_cache_key
    from tl_core.models.weights import weights_identity

    spec = get_backbone(config.backbone)
    size = config.image_size or spec.default_size
    counts = {split: len(dataset.split(split)) for split in ("train", "val", "test")}
    if config.max_train_images_per_class:
        counts["train"] = sum(min(count, config.max_train_images_per_class) for count in dataset.counts().get("train", {}).values())
    images = counts["train"] + counts["val"] + counts["test"]
    held_out = counts["test"] or counts["val"]
    forward = 1.0 / throughput.images_per_second
    cores = os.cpu_count() or 1
    strategy = config.strategy
    mirrored = config.mirrors
    gpu = " GPU" in f" {throughput.device}"
    parts: dict[str, float] = {"setup": SETUP_SECONDS}
    epochs: dict[str, int] = {}

    images_cached = decoded_images_cached(dataset.records, size, config.cache_dir, config.crops_centre)
    if not images_cached:
        per_image = decode_seconds if decode_seconds is not None else decode_seconds_per_image(dataset, size)
        parts["decode"] = images * per_image / cores
    if strategy != "from_scratch":
        weights = "none" if config.weights == "none" else "imagenet"
        key = feature_cache_key(spec, weights_identity(spec, weights), size, decoded_images_key(dataset.records, size, config.crops_centre))
        views = 1 + (strategy == "feature_extraction" and mirrored and (config.test_time_flip or (config.augment and not config.quick)))
        views = views if mirrors else 1  # foreseen not to pay: the run keeps its first model, on the images' own features
        deferred = False
        if not FeatureCache(config.cache_dir).path(key).exists():
            deferred = views == 2  # a first run: the head trains, then trains on with the mirror images where they pay
            parts["features"] = images * (1 if deferred else views) * forward / feature_speedup(config, dataset, throughput)[0]
            if deferred:  # one more pass per extra view: the mirror images, and the six turned views where turns keep the class
                parts[MIRROR_FEATURES] = parts["features"] * max(1, len(config.extra_feature_views))
            if "decode" in parts and gpu:  # a GPU runs the backbone while the CPU decodes; on a CPU both share its cores
                parts["decode"] = max(0.0, parts["decode"] - parts["features"])
        if strategy == "feature_extraction" and config.augment:
            parts["features"] = parts.get("features", 0.0) + config.augment_views * counts["train"] * forward
        head_epochs = config.epochs if strategy == "feature_extraction" else config.warmup_epochs
        if head_epochs:
            parts["head"] = head_epochs * counts["train"] * (1 if deferred else views) * HEAD_SECONDS_PER_FEATURE_EPOCH + HEAD_TRACE_SECONDS
            epochs["head"] = int(head_epochs) * (2 if deferred else 1)
            if deferred:  # as many epochs again, on the images and their mirror images
                parts[MIRROR_HEAD] = head_epochs * counts["train"] * (1 + max(1, len(config.extra_feature_views))) * HEAD_SECONDS_PER_FEATURE_EPOCH
    if strategy in IMAGE_TRAINING_STRATEGIES:
        if strategy == "fine_tune":
            frozen = frozen_layers if frozen_layers is not None else config.freeze_layers
            if frozen is None:
                frozen = default_freeze_layers(spec, list(layer_costs(config.backbone, size)[0]))
        else:
            frozen = 0
        share = trainable_share(config.backbone, size, frozen)
        augment = AUGMENT_SECONDS_PER_224_IMAGE * (size / 224) ** 2 if config.augment else 0.0
        backward = BACKWARD_FACTOR["GPU" if gpu else "CPU"]
        per_training_image = forward * (1 + backward * share) + augment
        parts[strategy] = TRACE_SECONDS + config.epochs * (counts["train"] * per_training_image + counts["val"] * forward)
        epochs[strategy] = int(config.epochs)
    flips = 1 + len(extra_views(True, bool(config.augmentation.turns))) if config.test_time_flip and mirrored else 1
    if strategy != "feature_extraction":
        parts["evaluate"] = TRACE_SECONDS + held_out * flips * forward
    parts["files"] = FILES_SECONDS
    formats = default_formats() if config.export_formats is None else config.export_formats
    if formats:
        parts["portable files"] = sum(PORTABLE_SECONDS[name] for name in formats)
    return parts, epochs
