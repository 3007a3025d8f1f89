"""The phases that train: the head on cached features, and backbone layers on (augmented) images."""

from __future__ import annotations

import math

import keras
import numpy as np

from tl_core.errors import ConfigError
from tl_core.events import PhaseStarted
from tl_core.features import MIRRORED, ORIGINAL
from tl_core.models.augment import build_augmenter
from tl_core.models.blocks import blocks_from_layer_names, default_freeze_layers, freeze_wording
from tl_core.models.build import freeze_layers, trainable_parameter_count
from tl_core.training.callbacks import EventBridge
from tl_core.training.context import RunContext
from tl_core.training.inputs import augmented_views, split_rows
from tl_core.training.loops import HeadTrainer, SmoothedSparseCrossentropy, fine_tune_schedule, image_batches, training_model


def fit_head(run: RunContext, epochs: int, description: str = "") -> None:
    """Trains the head on cached features: the whole of feature extraction, or the warm-up before fine-tuning.

    The head goes on from its current weights; the epoch with the lowest validation loss of the whole run is kept.
    """
    config, model = run.config, run.model
    rows, labels = split_rows(run)
    train_rows, train_labels = rows["train"], labels["train"]
    train_x = run.features[ORIGINAL][train_rows]
    views = []
    if config.strategy == "feature_extraction" and config.augment:
        extra = []
        others = [view for view in run.features if view != ORIGINAL]  # the mirror images' (and the turned views') once computed
        if others:
            views += [run.features[view][train_rows] for view in others]
            extra.append("their mirror images" if others == [MIRRORED] else f"their mirror images and turned views ({len(others)} views)")
        if config.augment_views:
            views += augmented_views(run, train_rows)
            extra.append(f"{config.augment_views} randomly augmented cop{'y' if config.augment_views == 1 else 'ies'}")
        if views:
            run.notice(f"The head trains on the training images and {' and '.join(extra)} ({len(train_labels) * (1 + len(views)):,} feature vectors).")
        elif not run.mirrors_deferred:  # else the mirror images come after the first head (tl_core.training.mirrors)
            run.notice(
                "Augmentation is not applied: feature extraction trains on cached features, which are computed once, and this augmentation "
                "does not mirror images. Cache augmented copies with --augment-views N, or fine-tune to augment every epoch."
            )
    train_x = np.concatenate([train_x, *views]) if views else train_x
    train_y = np.concatenate([train_labels] * (1 + len(views)))
    description = description or (
        "Training the new head on cached features" if config.strategy == "feature_extraction" else "Warming up the new head on cached features (backbone frozen)"
    )
    run.on_event(PhaseStarted("head", description, total=epochs))
    warm_up = config.strategy != "feature_extraction"
    bridge = EventBridge(run, "head", model.head, math.ceil(len(train_y) / config.batch_size), planned=epochs, warm_up=warm_up)
    with run.distribution.scope():
        trainer = HeadTrainer(model.head, config.learning_rate, config.batch_size, class_weights(run, train_labels), seed=config.seed, label_smoothing=config.label_smoothing)
    validation = (run.features[ORIGINAL][rows["val"]], labels["val"])
    run.timed("head", trainer.fit, train_x, train_y, validation, epochs, len(run.history), bridge)
    bridge.restore_best()


def unfreeze(run: RunContext) -> None:
    """Unfreezes the backbone after the freeze depth (every layer for full fine-tuning); BatchNorm stays frozen."""
    spec, model = run.spec, run.model
    frozen = 0 if run.config.strategy == "full_fine_tune" else freeze_depth(run)
    freeze_layers(model.backbone, frozen)
    model.frozen_layers = frozen
    blocks = blocks_from_layer_names(spec, [layer.name for layer in model.backbone.layers])
    run.notice(
        f"Fine-tuning {spec.display_name}: {freeze_wording(blocks, frozen)}; "
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
    train_data, augmented = image_batches(pixels, rows["train"], labels["train"], config.batch_size, shuffle_seed=config.seed, augmenter=augmenter)
    val_data, _ = image_batches(pixels, rows["val"], labels["val"], config.batch_size)
    description = {
        "fine_tune": "Fine-tuning the unfrozen backbone layers and the head on the images",
        "from_scratch": "Training the whole network from random weights on the images",
    }[phase]
    run.planned = len(run.history) + epochs  # a warm-up that stopped early no longer counts its unused epochs
    run.on_event(PhaseStarted(phase, description + (" (augmented)" if augmenter is not None else ""), total=epochs))
    steps = math.ceil(len(rows["train"]) / config.batch_size)
    with run.distribution.scope():
        trained = training_model(model.classifier, augmenter, augmented)
        optimizer = keras.optimizers.Adam(fine_tune_schedule(learning_rate, steps, epochs, config.learning_rate_schedule))
        # Plain cross-entropy is reported alongside, so validation losses compare across phases whatever the smoothing.
        loss = keras.losses.SparseCategoricalCrossentropy() if not config.label_smoothing else SmoothedSparseCrossentropy(config.label_smoothing)
        trained.compile(optimizer=optimizer, loss=loss, metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy")])
    bridge = EventBridge(run, phase, model.classifier, steps, planned=epochs)
    run.timed(
        phase,
        trained.fit,
        train_data,
        epochs=len(run.history) + epochs,
        initial_epoch=len(run.history),
        validation_data=val_data,
        class_weight=class_weights(run, labels["train"]),
        callbacks=[bridge],
        verbose=0,
    )
    bridge.restore_best()


def class_weights(run: RunContext, train_labels: np.ndarray) -> dict[int, float] | None:
    """Loss weights by inverse class frequency, when the run uses them (noted once)."""
    if not run.config.class_weights:
        return None
    counts = np.bincount(train_labels, minlength=run.dataset.num_classes)
    weights = {index: float(len(train_labels) / (run.dataset.num_classes * count)) for index, count in enumerate(counts) if count}
    if "class_weights" not in run.cache_use:
        run.cache_use["class_weights"] = "on"
        run.notice("Class weights: " + ", ".join(f"{index}: {weight:.2f}" for index, weight in weights.items()))
    return weights
