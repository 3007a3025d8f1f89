"""A run's inputs: every image decoded once, and the frozen backbone's features of them.

On a first run that needs bottleneck features, the backbone works on each
batch of 64 images as soon as it is decoded (threads decode ahead), so
decoding adds little to the forward pass; later runs read both from the cache.
The backbone runs by the runtime chosen for this machine (``tl_core.runtime``).

The mirror images' features (feature extraction with left-right flips) are not
read or computed here: the first model is trained without them, and
``tl_core.training.mirrors`` then adds them where they are expected to pay
(from the cache when a run computed them before), so a run trains the same
way whatever the cache holds.
"""

from __future__ import annotations

import os

import numpy as np

from tl_core import features
from tl_core.data.decoded import DecodedImages, decode_images, decoded_images_cached, decoded_images_key
from tl_core.events import PhaseStarted, ProgressUpdated
from tl_core.features import FEATURE_BATCH_SIZE, MIRRORED, ORIGINAL, FeatureCache, augmented_features_key, forward_batches, load_features, view_keys
from tl_core.models.augment import build_augmenter
from tl_core.models.weights import weights_identity
from tl_core.runtime import backbone_runner
from tl_core.training.context import RunContext


def read_images(run: RunContext) -> None:
    """Decodes the images; on a first run that needs features, runs the frozen backbone while they are read.

    Threads decode ahead of the backbone, which takes each batch of 64 as soon
    as it is complete, so on a first run decoding adds little to the forward pass.
    """
    config, dataset, size = run.config, run.dataset, run.image_size
    total = len(dataset.records)
    cache = FeatureCache(config.cache_dir)
    keys = feature_keys(run, decoded_images_key(dataset.records, size, config.crops_centre))
    features_cached = cache.path(keys[ORIGINAL]).exists()
    if not config.uses_features or run.warm_started or decoded_images_cached(dataset.records, size, config.cache_dir, config.crops_centre) or features_cached:
        # Feature extraction on cached features reads pixels only for the mirror images' pass, where that pays:
        # the cached array is mapped, not read (3,000 images at 224 px are 450 MB).
        run.decoded = decode(run, mapped=features_cached and config.strategy == "feature_extraction")
        return
    views = [ORIGINAL]
    run.mirrors_deferred = run.config.mirrored_features  # not cached: computed after the first model, where they pay
    run.on_event(PhaseStarted("features", f"Reading {total} images and computing their bottleneck features with the frozen {run.spec.display_name} as they arrive", total=total))
    forwards = {view: feature_forward(run, view, total) for view in views}
    features = {view: np.zeros((total, run.spec.feature_dim), dtype=np.float32) for view in views}
    extracted = []

    def extract(start: int, stop: int, pixels: np.ndarray) -> None:
        run.stop.check()
        batch = np.asarray(pixels)
        for view, forward in forwards.items():
            features[view][start:stop] = forward(batch)
        extracted.append(stop - start)
        run.on_event(ProgressUpdated("features", stop, total))

    # One decoding thread per core: measured on 2 cores, more threads only take turns away from the backbone.
    decoded = run.timed("features", _decode_images, run, on_chunk=extract, workers=os.cpu_count() or 1)
    report_decoded(run, decoded)
    run.decoded = decoded
    if sum(extracted) == total:  # else another process cached the images meanwhile: features are computed the usual way
        run.cache_use["features"] = "miss"
        for view in views:
            cache.save(keys[view], features[view])
        run.features = features
        report_runtime(run)


def feature_views(run: RunContext) -> tuple[list[str], str]:
    """The feature views a run needs (the images, and their mirror images when used) and their name in words."""
    if run.config.mirrored_features:
        return [ORIGINAL, MIRRORED], "bottleneck features (and those of their mirror images)"
    return [ORIGINAL], "bottleneck features"


def feature_forward(run: RunContext, view: str, images: int):
    """The frozen backbone's forward pass on ``uint8`` batches (as ``view`` shows them: ``tl_core.features.view_of``), by the runtime chosen here.

    ``images`` is how many images the run expects to push through it (a measurement pays only for enough of them).
    """
    if run.runner is None:
        run.runner = backbone_runner(
            run.model.feature_model, run.spec, weights_identity(run.spec, run.weights), run.image_size, images, device_kind=run.device.kind, cache_dir=run.config.cache_dir
        )
    return run.runner.forward(view)


def report_runtime(run: RunContext) -> None:
    """Notes which runtime ran the backbone and why, once it is known."""
    choice = run.runner.choice if run.runner is not None else None
    if choice is not None and choice.describe() not in run.notes[-8:]:
        run.notice(choice.describe() + (" (measured earlier on this machine, by a run or the advice)" if choice.remembered else ""))


def feature_keys(run: RunContext, images_key: str) -> dict[str, str]:
    """The cache key of each view's features for this run's backbone, weights and image size."""
    return view_keys(run.spec, weights_identity(run.spec, run.weights), run.image_size, images_key)


def decode(run: RunContext, mapped: bool = False) -> DecodedImages:
    """Every image decoded and resized (or read from the cache), as phase ``decode``; ``mapped``: a cached array is memory-mapped, not read."""
    total = len(run.dataset.records)
    run.on_event(PhaseStarted("decode", f"Reading and resizing {total} images to {run.image_size}x{run.image_size}", total=total))

    def progress(done: int, total: int) -> None:
        run.on_event(ProgressUpdated("decode", done, total))

    decoded = run.timed("decode", _decode_images, run, on_progress=progress, memory_budget_bytes=0 if mapped else None)
    report_decoded(run, decoded, mapped)
    return decoded


def _decode_images(run: RunContext, memory_budget_bytes: int | None = None, **callbacks) -> DecodedImages:
    config = run.config
    budget = config.memory_budget_mb * 1024**2 if memory_budget_bytes is None else memory_budget_bytes
    return decode_images(
        run.dataset.records, run.image_size, cache_dir=config.cache_dir, memory_budget_bytes=budget, stop=run.stop, chunk_rows=FEATURE_BATCH_SIZE,
        centre_crop=config.crops_centre, **callbacks,
    )


def report_decoded(run: RunContext, decoded: DecodedImages, mapped: bool = False) -> None:
    """Notes where the decoded images came from and are held, and drops the files that failed to decode (listed, with the reason)."""
    run.cache_use["images"] = "hit" if decoded.from_cache else "miss"
    if decoded.in_memory:
        where = "memory"
    elif mapped and decoded.from_cache:
        where = "disk (memory-mapped: the features are cached, so pixels are read only if the mirror images need them)"
    else:
        where = "disk (memory-mapped: larger than the memory budget)"
    run.notice(f"Decoded images {'reused from the cache' if decoded.from_cache else 'cached'}; held in {where}.")
    for item in decoded.failed:
        run.notice(f"Skipped {item.path}: {item.reason}")
    run.dataset = run.dataset.without(decoded.failed)


def compute_features(run: RunContext) -> None:
    """Pooled backbone outputs for every image, from the cache when they were computed before (the mirror images': see ``tl_core.training.mirrors``)."""
    if run.features:  # computed while the images were read
        return
    run.mirrors_deferred = run.config.mirrored_features
    pixels, keys = run.decoded.pixels, feature_keys(run, run.decoded.key)
    found = load_features(keys, [ORIGINAL], len(pixels), run.config.cache_dir)
    missing = [view for view in found if found[view] is None]
    run.on_event(PhaseStarted("features", f"Computing the bottleneck features of {len(pixels)} images with the frozen {run.spec.display_name}", total=len(pixels)))
    if missing:
        found.update(run.timed(
            "features", features.compute_features, lambda view: feature_forward(run, view, len(pixels)), pixels, keys, missing,
            run.config.cache_dir, stop=run.stop, on_progress=progress_events(run, "features"),
        ))
        report_runtime(run)
    else:
        run.on_event(ProgressUpdated("features", len(pixels), len(pixels)))
        run.notice("Bottleneck features reused from the cache: the backbone did not run again.")
    run.features = found
    run.cache_use["features"] = "miss" if missing else "hit"


def progress_events(run: RunContext, phase: str):
    """A progress callback that reports as ``ProgressUpdated`` events of ``phase``."""
    return lambda done, total: run.on_event(ProgressUpdated(phase, done, total))


def run_forward(run: RunContext, model, rows: np.ndarray, phase: str, augmenter=None, progress_offset: int = 0, progress_total: int | None = None) -> np.ndarray:
    """``model`` over the given rows of the run's decoded images (compiled once per run), reporting progress as ``phase``."""
    forward = run.compiled(model, augmenter)
    return forward_batches(
        forward, run.decoded.pixels, rows, stop=run.stop, on_progress=progress_events(run, phase), progress_offset=progress_offset, progress_total=progress_total
    )


def augmented_views(run: RunContext, train_rows: np.ndarray) -> list[np.ndarray]:
    """Features of ``augment_views`` randomly changed copies of the training images (cached)."""
    config, spec = run.config, run.spec
    views = []
    cache = FeatureCache(config.cache_dir)
    for view in range(config.augment_views):
        key = augmented_features_key(spec, weights_identity(spec, run.weights), run.image_size, run.decoded.key, config.augmentation.to_dict(), config.seed, view, train_rows)
        cached = cache.load(key)
        if cached is None:
            run.on_event(PhaseStarted("features", f"Computing features of augmented view {view + 1}/{config.augment_views} of the training images", total=len(train_rows)))
            augmenter = build_augmenter(config.augmentation, seed=config.seed * 1000 + view)
            cached = run.timed("features", run_forward, run, run.model.feature_model, train_rows, "features", augmenter)
            cache.save(key, cached)
        views.append(cached)
    return views


def split_rows(run: RunContext) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Rows of each split in the decoded images, and their labels."""
    dataset, decoded = run.dataset, run.decoded
    labels = np.array([record.label for record in dataset.records], dtype=np.int64)
    rows = {name: decoded.rows(dataset.split(name)) for name in ("train", "val", "test")}
    positions = {name: np.array([index for index, record in enumerate(dataset.records) if record.split == name], dtype=np.int64) for name in rows}
    return rows, {name: labels[positions[name]] for name in rows}
