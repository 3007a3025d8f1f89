"""Training again from an earlier run, typically after adding images to the folder.

Every run folder holds ``images.json``: each image it used, with its split,
its file size and modification time, and its row in the run's decoded-image
cache; ``run.json`` names the cache entries (``cache_keys``); both are read by
``tl_core.runs.folder.load_earlier_run``. A new run with ``from_run`` set
(``python -m tl_core train DATA --from-run RUN_DIR``, or *Train again* on the
History page) then:

- starts from the earlier run's settings (``config_from_run``);
- keeps every earlier image in the split it had (``Dataset.with_earlier_splits``),
  so images held out before never move into training;
- takes the decoded pixels and bottleneck features of the images that are
  unchanged from the earlier run's cache entries, and decodes and runs the
  backbone on the new or changed images only (``read_images_reusing``);
- starts from the earlier run's trained weights when the classes are the same:
  the head for feature extraction; for the strategies that train backbone
  layers the whole model, so fine-tuning goes on from it without a warm-up.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tl_core.config import TrainConfig
from tl_core.data.decoded import decode_images, decoded_images_path, store_decoded_images
from tl_core.errors import RunError, TLError
from tl_core.events import PhaseStarted
from tl_core.features import MIRRORED, ORIGINAL, FeatureCache, forward_batches
from tl_core.models.build import MEAN_OVER_NETWORKS, inner_classifier
from tl_core.models.weights import weights_identity
from tl_core.runs.folder import load_run, read_summary
from tl_core.training.context import RunContext
from tl_core.training.inputs import feature_forward, feature_keys, feature_views, progress_events, report_decoded, report_runtime


def config_from_run(run_dir: str | os.PathLike, data_dir: str, out_dir: str, **changes) -> TrainConfig:
    """The earlier run's settings for a new run on ``data_dir`` (with ``changes``), training again from it.

    Raises:
        RunError: When the run folder has no readable ``run.json`` with its settings.
    """
    folder = Path(run_dir).expanduser()
    try:
        config = TrainConfig.from_dict(read_summary(folder).config)
    except (RunError, ValueError, TypeError) as error:
        raise RunError(f"'{folder}' has no readable run.json with the run's settings ({' '.join(str(error).split())[:200]}). Pick another run.") from error
    return TrainConfig.from_dict({**config.to_dict(), "data_dir": str(data_dir), "out_dir": str(out_dir), "from_run": str(folder), **changes})


def warm_start(run: RunContext) -> None:
    """Trained again: start from the earlier run's trained weights when the classes and the model's shape are the same.

    Feature extraction takes the earlier head (the backbone is the frozen ImageNet one either way). Strategies that
    train backbone layers take the whole classifier, so fine-tuning goes on from where the earlier run ended and the
    head's warm-up is skipped (the head is trained already).
    """
    earlier, whole = run.earlier, run.config.strategy != "feature_extraction"
    what = "model" if whole else "head"
    if earlier.class_names != run.dataset.class_names:
        run.notice(f"The classes differ from the earlier run's ({', '.join(earlier.class_names)}), so the {what} starts from new weights.")
        return
    try:
        trained = inner_classifier(load_run(earlier.run_dir).model)
        if whole:
            run.model.classifier.set_weights(trained.get_weights())
        elif [weight.shape for weight in trained.layers[-1].get_weights()] != [tuple(weight.shape) for weight in run.model.head.weights]:
            # e.g. a pair of networks trained before its head became a head per network (tl_core.models.build.joined_head)
            run.notice(f"The head starts from new weights: the earlier run's head has another shape ({_head_shape(trained.layers[-1])}; this run's: {_head_shape(run.model.head)}).")
            return
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


def _head_shape(head) -> str:
    """``dense layers of 2,960 × 12`` or ``a head per network, 2,192 × 12 and 768 × 12``: a head's dense layers in words."""
    sizes = " and ".join(f"{rows:,} × {columns:,}" for rows, columns in (weight.shape for weight in head.get_weights() if len(weight.shape) == 2))
    joined = any(layer.name == MEAN_OVER_NETWORKS for layer in head.layers)  # tl_core.models.build.joined_head
    return f"a head per network, {sizes}" if joined else f"dense layers of {sizes}"


def read_images_reusing(run: RunContext) -> bool:
    """Training again: the unchanged images' pixels and features come from the earlier run's cache entries.

    Only new or changed images are decoded and go through the backbone. Returns
    False (nothing done, the usual path follows) when the earlier entries are
    gone from the cache or were made at another image size.
    """
    config, dataset, size, earlier = run.config, run.dataset, run.image_size, run.earlier
    name = earlier.run_dir.name
    earlier_path = decoded_images_path(str(earlier.cache_keys.get("images", "")), config.cache_dir)
    earlier_crop = bool(earlier.summary.config.get("centre_crop"))
    if earlier.summary.image_size != size or earlier_crop != config.crops_centre or not earlier_path.is_file():
        if earlier.summary.image_size != size:
            why = f"it used {earlier.summary.image_size} px"
        elif earlier_crop != config.crops_centre:
            why = "it used the middle of each image" if earlier_crop else "it used whole images"
        else:
            why = "its decoded images are no longer in the cache"
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
            memory_budget_bytes=config.memory_budget_mb * 1024**2, stop=run.stop, on_progress=progress_events(run, "decode"), centre_crop=config.crops_centre,
        )
        pixels[new] = added.pixels
        failed = added.failed
    run.decoded = store_decoded_images(records, size, pixels, failed, config.cache_dir, config.crops_centre)
    report_decoded(run, run.decoded)
    run.cache_use["images"] = "reused from the earlier run" if not new else "partly reused from the earlier run"
    through_backbone = 0
    if config.uses_features and not run.warm_started:  # a warm-started model needs no features: it has no warm-up
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
    same_backbone = earlier.summary.weights == weights_identity(run.spec, run.weights)
    views, _ = feature_views(run)
    earlier_keys = {ORIGINAL: earlier.cache_keys.get("features"), MIRRORED: earlier.cache_keys.get("mirrored")}
    before = {view: cache.load(earlier_keys[view]) if same_backbone and earlier_keys[view] else None for view in views}
    # A run made before the network's features changed shape (e.g. earlier layers joined them) has features of another length.
    before = {view: array if array is not None and array.shape[1:] == (run.spec.feature_dim,) else None for view, array in before.items()}
    run.mirrors_deferred = MIRRORED in views  # the head learns from them after the first model (tl_core.training.mirrors)
    if MIRRORED in views and before[MIRRORED] is None:  # the earlier run had none: computed then, where they pay
        views = [ORIGINAL]
    work = {view: np.arange(total) if before[view] is None else np.asarray(new, dtype=np.int64) for view in views}
    count = sum(len(rows) for rows in work.values())
    what = "bottleneck features" + (" (and those of their mirror images)" if MIRRORED in views else "")
    run.on_event(PhaseStarted("features", f"Computing the {what} of {len(work[ORIGINAL])} images with the frozen {run.spec.display_name}", total=count))
    keys = feature_keys(run, run.decoded.key)
    features, done = {}, 0
    for view in views:
        array = np.zeros((total, run.spec.feature_dim), dtype=np.float32)
        if before[view] is not None:
            array[reused] = before[view][earlier_rows]
        if len(work[view]):
            array[work[view]] = run.timed(
                "features", forward_batches, feature_forward(run, view, count), run.decoded.pixels, work[view],
                stop=run.stop, on_progress=progress_events(run, "features"), progress_offset=done, progress_total=count,
            )
            done += len(work[view])
        cache.save(keys[view], array)  # the mirror images' too: read from here after the first model
        features[view] = array
    run.features = {ORIGINAL: features[ORIGINAL]}
    run.cache_use["features"] = "partly reused from the earlier run" if count < total * len(views) else "miss"
    if count:
        report_runtime(run)
    return len(work[ORIGINAL])
