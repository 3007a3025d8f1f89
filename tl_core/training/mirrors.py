"""Feature extraction's mirror images, after the first model: computed only where they are expected to pay.

With left-right flips on, feature extraction can also train the head on the
mirror images' features and average each prediction with the mirror image's
(test-time flip). That costs a second pass of the backbone over every image,
as much as the first. Measured on four sets (MobileNetV2, 224 px, logistic
head; ``docs/benchmarks.md``), it fixed a fifth to a quarter of the errors
left: ants_bees 94.8 -> 96.1 %, cat_breeds 79.6 -> 82.4 %, aerial 93.7 -> 94.9 %,
and nothing measurable on cats_dogs (98.7 -> 98.8 %), where almost none are left.

So a run does not wait for them. The head is first trained on the images'
own features, and then:

- ``mirrors_pay`` looks at that head's validation errors: when a fifth of them
  is expected to be under ``MIRRORS_WORTH_POINTS`` points (``tl_core.features``),
  the mirror images are left out;
- otherwise ``learn_from_mirrors`` takes the mirror images' features from the
  cache (``cached_mirror_features``) or computes and caches them, and the head
  trains on, on both views; the caller evaluates it with the test-time flip.

Where turned images show the same class too (``AugmentConfig.turns``: aerial
scenes, microscope images, surfaces), the same pass adds the six turned views
(a quarter, half and three-quarter turn, each mirrored or not), and the
prediction averages all eight. On aerial, a cross-validated logistic probe on
every image went from 97.4 % with the mirror images to 98.1 % with all eight;
on cat breeds, where up matters, it lost 2 points (0.845 -> 0.81-0.83), which
is why the advice turns them on only where a probe reads turned images at least as well
as upright ones.

Every run goes through these same steps, whatever the cache holds, so the same
settings and seed give the same model. When the mirror images' features must
be computed, the caller saves the first model before (the user has it while
the second pass runs); a stop during it keeps that model as it was.
"""

from __future__ import annotations

import numpy as np

from tl_core.events import Interrupted, PhaseStarted
from tl_core.features import MIRRORS_WORTH_POINTS, ORIGINAL, FeatureCache, forward_batches, load_features, mirror_gain_points
from tl_core.training.context import RunContext
from tl_core.training.fitting import fit_head
from tl_core.training.inputs import feature_forward, feature_keys, progress_events, split_rows


def mirrors_pay(run: RunContext) -> tuple[bool, str]:
    """Whether the mirror images' features are expected to be worth their pass of the backbone, and why in words.

    A fifth of the first model's validation errors is the expected gain (``mirror_gain_points``).
    """
    rows, labels = split_rows(run)
    count = len(labels["val"])
    predicted = run.model.head.predict(run.features[ORIGINAL][rows["val"]], batch_size=256, verbose=0).argmax(axis=1)
    errors = int(np.sum(predicted != labels["val"]))
    expected = mirror_gain_points(errors, count)
    extra, words = len(run.config.extra_feature_views), extra_views_words(run)
    passes = "a second pass of the backbone" if extra < 2 else f"{extra} more passes of the backbone"
    averaged = "the image and its mirror image" if extra < 2 else f"all {extra + 1} views (turned by a quarter, half and three-quarter turn, mirrored or not)"
    if expected < MIRRORS_WORTH_POINTS:
        return False, (
            f"{words.capitalize()} skipped: the first model gets {count - errors} of {count} validation images right, so the {words}, which fixed "
            f"about a fifth of the remaining errors on our benchmarks, would add about {expected:.1f} points here for {passes}."
        )
    return True, (
        f"The first model gets {count - errors} of {count} validation images right. The {words} fixed about a fifth of the remaining "
        f"errors on our benchmarks (about {expected:.1f} points here): the head trains on with them too (an epoch is kept only if validation loss improves), "
        f"and each prediction averages {averaged}."
    )


def extra_views_words(run: RunContext) -> str:
    """``mirror images``, or with turns ``mirror images and turned views``: what the extra views are, in words."""
    return "mirror images" if len(run.config.extra_feature_views) < 2 else "mirror images and turned views"


def cached_mirror_features(run: RunContext) -> dict[str, np.ndarray | None]:
    """The extra views' features (the mirror images', and the turned views' with turns) from the cache where a run computed them before; None where not."""
    return load_features(feature_keys(run, run.decoded.key), run.config.extra_feature_views, len(run.decoded.pixels), run.config.cache_dir)


def learn_from_mirrors(run: RunContext, found: dict[str, np.ndarray | None]) -> bool:
    """The head trained on from where it is, on the images and their extra views (``found``: each view's features, or None to compute them).

    Returns True when that is done; False when a stop came first, with the
    head, the curves and the best epoch put back as they were.
    """
    head = run.model.head
    kept = (head.get_weights(), list(run.history), run.best_loss, run.best_epoch, run.planned, run.mirror_epochs)
    pixels, total = run.decoded.pixels, len(run.decoded.pixels)
    missing = [view for view, array in found.items() if array is None]
    words = extra_views_words(run)
    try:
        if missing:
            count, keys = total * len(missing), feature_keys(run, run.decoded.key)
            views = f" ({len(missing)} views)" if len(missing) > 1 else ""
            run.on_event(PhaseStarted("features", f"Computing the bottleneck features of the {total} images' {words}{views} (the first model is saved)", total=count))
            for number, view in enumerate(missing):
                found[view] = run.timed(
                    "features", forward_batches, feature_forward(run, view, total), pixels,
                    stop=run.stop, on_progress=progress_events(run, "features"), progress_offset=number * total, progress_total=count,
                )
                FeatureCache(run.config.cache_dir).save(keys[view], found[view])
        else:
            run.notice(f"The {words}' features reused from the cache.")
        run.features.update(found)
        if run.config.augment:  # else they serve the test-time flip only
            run.planned = len(run.history) + run.config.head_epochs
            run.mirror_epochs = run.config.head_epochs
            fit_head(run, run.config.head_epochs, f"Training the head on, with the {words}' features added")
        if run.stop.requested:
            raise Interrupted
    except Interrupted:
        head.set_weights(kept[0])
        run.history[:], run.best_loss, run.best_epoch, run.planned, run.mirror_epochs = kept[1], kept[2], kept[3], kept[4], kept[5]
        for view in found:
            run.features.pop(view, None)
        run.notice(f"Stopped while learning from the {words}: the first model is kept as it was saved.")
        return False
    return True
