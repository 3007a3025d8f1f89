"""Train a classifier from a folder of images with one of four strategies, then evaluate and export it.

``train(config)`` runs the workflow below, one function per phase over a shared
``RunContext``; each phase announces itself with a ``PhaseStarted`` event:

1. ``prepare``: check the settings, scan and split the data, find the device.
2. ``build_model``: backbone with its starting weights, a new head, one classifier.
3. ``read_images``: every image is decoded and resized once (cached on disk for
   later runs). On a first run that needs bottleneck features, the frozen
   backbone works on each batch as soon as it is decoded (phase ``features``).
4. ``train_model``:
   - ``features``: the frozen backbone's pooled outputs ("bottleneck features"),
     computed once and cached (with the mirror images' when they are used);
   - ``head``: a new head trained on the cached features. For feature
     extraction this is the whole training; for fine-tuning it is the warm-up
     that keeps a random head from wrecking the pretrained layers;
   - ``fine_tune`` / ``from_scratch``: backbone layers train on the images, with
     augmentation, at a low learning rate (or from random weights).
5. ``evaluate``: on the held-out split (averaged with the mirror image when
   test-time flipping is on).
6. ``export``: model files and reports.

The strategy ``auto`` is not resolved here: ``tl_core.recipes`` measures the
data first and hands this module a concrete strategy.

The run listens to a ``StopRequest`` after every batch; a stopped run keeps
the best weights of the epochs it completed and still evaluates and exports
them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tl_core.backbones import BackboneSpec, default_freeze_layers, get_backbone
from tl_core.cache import (
    DecodedImages,
    FeatureCache,
    Interrupted,
    cache_key,
    decode_images,
    decoded_images_cached,
    decoded_images_key,
    decoded_images_path,
    feature_cache_key,
    mirrored_feature_cache_key,
    store_decoded_images,
)
from tl_core.config import AUTO_STRATEGY, TrainConfig
from tl_core.data import Dataset, scan_dataset
from tl_core.device import DeviceInfo, detect_device, distribution_strategy
from tl_core.errors import ConfigError, TLError
from tl_core.estimate import Estimate, estimate_run, forward_throughput
from tl_core.evaluation import Evaluation, evaluate_predictions
from tl_core.events import (
    BatchEnded,
    EpochEnded,
    EventHandler,
    Notice,
    PhaseStarted,
    ProgressUpdated,
    StopRequest,
    TrainingFailed,
    TrainingFinished,
    TrainingStarted,
    TrainingStopped,
    ignore_event,
)
from tl_core.export import write_run_folder, write_text_atomically
from tl_core.fitting import (
    FEATURE_BATCH_SIZE,
    HeadTrainer,
    compiled_forward,
    current_learning_rate,
    fine_tune_schedule,
    pixel_batches,
)
from tl_core.models import (
    build_augmenter,
    build_backbone,
    build_classifier,
    build_head,
    check_weights_option,
    freeze_layers,
    trainable_parameter_count,
    unwrap_test_time_flip,
    weights_identity,
    with_test_time_flip,
)
from tl_core.portable import CHECK_IMAGES, FORMAT_TITLES, export_portable
from tl_core.rerun import IMAGES_FILE, EarlierRun, images_manifest, load_earlier_run

ORIGINAL, MIRRORED = "original", "mirrored"


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        status: ``"finished"`` or ``"stopped"``.
        run_dir: The run folder.
        evaluation: Metrics on the evaluation split (None when stopped before any epoch).
        history: One dict per completed epoch.
        summary: The contents of ``run.json``.
    """

    status: str
    run_dir: Path
    evaluation: Evaluation | None
    history: list[dict]
    summary: dict = field(default_factory=dict)


def train(config: TrainConfig, on_event: EventHandler = ignore_event, stop: StopRequest | None = None, notes: Sequence[str] = ()) -> RunResult:
    """Runs the whole workflow: check, decode, train, evaluate, export.

    Args:
        config: The run's settings, with a concrete strategy (``auto`` is resolved
            by ``tl_core.recipes.run_training``).
        on_event: Called with every event of the run (see ``tl_core.events``).
        stop: Set it (from any thread) to stop the run after the current batch.
        notes: How the settings were chosen (the advice behind ``auto``): shown as
            notices when the run starts and kept in ``run.json``.

    Returns:
        The run's result; the files are in ``config.out_dir``.

    Raises:
        TLError: For problems the user can fix (data, options, weights); a
            ``TrainingFailed`` event carries the same message.
    """
    run = RunContext(config, on_event, stop or StopRequest())
    try:
        return _workflow(run, notes)
    except TLError as error:
        record_failure(run, str(error))
        on_event(TrainingFailed(str(error), type(error).__name__))
        raise
    except Exception as error:
        record_failure(run, describe_failure(error))
        on_event(TrainingFailed(describe_failure(error), type(error).__name__))
        raise
    finally:
        keras.mixed_precision.set_global_policy("float32")


def record_failure(run: RunContext, message: str) -> None:
    """Leaves a ``run.json`` with the status ``failed`` and the message, so the run history shows what happened.

    Only for a run that had started (settings and data checked): a wrong path or option makes no run folder.
    """
    if run.device is None:
        return
    try:
        write_run_folder(Path(run.config.out_dir), summary={**run_summary(run, "failed", with_model=False), "error": message})
    except Exception:  # noqa: BLE001 - the failure itself is what the user must see; a folder that cannot take the record changes nothing
        return


def describe_failure(error: BaseException) -> str:
    """A message for an unexpected failure, with a suggestion where one is known."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
    if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)) or "out of memory" in text.lower():
        return f"{text}. The run ran out of memory: try a smaller batch size or image size."
    return text


def _workflow(run: RunContext, notes: Sequence[str]) -> RunResult:
    prepare(run)
    for note in notes:
        run.notice(note)
    try:
        with run.distribution.scope():  # models and optimizers made here are mirrored on every GPU
            build_model(run)
        read_images(run)
        train_model(run)
    except Interrupted:
        return finish_before_any_epoch(run)
    status = "stopped" if run.stop.requested else "finished"
    if status == "stopped":
        run.on_event(TrainingStopped(reason=run.stop.reason, epochs_done=len(run.history)))
    evaluation = run.timed("evaluate", evaluate_model, run)
    return export(run, status, evaluation)


# --------------------------------------------------------------------------- the run's shared state


@dataclass
class _Model:
    classifier: keras.Model
    feature_model: keras.Model
    backbone: keras.Model
    head: keras.Model
    frozen_layers: int = 0


@dataclass
class RunContext:
    """What the phases of one run share: the settings, the data, the model and what has happened so far."""

    config: TrainConfig
    on_event: EventHandler
    stop: StopRequest
    started: float = field(default_factory=time.perf_counter)
    history: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cache_use: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    spec: BackboneSpec | None = None
    weights: str = ""
    image_size: int = 0
    dataset: Dataset | None = None
    device: DeviceInfo | None = None
    distribution: object = field(default_factory=tf.distribute.get_strategy)
    model: _Model | None = None
    decoded: DecodedImages | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # ORIGINAL and, when used, MIRRORED
    estimate: Estimate | None = None
    exported: keras.Model | None = None  # the model the files hold, once trained (see exported_classifier)
    planned: int | None = None  # epochs in all, set when the last phase starts
    earlier: EarlierRun | None = None  # the run this one trains again from (config.from_run)
    reuse: dict = field(default_factory=dict)  # what was taken from it: images reused, new, removed
    warm_started: bool = False  # the whole classifier starts from the earlier run's trained weights
    _compiled: dict = field(default_factory=dict, repr=False)

    def timed(self, phase: str, work: Callable, *arguments, **keywords):
        """``work(*arguments, **keywords)``, its seconds added to ``phase``'s in ``run.json``."""
        start = time.perf_counter()
        try:
            return work(*arguments, **keywords)
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - start, 3)

    def notice(self, message: str) -> None:
        self.notes.append(message)
        self.on_event(Notice(message))

    def compiled(self, model: keras.Model, augmenter=None, mirror: bool = False) -> Callable:
        """``compiled_forward`` of ``model``, traced once per run for each (model, augmenter, mirror)."""
        key = (id(model), id(augmenter), mirror)
        if key not in self._compiled:
            self._compiled[key] = (model, augmenter, compiled_forward(model, self.image_size, augmenter=augmenter, mirror=mirror))  # holding the models keeps their ids theirs
        return self._compiled[key][2]

    def check_stop(self) -> None:
        if self.stop.requested:
            raise Interrupted(self.stop.reason)

    @property
    def planned_epochs(self) -> int:
        """Epochs the run expects in all; once the images train, the warm-up's early end is known and counted."""
        if self.planned is not None:
            return self.planned
        config = self.config
        return config.epochs + (config.warmup_epochs if config.strategy in ("fine_tune", "full_fine_tune") else 0)

    @property
    def mirror_images(self) -> bool:
        """Whether mirror images make sense for this data: the augmentation flips left to right."""
        return self.config.augmentation.flip in ("horizontal", "horizontal_and_vertical")

    @property
    def test_time_flip(self) -> bool:
        return self.config.test_time_flip and self.mirror_images

    @property
    def needs_mirrored_features(self) -> bool:
        """Feature extraction uses the mirror images' features as a training view and to average its predictions.

        The quick recipe skips them unless test-time flip is asked for: one pass of the backbone per image.
        """
        if self.config.strategy != "feature_extraction" or not self.mirror_images:
            return False
        return self.test_time_flip or (self.config.augment and not self.config.quick)


# --------------------------------------------------------------------------- 1. prepare


def prepare(run: RunContext) -> None:
    """Checks the settings, scans and splits the data, seeds everything and announces the run."""
    config = run.config = run.config.validated()
    if config.strategy == AUTO_STRATEGY:
        raise ConfigError("strategy 'auto' is resolved before training: call tl_core.recipes.run_training (the command line and the app do).")
    spec = run.spec = get_backbone(config.backbone)
    run.image_size = config.image_size or spec.default_size
    if run.image_size < spec.min_size:
        raise ConfigError(f"image_size is {run.image_size} but {spec.display_name} needs at least {spec.min_size} pixels. Use --image-size {max(spec.min_size, 96)} or more.")
    dataset = run.timed("scan", scan_dataset, config.data_dir, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    if config.max_train_images_per_class:
        dataset = subsample_training_split(dataset, config.max_train_images_per_class, config.seed)
    if config.from_run:
        run.earlier = load_earlier_run(config.from_run)
        dataset = dataset.with_earlier_splits(run.earlier.splits)
    run.dataset = dataset
    run.weights = "none" if config.strategy == "from_scratch" else check_weights_option(config.weights)
    keras.utils.set_random_seed(config.seed)
    run.device = detect_device()
    run.on_event(TrainingStarted(config=config.to_dict(), device=run.device.to_dict(), class_names=dataset.class_names, counts=dataset.counts()))
    for group in dataset.duplicate_groups():
        if group.kind != "same class":
            run.notice(f"Duplicate images ({group.kind}): {', '.join(group.paths)}. See the dataset summary.")
    if run.device.mixed_precision:
        keras.mixed_precision.set_global_policy(run.device.mixed_precision)
    run.distribution = distribution_strategy(run.device)
    if run.distribution.num_replicas_in_sync > 1:
        run.notice(f"Training on {run.distribution.num_replicas_in_sync} GPUs at once: each holds a copy of the model and takes an equal share of every batch.")
    throughput = forward_throughput(spec.name, run.image_size, run.device.key, cache_dir=None)
    run.estimate = estimate_run(config, dataset, throughput)
    run.notice(f"Estimated time: {run.estimate.describe()} ({run.estimate.basis}; early stopping can make it shorter).")


# --------------------------------------------------------------------------- 2. build the model


def build_model(run: RunContext) -> None:
    """Backbone (with its starting weights), a new head and the classifier joining them."""
    config, spec = run.config, run.spec
    backbone = run.timed("build", build_backbone, spec, run.weights)
    head = build_head(spec.feature_dim, run.dataset.num_classes, config.head_units, config.dropout, seed=config.seed)
    classifier, feature_model = build_classifier(spec, backbone, head, run.image_size, backbone_in_inference_mode=config.strategy != "from_scratch")
    run.model = _Model(classifier, feature_model, backbone, head)
    if run.earlier is not None:
        warm_start(run)


def warm_start(run: RunContext) -> None:
    """Trained again: start from the earlier run's trained weights when the classes and the model's shape are the same.

    Feature extraction takes the earlier head (the backbone is the frozen ImageNet one either way). Strategies that
    train backbone layers take the whole classifier, so fine-tuning goes on from where the earlier run ended and the
    head's warm-up is skipped (the head is trained already).
    """
    from tl_core.export import load_run

    earlier, whole = run.earlier, run.config.strategy != "feature_extraction"
    what = "model" if whole else "head"
    if earlier.class_names != run.dataset.class_names:
        run.notice(f"The classes differ from the earlier run's ({', '.join(earlier.class_names)}), so the {what} starts from new weights.")
        return
    try:
        trained = unwrap_test_time_flip(load_run(earlier.run_dir).model)
        if whole:
            run.model.classifier.set_weights(trained.get_weights())
        else:
            run.model.head.set_weights(trained.layers[-1].get_weights())
    except (TLError, ValueError) as error:
        run.notice(f"The {what} starts from new weights: the earlier run's could not be used ({' '.join(str(error).split())[:200]}).")
        return
    run.warm_started = whole
    if whole:
        run.notice(f"The model starts from the trained weights of the earlier run '{earlier.run_dir.name}' (backbone and head), so the head's warm-up is skipped.")
    else:
        run.notice(f"The head starts from the weights of the earlier run '{earlier.run_dir.name}'.")


# --------------------------------------------------------------------------- 3. read the images


def read_images(run: RunContext) -> None:
    """Decodes the images; on a first run that needs features, runs the frozen backbone while they are read.

    Threads decode ahead of the backbone, which takes each batch of 64 as soon
    as it is complete, so on a first run decoding adds little to the forward pass.
    """
    config, dataset, size = run.config, run.dataset, run.image_size
    total = len(dataset.records)
    cache = FeatureCache(config.cache_dir)
    keys = _feature_keys(run, decoded_images_key(dataset.records, size))
    if run.earlier is not None and read_images_reusing(run):
        return
    if config.strategy == "from_scratch" or run.warm_started or decoded_images_cached(dataset.records, size, config.cache_dir) or cache.path(keys[ORIGINAL]).exists():
        run.decoded = _decode(run)
        return
    views, what = _feature_views(run)
    run.on_event(PhaseStarted("features", f"Reading {total} images and computing their {what} with the frozen {run.spec.display_name} as they arrive", total=total))
    forwards = {view: run.compiled(run.model.feature_model, mirror=view == MIRRORED) for view in views}
    features = {view: np.zeros((total, run.spec.feature_dim), dtype=np.float32) for view in views}
    extracted = []

    def extract(start: int, stop: int, pixels: np.ndarray) -> None:
        run.check_stop()
        batch = np.asarray(pixels)
        for view, forward in forwards.items():
            features[view][start:stop] = forward(batch).numpy()
        extracted.append(stop - start)
        run.on_event(ProgressUpdated("features", stop, total))

    # One decoding thread per core: measured on 2 cores, more threads only take turns away from the backbone.
    decoded = run.timed("features", _decode_images, run, on_chunk=extract, workers=os.cpu_count() or 1)
    _report_decoded(run, decoded)
    run.decoded = decoded
    if sum(extracted) == total:  # else another process cached the images meanwhile: features are computed the usual way
        run.cache_use["features"] = "miss"
        for view in views:
            cache.save(keys[view], features[view])
        run.features = features


def read_images_reusing(run: RunContext) -> bool:
    """Training again: the unchanged images' pixels and features come from the earlier run's cache entries.

    Only new or changed images are decoded and go through the backbone. Returns
    False (nothing done, the usual path follows) when the earlier entries are
    gone from the cache or were made at another image size.
    """
    config, dataset, size, earlier = run.config, run.dataset, run.image_size, run.earlier
    name = earlier.run_dir.name
    earlier_path = decoded_images_path(str(earlier.cache_keys.get("images", "")), config.cache_dir)
    if earlier.summary.get("image_size") != size or not earlier_path.is_file():
        why = f"it used {earlier.summary.get('image_size')} px" if earlier.summary.get("image_size") != size else "its decoded images are no longer in the cache"
        run.notice(f"Nothing reused from the earlier run '{name}' ({why}): every image is read again.")
        return False
    records, total = dataset.records, len(dataset.records)
    if total * size * size * 3 > config.memory_budget_mb * 1024**2:
        run.notice(f"Nothing reused from the earlier run '{name}': {total:,} images at {size} px exceed the memory budget; every image is read again.")
        return False
    earlier_pixels = np.load(earlier_path, mmap_mode="r")
    reused, earlier_rows, new = [], [], []
    for index, record in enumerate(records):
        entry = earlier.images.get(record.path)
        unchanged = entry is not None and entry["size"] == record.file_size and entry["mtime"] == record.modified_ns and entry["row"] < len(earlier_pixels)
        if unchanged:
            reused.append(index)
            earlier_rows.append(entry["row"])
        else:
            new.append(index)
    removed = len(set(earlier.images) - {record.path for record in records})
    pixels = np.zeros((total, size, size, 3), dtype=np.uint8)
    order = np.argsort(earlier_rows)  # read the earlier entry front to back
    pixels[np.asarray(reused, dtype=np.int64)[order]] = earlier_pixels[np.asarray(earlier_rows, dtype=np.int64)[order]]
    failed = []
    if new:
        run.on_event(PhaseStarted("decode", f"Reading and resizing the {len(new)} new or changed images to {size}x{size}", total=len(new)))
        added = run.timed(
            "decode", decode_images, [records[index] for index in new], size, cache_dir=config.cache_dir,
            memory_budget_bytes=config.memory_budget_mb * 1024**2, stop=run.stop, on_progress=lambda done, count: run.on_event(ProgressUpdated("decode", done, count)),
        )
        pixels[new] = added.pixels
        failed = added.failed
    run.decoded = store_decoded_images(records, size, pixels, failed, config.cache_dir)
    _report_decoded(run, run.decoded)
    run.cache_use["images"] = "reused from the earlier run" if not new else "partly reused from the earlier run"
    through_backbone = 0
    if config.strategy != "from_scratch" and not run.warm_started:  # a warm-started model needs no features: it has no warm-up
        through_backbone = _features_reusing(run, reused, earlier_rows, new)
    run.reuse = {"earlier_run": str(earlier.run_dir), "reused": len(reused), "new": len(new), "removed": removed, "through_backbone": through_backbone}
    run.notice(
        f"Trained again from '{name}': {len(reused):,} images reused (pixels and features), {len(new):,} new or changed "
        f"(decoded{' and run through the backbone' if through_backbone else ''}), {removed:,} no longer in the data."
    )
    return True


def _features_reusing(run: RunContext, reused: list[int], earlier_rows: list[int], new: list[int]) -> int:
    """Features of every image: the reused images' from the earlier run's entries when the backbone is the same; returns the images the backbone ran on."""
    cache, earlier, total = FeatureCache(run.config.cache_dir), run.earlier, run.decoded.pixels.shape[0]
    same_backbone = earlier.summary.get("weights") == weights_identity(run.spec, run.weights)
    views, what = _feature_views(run)
    earlier_keys = {ORIGINAL: earlier.cache_keys.get("features"), MIRRORED: earlier.cache_keys.get("mirrored")}
    before = {view: cache.load(earlier_keys[view]) if same_backbone and earlier_keys[view] else None for view in views}
    work = {view: np.arange(total) if before[view] is None else np.asarray(new, dtype=np.int64) for view in views}
    count = sum(len(rows) for rows in work.values())
    run.on_event(PhaseStarted("features", f"Computing the {what} of {len(work[ORIGINAL])} images with the frozen {run.spec.display_name}", total=count))
    keys = _feature_keys(run, run.decoded.key)
    features, done = {}, 0
    for view in views:
        array = np.zeros((total, run.spec.feature_dim), dtype=np.float32)
        if before[view] is not None:
            array[reused] = before[view][earlier_rows]
        if len(work[view]):
            array[work[view]] = run.timed("features", forward_batches, run, run.model.feature_model, work[view], "features", mirror=view == MIRRORED, progress_offset=done)
            done += len(work[view])
        cache.save(keys[view], array)
        features[view] = array
    run.features = features
    run.cache_use["features"] = "partly reused from the earlier run" if count < total * len(views) else "miss"
    return len(work[ORIGINAL])


def _feature_views(run: RunContext) -> tuple[list[str], str]:
    """The feature views a run needs (the images, and their mirror images when used) and their name in words."""
    if run.needs_mirrored_features:
        return [ORIGINAL, MIRRORED], "bottleneck features (and those of their mirror images)"
    return [ORIGINAL], "bottleneck features"


def _feature_keys(run: RunContext, images_key: str) -> dict[str, str]:
    identity = weights_identity(run.spec, run.weights)
    original = feature_cache_key(run.spec, identity, run.image_size, images_key)
    return {ORIGINAL: original, MIRRORED: mirrored_feature_cache_key(original)}


def _decode(run: RunContext) -> DecodedImages:
    total = len(run.dataset.records)
    run.on_event(PhaseStarted("decode", f"Reading and resizing {total} images to {run.image_size}x{run.image_size}", total=total))

    def progress(done: int, total: int) -> None:
        run.on_event(ProgressUpdated("decode", done, total))

    decoded = run.timed("decode", _decode_images, run, on_progress=progress)
    _report_decoded(run, decoded)
    return decoded


def _decode_images(run: RunContext, **callbacks) -> DecodedImages:
    config = run.config
    return decode_images(
        run.dataset.records, run.image_size, cache_dir=config.cache_dir, memory_budget_bytes=config.memory_budget_mb * 1024**2, stop=run.stop, chunk_rows=FEATURE_BATCH_SIZE, **callbacks
    )


def _report_decoded(run: RunContext, decoded: DecodedImages) -> None:
    run.cache_use["images"] = "hit" if decoded.from_cache else "miss"
    where = "memory" if decoded.in_memory else "disk (memory-mapped: larger than the memory budget)"
    run.notice(f"Decoded images {'reused from the cache' if decoded.from_cache else 'cached'}; held in {where}.")
    for item in decoded.failed:
        run.notice(f"Skipped {item.path}: {item.reason}")
    run.dataset = run.dataset.without(decoded.failed)


# --------------------------------------------------------------------------- 4. train


def train_model(run: RunContext) -> None:
    """Trains as the strategy says: head only, head then backbone layers, or everything from random weights."""
    strategy, model = run.config.strategy, run.model
    if strategy == "from_scratch":
        freeze_layers(model.backbone, 0, train_batchnorm=True)
        model.frozen_layers = 0
        fit_on_images(run, run.config.learning_rate, run.config.epochs, "from_scratch")
        return
    if run.warm_started:  # the earlier run's trained model: fine-tuning goes on from it
        unfreeze(run)
        fit_on_images(run, run.config.backbone_learning_rate, run.config.epochs, "fine_tune")
        return
    compute_features(run)
    head_epochs = run.config.epochs if strategy == "feature_extraction" else run.config.warmup_epochs
    model.backbone.trainable = False
    model.frozen_layers = len(model.backbone.layers)
    if head_epochs:
        fit_head(run, head_epochs)
    if strategy == "feature_extraction" or run.stop.requested:
        return
    unfreeze(run)
    fit_on_images(run, run.config.backbone_learning_rate, run.config.epochs, "fine_tune")


def compute_features(run: RunContext) -> None:
    """Pooled backbone outputs for every image (and its mirror image when used), from the cache when they were computed before."""
    if run.features:  # computed while the images were read
        return
    cache = FeatureCache(run.config.cache_dir)
    keys = _feature_keys(run, run.decoded.key)
    views, what = _feature_views(run)
    total = run.decoded.pixels.shape[0]
    cached = {view: cache.load(keys[view]) for view in views}
    missing = [view for view in views if cached[view] is None]
    run.on_event(PhaseStarted("features", f"Computing {what} of {total} images with the frozen {run.spec.display_name}", total=total * max(len(missing), 1)))
    for number, view in enumerate(missing):
        cached[view] = run.timed("features", forward_batches, run, run.model.feature_model, np.arange(total), "features", mirror=view == MIRRORED, progress_offset=number * total)
        cache.save(keys[view], cached[view])
    run.features = cached
    run.cache_use["features"] = "miss" if missing else "hit"
    if not missing:
        run.on_event(ProgressUpdated("features", total, total))
        run.notice("Bottleneck features reused from the cache: the backbone did not run again.")


def forward_batches(
    run: RunContext, feature_model: keras.Model, rows: np.ndarray, phase: str, augmenter=None, mirror: bool = False, progress_offset: int = 0
) -> np.ndarray:
    """Runs ``feature_model`` over the given rows of the decoded images in compiled batches, checking for a stop request.

    Batches are gathered straight from the (in-memory or memory-mapped) array:
    copying 64 images takes milliseconds against the forward pass's hundreds,
    and an input pipeline's threads would only compete with the model for the cores.
    """
    pixels = run.decoded.pixels
    forward = run.compiled(feature_model, augmenter, mirror)
    outputs = np.zeros((len(rows), feature_model.output_shape[-1]), dtype=np.float32)
    total = progress_offset + len(rows)
    for start in range(0, len(rows), FEATURE_BATCH_SIZE):
        run.check_stop()
        stop = min(start + FEATURE_BATCH_SIZE, len(rows))
        outputs[start:stop] = forward(pixels[rows[start:stop]]).numpy()
        run.on_event(ProgressUpdated(phase, progress_offset + stop, max(total, progress_offset + len(rows))))
    return outputs


def fit_head(run: RunContext, epochs: int) -> None:
    """Trains the head on cached features: the whole of feature extraction, or the warm-up before fine-tuning."""
    config, model = run.config, run.model
    rows, labels = split_rows(run)
    train_rows, train_labels = rows["train"], labels["train"]
    train_x = run.features[ORIGINAL][train_rows]
    views = []
    if config.strategy == "feature_extraction" and config.augment:
        extra = []
        if MIRRORED in run.features:
            views.append(run.features[MIRRORED][train_rows])
            extra.append("their mirror images")
        if config.augment_views:
            views += augmented_views(run, train_rows)
            extra.append(f"{config.augment_views} randomly augmented cop{'y' if config.augment_views == 1 else 'ies'}")
        if views:
            run.notice(f"The head trains on the training images and {' and '.join(extra)} ({len(train_labels) * (1 + len(views)):,} feature vectors).")
        else:
            run.notice(
                "Augmentation is not applied: feature extraction trains on cached features, which are computed once, and this augmentation "
                "does not mirror images. Cache augmented copies with --augment-views N, or fine-tune to augment every epoch."
            )
    train_x = np.concatenate([train_x, *views]) if views else train_x
    train_y = np.concatenate([train_labels] * (1 + len(views)))
    description = "Training the new head on cached features" if config.strategy == "feature_extraction" else "Warming up the new head on cached features (backbone frozen)"
    run.on_event(PhaseStarted("head", description, total=epochs))
    bridge = EventBridge(run, "head", model.head, math.ceil(len(train_y) / config.batch_size))
    with run.distribution.scope():
        trainer = HeadTrainer(model.head, config.learning_rate, config.batch_size, class_weights(run, train_labels), seed=config.seed, label_smoothing=config.label_smoothing)
    validation = (run.features[ORIGINAL][rows["val"]], labels["val"])
    run.timed("head", trainer.fit, train_x, train_y, validation, epochs, len(run.history), bridge)
    bridge.restore_best()


def augmented_views(run: RunContext, train_rows: np.ndarray) -> list[np.ndarray]:
    """Features of ``augment_views`` randomly changed copies of the training images (cached)."""
    config, spec = run.config, run.spec
    views = []
    cache = FeatureCache(config.cache_dir)
    for view in range(config.augment_views):
        key = cache_key(
            "augmented-features-v1", spec.name, sorted(spec.constructor_kwargs.items()), weights_identity(spec, run.weights), run.image_size, run.decoded.key,
            sorted(config.augmentation.to_dict().items()), config.seed, view, train_rows.tobytes(),
        )
        cached = cache.load(key)
        if cached is None:
            run.on_event(PhaseStarted("features", f"Computing features of augmented view {view + 1}/{config.augment_views} of the training images", total=len(train_rows)))
            augmenter = build_augmenter(config.augmentation, seed=config.seed * 1000 + view)
            cached = run.timed("features", forward_batches, run, run.model.feature_model, train_rows, "features", augmenter)
            cache.save(key, cached)
        views.append(cached)
    return views


def unfreeze(run: RunContext) -> None:
    """Unfreezes the backbone after the freeze depth (every layer for full fine-tuning); BatchNorm stays frozen."""
    spec, model = run.spec, run.model
    frozen = 0 if run.config.strategy == "full_fine_tune" else freeze_depth(run)
    freeze_layers(model.backbone, frozen)
    model.frozen_layers = frozen
    run.notice(
        f"Fine-tuning {spec.display_name}: first {frozen} of {len(model.backbone.layers)} layers frozen, "
        f"{trainable_parameter_count(model.classifier):,} parameters train at learning rate {run.config.backbone_learning_rate:g}"
        f"{' (warm-up, then cosine decay)' if run.config.learning_rate_schedule == 'cosine' else ''}; BatchNormalization layers stay in inference mode."
    )


def freeze_depth(run: RunContext) -> int:
    backbone, spec, given = run.model.backbone, run.spec, run.config.freeze_layers
    if given is not None:
        if given > len(backbone.layers):
            raise ConfigError(f"freeze_layers is {given} but {spec.display_name} has {len(backbone.layers)} layers. Use a number from 0 to {len(backbone.layers)}.")
        return given
    return default_freeze_layers(spec, [layer.name for layer in backbone.layers])


def fit_on_images(run: RunContext, learning_rate: float, epochs: int, phase: str) -> None:
    """Trains the classifier on (augmented) images with ``fit``: fine-tuning, or training from scratch."""
    config, model = run.config, run.model
    rows, labels = split_rows(run)
    augmenter = build_augmenter(config.augmentation, seed=config.seed) if config.augment else None
    pixels = run.decoded.pixels
    train_data = pixel_batches(pixels, rows["train"], labels["train"], config.batch_size, shuffle_seed=config.seed, augmenter=augmenter)
    val_data = pixel_batches(pixels, rows["val"], labels["val"], config.batch_size)
    description = {
        "fine_tune": "Fine-tuning the unfrozen backbone layers and the head on the images",
        "from_scratch": "Training the whole network from random weights on the images",
    }[phase]
    run.planned = len(run.history) + epochs  # a warm-up that stopped early no longer counts its unused epochs
    run.on_event(PhaseStarted(phase, description + (" (augmented)" if augmenter is not None else ""), total=epochs))
    steps = math.ceil(len(rows["train"]) / config.batch_size)
    with run.distribution.scope():
        optimizer = keras.optimizers.Adam(fine_tune_schedule(learning_rate, steps, epochs, config.learning_rate_schedule))
        # Plain cross-entropy is reported alongside, so validation losses compare across phases whatever the smoothing.
        loss = keras.losses.SparseCategoricalCrossentropy() if not config.label_smoothing else _SmoothedSparseCrossentropy(config.label_smoothing)
        model.classifier.compile(optimizer=optimizer, loss=loss, metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy")])
    bridge = EventBridge(run, phase, model.classifier, steps)
    run.timed(
        phase,
        model.classifier.fit,
        train_data,
        epochs=len(run.history) + epochs,
        initial_epoch=len(run.history),
        validation_data=val_data,
        class_weight=class_weights(run, labels["train"]),
        callbacks=[bridge],
        verbose=0,
    )
    bridge.restore_best()


class _SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels with label smoothing (Keras' sparse loss has no smoothing option)."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_cross_entropy") -> None:
        super().__init__(name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        targets = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)


def class_weights(run: RunContext, train_labels: np.ndarray) -> dict[int, float] | None:
    if not run.config.class_weights:
        return None
    counts = np.bincount(train_labels, minlength=run.dataset.num_classes)
    weights = {index: float(len(train_labels) / (run.dataset.num_classes * count)) for index, count in enumerate(counts) if count}
    if "class_weights" not in run.cache_use:
        run.cache_use["class_weights"] = "on"
        run.notice("Class weights: " + ", ".join(f"{index}: {weight:.2f}" for index, weight in weights.items()))
    return weights


def split_rows(run: RunContext) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Rows of each split in the decoded images, and their labels."""
    dataset, decoded = run.dataset, run.decoded
    labels = np.array([record.label for record in dataset.records], dtype=np.int64)
    rows = {name: decoded.rows(dataset.split(name)) for name in ("train", "val", "test")}
    positions = {name: np.array([index for index, record in enumerate(dataset.records) if record.split == name], dtype=np.int64) for name in rows}
    return rows, {name: labels[positions[name]] for name in rows}


class EventBridge(keras.callbacks.Callback):
    """Turns Keras callbacks into engine events, watches for stop requests and keeps the best weights.

    The best epoch is the one with the lowest validation loss over the whole
    run (phases included), so a fine-tuning phase that never beats its warm-up
    leaves the warm-up's head in place.
    """

    def __init__(self, run: RunContext, phase: str, target: keras.Model, batches: int) -> None:
        super().__init__()
        self.run = run
        self.phase = phase
        self.target = target
        self.batches = batches
        self.best_weights = target.get_weights()  # the starting point counts until an epoch beats it
        self.epochs_without_improvement = 0
        self.epoch_started = 0.0
        self.last_batch_event = 0.0
        self.batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        self.batch = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batch = batch + 1
        now = time.perf_counter()
        if now - self.last_batch_event >= 0.2 or self.batch == self.batches:
            self.last_batch_event = now
            metrics = {name: float(value) for name, value in (logs or {}).items() if name in ("loss", "accuracy", "cross_entropy")}
            self.run.on_event(BatchEnded(self.phase, len(self.run.history) + 1, self.batch, self.batches, metrics))
        if self.run.stop.requested:
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.run.stop.requested:
            self.model.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        if run.stop.requested:
            run.notice(f"Stopped during epoch {len(run.history) + 1} after {self.batch} of {self.batches} batches; that epoch is not counted.")
            return
        logs = {name: float(value) for name, value in (logs or {}).items()}
        seconds = time.perf_counter() - self.epoch_started
        # fit reports the smoothed training loss as "loss" when label smoothing is on; plain cross-entropy is "cross_entropy".
        entry = {
            "epoch": len(run.history) + 1,
            "phase": self.phase,
            "loss": logs.get("cross_entropy", logs.get("loss")),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_cross_entropy", logs.get("val_loss")),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": current_learning_rate(self.target.optimizer) if getattr(self.target, "optimizer", None) is not None else run.config.learning_rate,
            "seconds": round(seconds, 3),
        }
        run.history.append(entry)
        metrics = {key: value for key, value in entry.items() if key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        run.on_event(EpochEnded(self.phase, entry["epoch"], max(run.planned_epochs, entry["epoch"]), metrics, seconds))
        val_loss = entry["val_loss"] if entry["val_loss"] is not None else math.inf
        if val_loss < run.best_loss:
            run.best_loss, run.best_epoch = val_loss, entry["epoch"]
            self.best_weights = self.target.get_weights()
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            patience = run.config.early_stopping_patience
            if patience and self.epochs_without_improvement >= patience:
                self.model.stop_training = True
                run.notice(f"Early stopping: validation loss has not improved for {patience} epochs; keeping epoch {run.best_epoch} (val_loss {run.best_loss:.4f}).")

    def restore_best(self) -> None:
        self.target.set_weights(self.best_weights)


# --------------------------------------------------------------------------- 5. evaluate


def evaluate_model(run: RunContext) -> Evaluation:
    """Accuracy and the rest on the held-out split; averaged over the mirror image when test-time flipping is on."""
    dataset, model = run.dataset, run.model
    split = dataset.evaluation_split
    records = dataset.split(split)
    rows = run.decoded.rows(records)
    flipped = " and their mirror images (test-time flip)" if run.test_time_flip else ""
    run.on_event(PhaseStarted("evaluate", f"Evaluating on the {split} split ({len(records)} images{flipped})", total=len(records)))
    if run.features and run.config.strategy == "feature_extraction":
        probabilities = model.head.predict(run.features[ORIGINAL][rows], batch_size=256, verbose=0)
        if run.test_time_flip:
            probabilities = (probabilities + model.head.predict(run.features[MIRRORED][rows], batch_size=256, verbose=0)) / 2
    else:
        # Compiled once, batches sliced from the decoded images: eager calls of the model were several times slower.
        probabilities = forward_batches(run, exported_classifier(run), rows, "evaluate")
    return evaluate_predictions(
        [record.label for record in records],
        np.asarray(probabilities, dtype=np.float64),
        dataset.class_names,
        [record.path for record in records],
    )


def exported_classifier(run: RunContext) -> keras.Model:
    """The model that goes into the files (built once per run): float32, and averaged over the mirror image when test-time flipping is on."""
    if run.exported is None:
        classifier = _float32_copy(run) if run.device.mixed_precision else run.model.classifier
        if run.test_time_flip:
            run.exported = with_test_time_flip(classifier, run.image_size)
        else:
            # A new, uncompiled model over the same layers: the file then carries no training settings to restore.
            run.exported = keras.Model(classifier.inputs, classifier.outputs, name=classifier.name)
    return run.exported


def _float32_copy(run: RunContext) -> keras.Model:
    """The trained model rebuilt in float32 (mixed precision is for training speed, not for the file)."""
    keras.mixed_precision.set_global_policy("float32")
    spec, config = run.spec, run.config
    backbone = build_backbone(spec, "none")
    head = build_head(spec.feature_dim, run.dataset.num_classes, config.head_units, config.dropout)
    classifier, _ = build_classifier(spec, backbone, head, run.image_size, backbone_in_inference_mode=config.strategy != "from_scratch")
    classifier.set_weights(run.model.classifier.get_weights())
    return classifier


# --------------------------------------------------------------------------- 6. export


def export(run: RunContext, status: str, evaluation: Evaluation) -> RunResult:
    out_dir = Path(run.config.out_dir)
    model = exported_classifier(run)
    summary = run_summary(run, status)
    run.on_event(PhaseStarted("export", "Saving model.h5, model.keras, labels.json and reports"))
    run.timed("export", write_run_folder, out_dir, summary, model, run.dataset.class_names, evaluation, run.history)
    write_text_atomically(out_dir / IMAGES_FILE, json.dumps(images_manifest(run.dataset.records, run.decoded.row_of)))
    if run.config.export_formats:
        summary.update(run.timed("export", export_portable_files, run, model))
    summary["seconds"] = {**run.seconds, "total": round(time.perf_counter() - run.started, 3)}
    write_run_folder(out_dir, summary=summary)
    run.on_event(TrainingFinished(status=status, run_dir=str(out_dir), test_accuracy=evaluation.accuracy, seconds=time.perf_counter() - run.started))
    return RunResult(status, out_dir, evaluation, run.history, summary)


def export_portable_files(run: RunContext, model: keras.Model) -> dict:
    """Writes the TFLite and ONNX files asked for, each checked on held-out images; returns what ``run.json`` records."""
    formats = run.config.export_formats
    titles = " and ".join(dict.fromkeys(FORMAT_TITLES[name].split(",")[0] for name in formats))
    records = run.dataset.split(run.dataset.evaluation_split)[:CHECK_IMAGES]
    run.on_event(PhaseStarted("export", f"Converting the model to {titles} and checking the files on {len(records)} held-out images"))
    pixels = run.decoded.pixels[run.decoded.rows(records)]
    checks = export_portable(model, run.config.out_dir, formats, pixels, f"{run.dataset.evaluation_split} images")
    for check in checks:
        if not check.ok:
            run.notice(f"{check.file} not written: {check.message}")
    return {
        "exports": {check.format: check.to_dict() for check in checks},
        "export_check_images": [record.path for record in records],
    }


def finish_before_any_epoch(run: RunContext) -> RunResult:
    """A stop before training began: only ``run.json`` is written, and no model."""
    out_dir = Path(run.config.out_dir)
    run.on_event(TrainingStopped(reason=run.stop.reason, epochs_done=len(run.history)))
    summary = run_summary(run, "stopped", with_model=False)
    write_run_folder(out_dir, summary=summary)
    run.on_event(TrainingFinished(status="stopped", run_dir=str(out_dir), test_accuracy=None, seconds=time.perf_counter() - run.started))
    return RunResult("stopped", out_dir, None, run.history, summary)


def _cache_keys(run: RunContext) -> dict:
    """The cache entries holding this run's decoded images and features (``images.json`` gives each image's row)."""
    if run.decoded is None:
        return {}
    keys = _feature_keys(run, run.decoded.key)
    return {"images": run.decoded.key, "features": keys[ORIGINAL] if ORIGINAL in run.features else None, "mirrored": keys[MIRRORED] if MIRRORED in run.features else None}


def run_summary(run: RunContext, status: str, with_model: bool = True) -> dict:
    """The contents of ``run.json``: settings, data, model, device, what was cached, notes and versions."""
    import PIL
    import sklearn

    config, spec, dataset, model = run.config, run.spec, run.dataset, run.model if with_model else None
    data_summary = dataset.summary()
    return {
        "status": status,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "backbone": {"name": spec.name, "display_name": spec.display_name, "parameters": spec.parameters, "preprocessing": spec.preprocessing},
        "image_size": run.image_size,
        "weights": weights_identity(spec, run.weights),
        "strategy": config.strategy,
        "test_time_flip": run.test_time_flip,
        "frozen_layers": None if model is None else model.frozen_layers,
        "backbone_layers": None if model is None else len(model.backbone.layers),
        "trainable_parameters": None if model is None else trainable_parameter_count(model.classifier),
        "best_epoch": run.best_epoch or None,
        "estimate": run.estimate.to_dict() if run.estimate else None,
        "device": run.device.to_dict(),
        "data": {
            "root": str(dataset.root),
            "fingerprint": dataset.fingerprint(),
            "class_names": dataset.class_names,
            "counts": dataset.counts(),
            "split_source": dataset.split_source,
            "split_fractions": dataset.split_fractions,
            "evaluation_split": dataset.evaluation_split,
            "selection_split": "val",  # early stopping and the kept epoch look at validation loss only
            "seed": dataset.seed,
        },
        "skipped": [{"path": item.path, "reason": item.reason} for item in dataset.skipped],
        "duplicates": data_summary.get("duplicates", []),
        "label_decisions": data_summary.get("label_decisions") or None,
        "suspicious": data_summary.get("suspicious", []),
        "cache": dict(run.cache_use),
        "cache_keys": _cache_keys(run),
        "from_run": run.reuse or None,
        "notes": list(run.notes),
        "history": list(run.history),
        "seconds": {**run.seconds, "total": round(time.perf_counter() - run.started, 3)},
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }


# --------------------------------------------------------------------------- helpers other modules use


def subsample_training_split(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """Keeps at most ``per_class`` training images of each class (seeded); validation and test stay whole."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    kept = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.split == "train" and record.class_name == name]
        kept.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    others = [record for record in dataset.records if record.split != "train"]
    return replace(dataset, records=sorted(kept + others, key=lambda record: record.relative_path))
