"""Train a classifier from a folder of images with one of four strategies, then evaluate and export it.

A run goes through named phases, each announced with a ``PhaseStarted`` event:

1. ``decode``: every image is decoded and resized once (cached on disk for later runs).
2. ``features``: for the strategies that start from a frozen pretrained backbone,
   its pooled outputs ("bottleneck features") are computed once and cached. On a
   first run both caches are empty, and the two phases run as one ``features``
   phase: the backbone works on each batch of images as soon as it is decoded.
3. ``head``: a new head is trained on the cached features. For feature
   extraction this is the whole training; for fine-tuning it is the warm-up
   that keeps a random head from wrecking the pretrained layers.
4. ``fine_tune`` / ``from_scratch``: backbone layers train on the images, with
   augmentation, at a low learning rate (or from random weights).
5. ``evaluate`` and ``export``.

The run listens to a ``StopRequest`` after every batch; a stopped run keeps
the best weights of the epochs it completed and still evaluates and exports
them.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tl_core.backbones import BackboneSpec, blocks_from_layer_names, get_backbone
from tl_core.cache import FeatureCache, Interrupted, cache_key, decode_images, decoded_images_cached, decoded_images_key
from tl_core.config import AUTO_STRATEGY, TrainConfig
from tl_core.data import Dataset, scan_dataset
from tl_core.device import DeviceInfo, detect_device, distribution_strategy
from tl_core.errors import ConfigError, TLError
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
from tl_core.export import write_run_folder
from tl_core.models import (
    build_augmenter,
    build_backbone,
    build_classifier,
    build_head,
    check_weights_option,
    freeze_layers,
    trainable_parameter_count,
    weights_identity,
)

FEATURE_BATCH_SIZE = 64


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


def train(config: TrainConfig, on_event: EventHandler = ignore_event, stop: StopRequest | None = None) -> RunResult:
    """Runs the whole workflow: check, decode, train, evaluate, export.

    Args:
        config: The run's settings.
        on_event: Called with every event of the run (see ``tl_core.events``).
        stop: Set it (from any thread) to stop the run after the current batch.

    Returns:
        The run's result; the files are in ``config.out_dir``.

    Raises:
        TLError: For problems the user can fix (data, options, weights); a
            ``TrainingFailed`` event carries the same message.
    """
    run = _Run(config, on_event, stop or StopRequest())
    try:
        return run.execute()
    except TLError as error:
        on_event(TrainingFailed(str(error), type(error).__name__))
        raise
    except Exception as error:
        on_event(TrainingFailed(describe_failure(error), type(error).__name__))
        raise
    finally:
        keras.mixed_precision.set_global_policy("float32")


def describe_failure(error: BaseException) -> str:
    """A message for an unexpected failure, with a suggestion where one is known."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
    if isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)) or "out of memory" in text.lower():
        return f"{text}. The run ran out of memory: try a smaller batch size or image size."
    return text


class _Run:
    """One training run; holds what the phases share."""

    def __init__(self, config: TrainConfig, on_event: EventHandler, stop: StopRequest) -> None:
        self.config = config
        self.on_event = on_event
        self.stop = stop
        self.history: list[dict] = []
        self.seconds: dict[str, float] = {}
        self.cache_use: dict[str, str] = {}
        self.notes: list[str] = []
        self.best = _BestWeights()
        self.distribution = tf.distribute.get_strategy()
        self._compiled: dict[tuple[int, int], tuple[keras.Model, object, Callable]] = {}

    # ------------------------------------------------------------------ orchestration

    def execute(self) -> RunResult:
        started = time.perf_counter()
        config = self.config = self.config.validated()
        spec = get_backbone(config.backbone)
        image_size = config.image_size or spec.default_size
        if image_size < spec.min_size:
            raise ConfigError(f"image_size is {image_size} but {spec.display_name} needs at least {spec.min_size} pixels. Use --image-size {max(spec.min_size, 96)} or more.")
        dataset = self._timed("scan", lambda: scan_dataset(config.data_dir, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction))
        if config.max_train_images_per_class:
            dataset = subsample_training_split(dataset, config.max_train_images_per_class, config.seed)
        if config.strategy == AUTO_STRATEGY:
            config = self.config = self._timed("advise", lambda: self._follow_advice(dataset))
        weights = "none" if config.strategy == "from_scratch" else check_weights_option(config.weights)
        self.spec, self.weights, self.image_size = spec, weights, image_size
        keras.utils.set_random_seed(config.seed)
        device = detect_device()
        self.on_event(TrainingStarted(config=config.to_dict(), device=device.to_dict(), class_names=dataset.class_names, counts=dataset.counts()))
        for group in dataset.duplicate_groups():
            if group.kind != "same class":
                self._notice(f"Duplicate images ({group.kind}): {', '.join(group.paths)}. See the dataset summary.")
        out_dir = Path(config.out_dir)
        try:
            if device.mixed_precision:
                keras.mixed_precision.set_global_policy(device.mixed_precision)
            self.distribution = distribution_strategy(device)
            if self.distribution.num_replicas_in_sync > 1:
                self._notice(f"Training on {self.distribution.num_replicas_in_sync} GPUs at once: each holds a copy of the model and takes an equal share of every batch.")
            with self.distribution.scope():  # models and optimizers made here are mirrored on every GPU
                model = self._build_model(dataset.num_classes)
            decoded = self._read_images(dataset, model)
            dataset = dataset.without(decoded.failed)
            self._train_model(model, dataset, decoded)
        except Interrupted:
            self.on_event(TrainingStopped(reason=self.stop.reason, epochs_done=len(self.history)))
            summary = self._summary("stopped", spec, weights, image_size, dataset, device, None, started)
            write_run_folder(out_dir, summary=summary)
            self.on_event(TrainingFinished(status="stopped", run_dir=str(out_dir), test_accuracy=None, seconds=time.perf_counter() - started))
            return RunResult("stopped", out_dir, None, self.history, summary)
        status = "stopped" if self.stop.requested else "finished"
        if status == "stopped":
            self.on_event(TrainingStopped(reason=self.stop.reason, epochs_done=len(self.history)))
        evaluation = self._timed("evaluate", lambda: self._evaluate(model, dataset, decoded))
        export_model = self._float32_copy(model, spec, image_size, len(dataset.class_names)) if device.mixed_precision else model.classifier
        summary = self._summary(status, spec, weights, image_size, dataset, device, model, started)
        self.on_event(PhaseStarted("export", "Saving model.h5, model.keras, labels.json and reports"))
        self._timed("export", lambda: write_run_folder(out_dir, summary=summary, model=export_model, class_names=dataset.class_names, evaluation=evaluation, history=self.history))
        summary["seconds"] = dict(self.seconds)
        summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
        write_run_folder(out_dir, summary=summary)
        self.on_event(TrainingFinished(status=status, run_dir=str(out_dir), test_accuracy=evaluation.accuracy, seconds=time.perf_counter() - started))
        return RunResult(status, out_dir, evaluation, self.history, summary)

    def _follow_advice(self, dataset: Dataset) -> TrainConfig:
        """``--strategy auto``: measure the data, then train as the advice says."""
        from tl_core.advisor import advise

        self.on_event(PhaseStarted("advise", "Measuring how similar the images are to ImageNet to choose the strategy"))
        advice = advise(dataset, backbone=self.config.backbone, cache_dir=self.config.cache_dir, seed=self.config.seed)
        strategy = advice.recommendation.strategy
        for reason in advice.reasons:
            self._notice(f"Advice: {reason}")
        given = self.config.freeze_layers
        if strategy != "fine_tune":
            freeze = None
            if given is not None:
                self._notice(f"Your freeze depth ({given} layers) is not used: the advice chose {strategy}, which does not freeze a chosen number of layers.")
        elif given is not None:
            freeze = given
            self._notice(f"Fine-tuning keeps your freeze depth of {given} layers (the advice suggested {advice.freeze_layers}).")
        else:
            freeze = advice.freeze_layers
        return replace(self.config, strategy=strategy, freeze_layers=freeze)

    def _timed(self, phase: str, work: Callable):
        start = time.perf_counter()
        try:
            return work()
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - start, 3)

    def _notice(self, message: str) -> None:
        self.notes.append(message)
        self.on_event(Notice(message))

    # ------------------------------------------------------------------ phases

    def _read_images(self, dataset: Dataset, model: _Model):
        """Decodes the images; on a first run that needs features, runs the frozen backbone while they are read.

        Threads decode ahead of the backbone, which takes each batch of 64 as soon
        as it is complete, so on a first run decoding adds little to the forward pass.
        """
        spec, size, total = self.spec, self.image_size, len(dataset.records)
        feature_key = feature_cache_key(spec, weights_identity(spec, self.weights), size, decoded_images_key(dataset.records, size))
        cache = FeatureCache(self.config.cache_dir)
        if self.config.strategy == "from_scratch" or decoded_images_cached(dataset.records, size, self.config.cache_dir) or cache.path(feature_key).exists():
            return self._decode(dataset, size)
        self.on_event(PhaseStarted("features", f"Reading {total} images and computing their bottleneck features with the frozen {spec.display_name} as they arrive", total=total))
        forward = self._compiled_forward(model.feature_model, None, size)
        features = np.zeros((total, spec.feature_dim), dtype=np.float32)
        extracted = []

        def extract(start: int, stop: int, pixels: np.ndarray) -> None:
            if self.stop.requested:
                raise Interrupted(self.stop.reason)
            features[start:stop] = forward(np.asarray(pixels)).numpy()
            extracted.append(stop - start)
            self.on_event(ProgressUpdated("features", stop, total))

        # One decoding thread per core: measured on 2 cores, more threads only take turns away from the backbone.
        decoded = self._timed("features", lambda: self._decode_images(dataset, size, on_chunk=extract, workers=os.cpu_count() or 1))
        self._report_decoded(decoded)
        if sum(extracted) == total:  # else another process cached the images meanwhile: features are computed the usual way
            self.cache_use["features"] = "miss"
            cache.save(feature_key, features)
            model.features = features
        return decoded

    def _decode(self, dataset: Dataset, image_size: int):
        self.on_event(PhaseStarted("decode", f"Reading and resizing {len(dataset.records)} images to {image_size}x{image_size}", total=len(dataset.records)))

        def progress(done: int, total: int) -> None:
            self.on_event(ProgressUpdated("decode", done, total))

        decoded = self._timed("decode", lambda: self._decode_images(dataset, image_size, on_progress=progress))
        self._report_decoded(decoded)
        return decoded

    def _decode_images(self, dataset: Dataset, image_size: int, **callbacks):
        return decode_images(
            dataset.records, image_size, cache_dir=self.config.cache_dir, memory_budget_bytes=self.config.memory_budget_mb * 1024**2, stop=self.stop, chunk_rows=FEATURE_BATCH_SIZE, **callbacks
        )

    def _report_decoded(self, decoded) -> None:
        self.cache_use["images"] = "hit" if decoded.from_cache else "miss"
        where = "memory" if decoded.in_memory else "disk (memory-mapped: larger than the memory budget)"
        self._notice(f"Decoded images {'reused from the cache' if decoded.from_cache else 'cached'}; held in {where}.")
        for item in decoded.failed:
            self._notice(f"Skipped {item.path}: {item.reason}")

    def _build_model(self, num_classes: int) -> _Model:
        config, spec = self.config, self.spec
        backbone = self._timed("build", lambda: build_backbone(spec, self.weights))
        head = build_head(spec.feature_dim, num_classes, config.head_units, config.dropout, seed=config.seed)
        classifier, feature_model = build_classifier(spec, backbone, head, self.image_size, backbone_in_inference_mode=config.strategy != "from_scratch")
        return _Model(classifier, feature_model, backbone, head, features=None)

    def _train_model(self, model: _Model, dataset: Dataset, decoded) -> None:
        config, spec = self.config, self.spec
        strategy = config.strategy
        backbone, classifier = model.backbone, model.classifier
        labels = np.array([record.label for record in dataset.records], dtype=np.int64)
        split_rows = {name: decoded.rows(dataset.split(name)) for name in ("train", "val", "test")}
        split_labels = {name: labels[_positions(dataset, name)] for name in split_rows}
        class_weight = self._class_weight(split_labels["train"], dataset.num_classes)

        if strategy == "from_scratch":
            freeze_layers(backbone, 0, train_batchnorm=True)
            model.frozen_layers = 0
            self._fit_images(model, decoded, split_rows, split_labels, class_weight, config.learning_rate, config.epochs, "from_scratch")
            return

        model.features = self._features(model, decoded)
        head_epochs = config.epochs if strategy == "feature_extraction" else config.warmup_epochs
        backbone.trainable = False
        model.frozen_layers = len(backbone.layers)
        if head_epochs:
            self._fit_head(model, decoded, split_rows, split_labels, class_weight, head_epochs)
        if strategy == "feature_extraction" or self.stop.requested:
            return

        frozen = 0 if strategy == "full_fine_tune" else self._freeze_depth(spec, backbone)
        freeze_layers(backbone, frozen)
        model.frozen_layers = frozen
        self._notice(
            f"Fine-tuning {spec.display_name}: first {frozen} of {len(backbone.layers)} layers frozen, "
            f"{trainable_parameter_count(classifier):,} parameters train at learning rate {config.backbone_learning_rate:g}; "
            "BatchNormalization layers stay in inference mode."
        )
        self._fit_images(model, decoded, split_rows, split_labels, class_weight, config.backbone_learning_rate, config.epochs, "fine_tune")

    def _freeze_depth(self, spec: BackboneSpec, backbone: keras.Model) -> int:
        if self.config.freeze_layers is not None:
            if self.config.freeze_layers > len(backbone.layers):
                raise ConfigError(
                    f"freeze_layers is {self.config.freeze_layers} but {spec.display_name} has {len(backbone.layers)} layers. "
                    f"Use a number from 0 to {len(backbone.layers)}."
                )
            return self.config.freeze_layers
        return default_freeze_layers(spec, [layer.name for layer in backbone.layers])

    def _class_weight(self, train_labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
        if not self.config.class_weights:
            return None
        counts = np.bincount(train_labels, minlength=num_classes)
        weights = {index: float(len(train_labels) / (num_classes * count)) for index, count in enumerate(counts) if count}
        self._notice("Class weights: " + ", ".join(f"{index}: {weight:.2f}" for index, weight in weights.items()))
        return weights

    def _features(self, model: _Model, decoded) -> np.ndarray:
        """Pooled backbone outputs for every image, from the cache when they were computed before."""
        if model.features is not None:  # computed while the images were read
            return model.features
        spec = self.spec
        cache = FeatureCache(self.config.cache_dir)
        key = feature_cache_key(spec, weights_identity(spec, self.weights), self.image_size, decoded.key)
        cached = cache.load(key)
        total = decoded.pixels.shape[0]
        self.on_event(PhaseStarted("features", f"Computing bottleneck features of {total} images with the frozen {spec.display_name}", total=total))
        if cached is not None:
            self.cache_use["features"] = "hit"
            self.on_event(ProgressUpdated("features", total, total))
            self._notice("Bottleneck features reused from the cache: the backbone did not run again.")
            return cached
        self.cache_use["features"] = "miss"
        rows = np.arange(total)
        features = self._timed("features", lambda: self._forward(model.feature_model, decoded.pixels, rows, "features", augmenter=None))
        cache.save(key, features)
        return features

    def _forward(self, feature_model: keras.Model, pixels: np.ndarray, rows: np.ndarray, phase: str, augmenter) -> np.ndarray:
        """Runs ``feature_model`` over the given rows in compiled batches, checking for a stop request.

        Batches are gathered straight from the (in-memory or memory-mapped) array:
        copying 64 images takes milliseconds against the forward pass's hundreds,
        and an input pipeline's threads would only compete with the model for the cores.
        """
        forward = self._compiled_forward(feature_model, augmenter, pixels.shape[1])
        outputs = np.zeros((len(rows), feature_model.output_shape[-1]), dtype=np.float32)
        for start in range(0, len(rows), FEATURE_BATCH_SIZE):
            if self.stop.requested:
                raise Interrupted(self.stop.reason)
            stop = min(start + FEATURE_BATCH_SIZE, len(rows))
            outputs[start:stop] = forward(pixels[rows[start:stop]]).numpy()
            self.on_event(ProgressUpdated(phase, stop, len(rows)))
        return outputs

    def _compiled_forward(self, feature_model: keras.Model, augmenter, size: int) -> Callable:
        """``feature_model`` (after ``augmenter`` when given) as a ``tf.function`` on uint8 batches, traced once per run."""
        key = (id(feature_model), id(augmenter))
        if key not in self._compiled:

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
            def forward(batch):
                images = tf.cast(batch, tf.float32)
                if augmenter is not None:
                    images = augmenter(images, training=True)
                return tf.cast(feature_model(images, training=False), tf.float32)

            self._compiled[key] = (feature_model, augmenter, forward)  # the models are held so their ids stay theirs
        return self._compiled[key][2]

    def _augmented_views(self, model: _Model, decoded, train_rows: np.ndarray) -> list[np.ndarray]:
        """Features of ``augment_views`` randomly changed copies of the training images (cached)."""
        config, spec = self.config, self.spec
        views = []
        cache = FeatureCache(config.cache_dir)
        for view in range(config.augment_views):
            key = cache_key(
                "augmented-features-v1", spec.name, sorted(spec.constructor_kwargs.items()), weights_identity(spec, self.weights), self.image_size, decoded.key,
                sorted(config.augmentation.to_dict().items()), config.seed, view, train_rows.tobytes(),
            )
            cached = cache.load(key)
            if cached is None:
                self.on_event(PhaseStarted("features", f"Computing features of augmented view {view + 1}/{config.augment_views} of the training images", total=len(train_rows)))
                augmenter = build_augmenter(config.augmentation, seed=config.seed * 1000 + view)
                cached = self._timed("features", lambda augmenter=augmenter: self._forward(model.feature_model, decoded.pixels, train_rows, "features", augmenter))
                cache.save(key, cached)
            views.append(cached)
        return views

    def _fit_head(self, model: _Model, decoded, split_rows, split_labels, class_weight, epochs: int) -> None:
        config, strategy = self.config, self.config.strategy
        phase = "head"
        features = model.features
        train_x = features[split_rows["train"]]
        train_y = split_labels["train"]
        if config.augment and strategy == "feature_extraction":
            if config.augment_views:
                views = self._augmented_views(model, decoded, split_rows["train"])
                train_x = np.concatenate([train_x, *views])
                train_y = np.concatenate([train_y] * (1 + len(views)))
                self._notice(f"Head trains on the original and {len(views)} augmented views of each training image ({len(train_y)} feature vectors).")
            else:
                self._notice(
                    "Augmentation is not applied: feature extraction trains on cached features, which are computed once. "
                    "Cache augmented copies with --augment-views N, or fine-tune to augment every epoch."
                )
        description = "Training the new head on cached features" if strategy == "feature_extraction" else "Warming up the new head on cached features (backbone frozen)"
        self.on_event(PhaseStarted(phase, description, total=epochs))
        bridge = _EventBridge(self, phase, model.head, math.ceil(len(train_y) / config.batch_size), config.learning_rate)
        with self.distribution.scope():
            trainer = HeadTrainer(model.head, config.learning_rate, config.batch_size, class_weight, seed=config.seed)
        validation = (features[split_rows["val"]], split_labels["val"])
        self._timed(phase, lambda: trainer.fit(train_x, train_y, validation, epochs, first_epoch=len(self.history), callback=bridge))
        bridge.restore_best()

    def _fit_images(self, model: _Model, decoded, split_rows, split_labels, class_weight, learning_rate: float, epochs: int, phase: str) -> None:
        config = self.config
        augmenter = build_augmenter(config.augmentation, seed=config.seed) if config.augment else None
        train_data = _pixel_batches(decoded.pixels, split_rows["train"], split_labels["train"], config.batch_size, shuffle_seed=config.seed, augmenter=augmenter)
        val_data = _pixel_batches(decoded.pixels, split_rows["val"], split_labels["val"], config.batch_size)
        description = {
            "fine_tune": "Fine-tuning the unfrozen backbone layers and the head on the images",
            "from_scratch": "Training the whole network from random weights on the images",
        }[phase]
        self.on_event(PhaseStarted(phase, description + (" (augmented)" if augmenter is not None else ""), total=epochs))
        with self.distribution.scope():
            model.classifier.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        bridge = _EventBridge(self, phase, model.classifier, math.ceil(len(split_rows["train"]) / config.batch_size), learning_rate)
        self._timed(
            phase,
            lambda: model.classifier.fit(
                train_data,
                epochs=len(self.history) + epochs,
                initial_epoch=len(self.history),
                validation_data=val_data,
                class_weight=class_weight,
                callbacks=[bridge],
                verbose=0,
            ),
        )
        bridge.restore_best()

    def _evaluate(self, model: _Model, dataset: Dataset, decoded) -> Evaluation:
        split = dataset.evaluation_split
        records = dataset.split(split)
        rows = decoded.rows(records)
        self.on_event(PhaseStarted("evaluate", f"Evaluating on the {split} split ({len(records)} images)", total=len(records)))
        if model.features is not None and self.config.strategy == "feature_extraction":
            probabilities = model.head.predict(model.features[rows], batch_size=256, verbose=0)
        else:
            probabilities = predict_pixels(model.classifier, decoded.pixels, rows)
        return evaluate_predictions(
            [record.label for record in records],
            np.asarray(probabilities, dtype=np.float64),
            dataset.class_names,
            [record.path for record in records],
        )

    def _float32_copy(self, model: _Model, spec: BackboneSpec, image_size: int, num_classes: int) -> keras.Model:
        """The trained model rebuilt in float32 (mixed precision is for training speed, not for the file)."""
        keras.mixed_precision.set_global_policy("float32")
        backbone = build_backbone(spec, "none")
        head = build_head(spec.feature_dim, num_classes, self.config.head_units, self.config.dropout)
        classifier, _ = build_classifier(spec, backbone, head, image_size, backbone_in_inference_mode=self.config.strategy != "from_scratch")
        classifier.set_weights(model.classifier.get_weights())
        return classifier

    def _summary(self, status, spec, weights, image_size, dataset, device: DeviceInfo, model: _Model | None, started: float) -> dict:
        import PIL
        import sklearn

        data_summary = dataset.summary()
        return {
            "status": status,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.config.to_dict(),
            "backbone": {"name": spec.name, "display_name": spec.display_name, "parameters": spec.parameters, "preprocessing": spec.preprocessing},
            "image_size": image_size,
            "weights": weights_identity(spec, weights),
            "strategy": self.config.strategy,
            "frozen_layers": None if model is None else model.frozen_layers,
            "backbone_layers": None if model is None else len(model.backbone.layers),
            "trainable_parameters": None if model is None else trainable_parameter_count(model.classifier),
            "device": device.to_dict(),
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
            "suspicious": data_summary.get("suspicious", []),
            "cache": dict(self.cache_use),
            "notes": list(self.notes),
            "history": list(self.history),
            "seconds": {**self.seconds, "total": round(time.perf_counter() - started, 3)},
            "versions": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "numpy": np.__version__,
                "pillow": PIL.__version__,
                "scikit-learn": sklearn.__version__,
            },
        }


@dataclass
class _Model:
    classifier: keras.Model
    feature_model: keras.Model
    backbone: keras.Model
    head: keras.Model
    features: np.ndarray | None
    frozen_layers: int = 0


class _BestWeights:
    """The lowest validation loss seen in the run and the weights that gave it."""

    def __init__(self) -> None:
        self.loss = math.inf
        self.epoch = 0


class _EventBridge(keras.callbacks.Callback):
    """Turns Keras callbacks into engine events, watches for stop requests and keeps the best weights."""

    def __init__(self, run: _Run, phase: str, target: keras.Model, batches: int, learning_rate: float) -> None:
        super().__init__()
        self.run = run
        self.phase = phase
        self.target = target
        self.batches = batches
        self.learning_rate = learning_rate
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
            metrics = {name: float(value) for name, value in (logs or {}).items()}
            self.run.on_event(BatchEnded(self.phase, len(self.run.history) + 1, self.batch, self.batches, metrics))
        if self.run.stop.requested:
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.run.stop.requested:
            self.model.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        if self.run.stop.requested:
            self.run._notice(f"Stopped during epoch {len(self.run.history) + 1} after {self.batch} of {self.batches} batches; that epoch is not counted.")
            return
        logs = {name: float(value) for name, value in (logs or {}).items()}
        seconds = time.perf_counter() - self.epoch_started
        entry = {
            "epoch": len(self.run.history) + 1,
            "phase": self.phase,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": self.learning_rate,
            "seconds": round(seconds, 3),
        }
        self.run.history.append(entry)
        planned = self.run.config.epochs + (self.run.config.warmup_epochs if self.run.config.strategy in ("fine_tune", "full_fine_tune") else 0)
        self.run.on_event(EpochEnded(self.phase, entry["epoch"], max(planned, entry["epoch"]), {key: value for key, value in entry.items() if key in ("loss", "accuracy", "val_loss", "val_accuracy")}, seconds))
        val_loss = logs.get("val_loss", math.inf)
        best = self.run.best
        if val_loss < best.loss:
            best.loss, best.epoch = val_loss, entry["epoch"]
            self.best_weights = self.target.get_weights()
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            patience = self.run.config.early_stopping_patience
            if patience and self.epochs_without_improvement >= patience:
                self.model.stop_training = True
                self.run._notice(f"Early stopping: validation loss has not improved for {patience} epochs; keeping epoch {best.epoch} (val_loss {best.loss:.4f}).")

    def restore_best(self) -> None:
        self.target.set_weights(self.best_weights)


class HeadTrainer:
    """Trains a head on cached features with a compiled loop: many steps per call, one call for validation.

    A step on a 1,280-long feature vector takes microseconds, so ``model.fit``'s
    per-step and per-epoch bookkeeping would cost more than the learning. The
    loop runs ``steps_per_call`` steps inside one ``tf.function`` call, gathers
    each batch from the features already on the device, and reports to a Keras
    callback as ``fit`` would (batch ends, epoch ends with the same log names),
    so events, early stopping, best weights and stop requests work unchanged.

    Args:
        head: The head model (softmax outputs).
        learning_rate: Adam's learning rate.
        batch_size: Feature vectors per step.
        class_weight: Loss weight per class index, or None.
        seed: Seed of the shuffling.
        steps_per_call: Steps run by one call of the compiled loop.
    """

    def __init__(self, head: keras.Model, learning_rate: float, batch_size: int, class_weight: dict[int, float] | None = None, seed: int = 0, steps_per_call: int = 64) -> None:
        self.head = head
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(head.trainable_variables)  # now, inside the caller's distribution scope, not lazily in the loop
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.rng = np.random.default_rng(seed)
        self.steps_per_call = steps_per_call
        self.loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
        self.train_steps = tf.function(self._train_steps, reduce_retracing=True)
        self.evaluate = tf.function(self._evaluate, reduce_retracing=True)

    def _train_steps(self, features, labels, weights, order, first_batch, batches):
        total_loss, total_weight, correct = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        count = tf.shape(order, out_type=tf.int64)[0]
        for batch in tf.range(first_batch, first_batch + batches):
            indices = order[batch * self.batch_size : tf.minimum((batch + 1) * self.batch_size, count)]
            batch_features, batch_labels, batch_weights = tf.gather(features, indices), tf.gather(labels, indices), tf.gather(weights, indices)
            with tf.GradientTape() as tape:
                probabilities = self.head(batch_features, training=True)
                losses = self.loss(batch_labels, probabilities) * batch_weights
                loss = tf.reduce_sum(losses) / tf.reduce_sum(batch_weights)
            gradients = tape.gradient(loss, self.head.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.head.trainable_variables, strict=True))
            total_loss += tf.reduce_sum(losses)
            total_weight += tf.reduce_sum(batch_weights)
            correct += tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int64), batch_labels), tf.float32))
        return total_loss, total_weight, correct

    def _evaluate(self, features, labels):
        probabilities = self.head(features, training=False)
        loss = tf.reduce_mean(self.loss(labels, probabilities))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int64), labels), tf.float32))
        return loss, accuracy

    def fit(self, features: np.ndarray, labels: np.ndarray, validation: tuple[np.ndarray, np.ndarray], epochs: int, first_epoch: int = 0, callback: keras.callbacks.Callback | None = None) -> None:
        """Trains for ``epochs``; ``callback`` sees batch and epoch ends and may set ``head.stop_training``."""
        features_tensor, labels_tensor = tf.constant(features, tf.float32), tf.constant(labels, tf.int64)
        weights = np.ones(len(labels), np.float32) if not self.class_weight else np.array([self.class_weight.get(int(label), 1.0) for label in labels], np.float32)
        weights_tensor = tf.constant(weights)
        validation_features, validation_labels = tf.constant(validation[0], tf.float32), tf.constant(validation[1], tf.int64)
        batches = math.ceil(len(labels) / self.batch_size)
        self.head.stop_training = False
        if callback is not None:
            callback.set_model(self.head)
        for epoch in range(first_epoch, first_epoch + epochs):
            if callback is not None:
                callback.on_epoch_begin(epoch)
            order = tf.constant(self.rng.permutation(len(labels)), tf.int64)
            sums = np.zeros(3)
            for first_batch in range(0, batches, self.steps_per_call):
                count = min(self.steps_per_call, batches - first_batch)
                sums += np.array([value.numpy() for value in self.train_steps(features_tensor, labels_tensor, weights_tensor, order, tf.constant(first_batch, tf.int64), tf.constant(count, tf.int64))])
                logs = {"loss": sums[0] / max(sums[1], 1e-12), "accuracy": sums[2] / min((first_batch + count) * self.batch_size, len(labels))}
                if callback is not None:
                    callback.on_train_batch_end(first_batch + count - 1, logs)
                if self.head.stop_training:
                    break
            if self.head.stop_training:  # set mid-epoch: a stop request, so the epoch is unfinished and not validated
                if callback is not None:
                    callback.on_epoch_end(epoch, logs)  # the bridge notes the unfinished epoch and does not count it
                break
            validation_loss, validation_accuracy = self.evaluate(validation_features, validation_labels)
            logs = {**logs, "val_loss": float(validation_loss), "val_accuracy": float(validation_accuracy)}
            if callback is not None:
                callback.on_epoch_end(epoch, logs)
            if self.head.stop_training:
                break


def feature_cache_key(spec: BackboneSpec, weights: str, image_size: int, images_key: str) -> str:
    """The key of a dataset's bottleneck features: backbone, its weights, image size and the decoded images' key."""
    return cache_key("features-v1", spec.name, sorted(spec.constructor_kwargs.items()), weights, image_size, images_key)


def default_freeze_layers(spec: BackboneSpec, layer_names: list[str]) -> int:
    """The default fine-tuning depth: freeze the first two thirds of the backbone's blocks."""
    blocks = blocks_from_layer_names(spec, layer_names)
    return blocks[min(len(blocks) - 1, round(len(blocks) * 2 / 3))].start


def subsample_training_split(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """Keeps at most ``per_class`` training images of each class (seeded); validation and test stay whole."""
    rng = np.random.default_rng(seed)
    kept = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.split == "train" and record.class_name == name]
        kept.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    others = [record for record in dataset.records if record.split != "train"]
    return replace(dataset, records=sorted(kept + others, key=lambda record: record.relative_path))


def _positions(dataset: Dataset, split: str) -> np.ndarray:
    return np.array([index for index, record in enumerate(dataset.records) if record.split == split], dtype=np.int64)


def _pixel_batches(pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray | None, batch_size: int, shuffle_seed: int | None = None, augmenter=None) -> tf.data.Dataset:
    """A tf.data pipeline of (uint8 or augmented float32 images, labels) batches gathered from ``pixels``.

    Gathering runs in tf.data's threads and is prefetched, so the next batch is
    ready while the model works on the current one.
    """
    size = pixels.shape[1]
    label_array = np.zeros(len(rows), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    positions = tf.data.Dataset.from_tensor_slices(np.arange(len(rows)))
    if shuffle_seed is not None:
        positions = positions.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pixels[rows[indices]], label_array[indices]

    def load(indices):
        images, batch_labels = tf.numpy_function(gather, [indices], (tf.uint8, tf.int64))
        images.set_shape([None, size, size, 3])
        batch_labels.set_shape([None])
        return images, batch_labels

    batches = positions.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        batches = batches.map(lambda images, batch_labels: (augmenter(tf.cast(images, tf.float32), training=True), batch_labels), num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def predict_pixels(model: keras.Model, pixels: np.ndarray, rows: np.ndarray | None = None, batch_size: int = FEATURE_BATCH_SIZE) -> np.ndarray:
    """Class probabilities for the given rows of a uint8 pixel array."""
    rows = np.arange(pixels.shape[0]) if rows is None else rows
    outputs = []
    for images, _ in _pixel_batches(pixels, rows, None, batch_size):
        outputs.append(keras.ops.convert_to_numpy(model(tf.cast(images, tf.float32), training=False)))
    if not outputs:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)
