"""Bottleneck features: the frozen backbone's pooled outputs, computed once per image and cached.

Training (feature extraction and the head's warm-up), the advice's probes and
the label finder all need the same thing: each image pushed once through the
frozen pretrained backbone, its pooled output kept. This module is the one
place that does it:

- ``compiled_forward``: a model on ``uint8`` batches, compiled by the Keras
  backend (optionally on the mirror images, or after an augmenter);
- ``forward_batches``: that function over chosen rows of a decoded-image
  array, batch by batch, with progress and stop requests;
- ``FeatureCache`` and the keys of its entries (backbone, weights, image size
  and the decoded images' key), so a second run, the advice and the label
  finder share what any of them computed;
- ``cached_features``: the features of some views of the images, from the
  cache where they are (``load_features``) and computed, then cached, where
  they are not (``compute_features``);
- ``out_of_fold_probabilities``: each image's class probabilities from a
  classifier that did not see it, on such features (the advice's probe and
  the label finder).

A *view* is the images as they are (``ORIGINAL``), mirrored left to right
(``MIRRORED``), or turned by a quarter, half or three-quarter turn, mirrored or
not (``TURNED_VIEWS``); feature extraction with left-right flips trains on the
first two, and where turned images show the same class too (aerial and
microscope images, surfaces: ``AugmentConfig.turns``) on all eight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tl_core.events import StopRequest
from tl_core.files import atomic_write, cache_key, default_cache_dir

ORIGINAL, MIRRORED = "original", "mirrored"
# Each view as (quarter turns counter-clockwise, mirrored first): with the first two, the eight symmetries of a square.
VIEW_TRANSFORMS = {
    ORIGINAL: (0, False), MIRRORED: (0, True),
    "turned_90": (1, False), "turned_180": (2, False), "turned_270": (3, False),
    "turned_90_mirrored": (1, True), "turned_180_mirrored": (2, True), "turned_270_mirrored": (3, True),
}
TURNED_VIEWS = tuple(view for view, (turns, _) in VIEW_TRANSFORMS.items() if turns)
QUARTER_TURN = "turned_90"  # the view the advice reads to tell whether turned images show the same class
FEATURE_BATCH_SIZE = 64
# The mirror images' features cost a second pass of the backbone; they are computed only where they are expected to pay
# (``tl_core.training.mirrors`` after the first model, ``tl_core.training.estimate`` before the run).
MIRRORS_FIX = 0.2  # the share of the remaining errors the mirror images fixed on our sets (0.08 to 0.25)
MIRRORS_WORTH_POINTS = 0.5  # below this expected gain, in accuracy points, the second pass is skipped (cats_dogs: 0.4 expected, 0.1 measured, for 20 s)


def extra_views(mirrors: bool, turns: bool) -> list[str]:
    """The views beyond the images themselves that show the same class: the mirror images where ``mirrors``, and where
    ``turns`` the turned images (mirrored too where ``mirrors``)."""
    views = [MIRRORED] if mirrors else []
    if turns:
        views += [view for view in TURNED_VIEWS if mirrors or not VIEW_TRANSFORMS[view][1]]
    return views


def view_of(images: np.ndarray, view: str) -> np.ndarray:
    """A batch ``(n, height, width, channels)`` as ``view`` shows it: mirrored left to right first, then turned."""
    turns, mirrored = VIEW_TRANSFORMS[view]
    if mirrored:
        images = images[:, :, ::-1]
    if turns:
        images = np.rot90(images, turns, axes=(1, 2))
    return np.ascontiguousarray(images) if turns or mirrored else images


def mirror_gain_points(errors: float, count: int) -> float:
    """Accuracy points the mirror images are expected to add, given ``errors`` of ``count`` validation images wrong.

    One error and one right answer are added, so a perfect score on a few images does not read as no errors at all.
    """
    return 100 * MIRRORS_FIX * (errors + 1) / (count + 2)

Progress = Callable[[int, int], None]


class FeatureCache:
    """Bottleneck features on disk: one ``float32`` array per key, written atomically."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "features"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def load(self, key: str | None) -> np.ndarray | None:
        """The cached features for ``key``, or None when there are none."""
        if not key:
            return None
        path = self.path(key)
        return np.load(path) if path.exists() else None

    def save(self, key: str, features: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(key), lambda temporary: np.save(temporary, features))


def feature_cache_key(spec, weights: str, image_size: int, images_key: str) -> str:
    """The key of a dataset's bottleneck features: backbone (a ``BackboneSpec``), its weights' identity, image size and the decoded images' key."""
    return cache_key("features-v1", *spec.identity, weights, image_size, images_key)


def mirrored_feature_cache_key(features_key: str) -> str:
    """The key of the features of the same images mirrored left to right."""
    return cache_key("mirrored", features_key)


def view_keys(spec, weights: str, image_size: int, images_key: str) -> dict[str, str]:
    """The cache key of each view's features."""
    original = feature_cache_key(spec, weights, image_size, images_key)
    return {ORIGINAL: original, MIRRORED: mirrored_feature_cache_key(original), **{view: cache_key(view, original) for view in TURNED_VIEWS}}


def augmented_features_key(spec, weights: str, image_size: int, images_key: str, augmentation: dict, seed: int, view: int, rows: np.ndarray) -> str:
    """The key of the features of one randomly augmented copy of some rows (feature extraction's ``augment_views``)."""
    return cache_key(
        "augmented-features-v1", *spec.identity, weights, image_size, images_key, sorted(augmentation.items()), seed, view, rows.tobytes()
    )


def compiled_forward(model, size: int, augmenter=None, view: str = ORIGINAL) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` (after ``augmenter`` when given, on the ``view`` of the images) as a function of ``uint8`` batches.

    The model runs through ``predict_on_batch``, which Keras compiles once on every
    backend (``tf.function``, ``jax.jit``; PyTorch runs eagerly). JAX compiles once per
    batch shape, so a short last batch is padded to the length of the first: one
    compilation for a whole dataset. The function returns ``float32`` NumPy arrays.
    """
    import keras

    pad = keras.config.backend() == "jax"
    length = [0]

    def forward(batch: np.ndarray) -> np.ndarray:
        images = view_of(np.asarray(batch, dtype=np.float32), view)
        if augmenter is not None:
            images = keras.ops.convert_to_numpy(augmenter(images, training=True))
        count = len(images)
        length[0] = max(length[0], count)
        if pad and count < length[0]:
            images = np.concatenate([images, np.zeros((length[0] - count, *images.shape[1:]), dtype=np.float32)])
        return np.asarray(model.predict_on_batch(images), dtype=np.float32)[:count]

    return forward


def forward_batches(
    forward: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    rows: np.ndarray | None = None,
    *,
    batch_size: int = FEATURE_BATCH_SIZE,
    stop: StopRequest | None = None,
    on_progress: Progress | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
    speeds: list[float] | None = None,
) -> np.ndarray:
    """``forward`` over ``pixels[rows]`` (every row when None), a batch at a time; the outputs stacked, ``float32``.

    Batches are gathered straight from the (in-memory or memory-mapped) array:
    copying 64 images takes milliseconds against the forward pass's hundreds,
    and an input pipeline's threads would only compete with the model for the cores.

    Args:
        forward: A function of a ``uint8`` batch (e.g. ``compiled_forward``'s).
        pixels: ``uint8`` images ``(n, size, size, 3)``.
        rows: The rows to run, in order.
        batch_size: Images per call.
        stop: Checked before every batch; a requested stop raises ``Interrupted``.
        on_progress: Called with (images done, total) after every batch; counted from ``progress_offset``
            out of ``progress_total`` when several calls make one phase.
        speeds: When given, the images per second of the full batches after the first (which may trace
            the function) are appended: the forward pass's throughput.
    """
    rows = np.arange(len(pixels)) if rows is None else np.asarray(rows, dtype=np.int64)
    total = progress_total if progress_total is not None else progress_offset + len(rows)
    outputs = None
    timed_images, timed_seconds = 0, 0.0
    for start in range(0, len(rows), batch_size):
        if stop is not None:
            stop.check()
        end = min(start + batch_size, len(rows))
        started = time.perf_counter()
        batch = np.asarray(forward(pixels[rows[start:end]]), dtype=np.float32)
        if start and end - start == batch_size:
            timed_images, timed_seconds = timed_images + batch_size, timed_seconds + time.perf_counter() - started
        if outputs is None:
            outputs = np.zeros((len(rows), *batch.shape[1:]), dtype=np.float32)
        outputs[start:end] = batch
        if on_progress is not None:
            on_progress(progress_offset + end, total)
    if speeds is not None and timed_images:
        speeds.append(timed_images / timed_seconds)
    return outputs if outputs is not None else np.zeros((0, 0), dtype=np.float32)


def load_features(keys: dict[str, str], views: Sequence[str], count: int, cache_dir: str | Path | None = None) -> dict[str, np.ndarray | None]:
    """The cached features of each view (None for a view not in the cache, or cached for a different number of images)."""
    cache = FeatureCache(cache_dir)
    found = {view: cache.load(keys[view]) for view in views}
    return {view: array if array is not None and len(array) == count else None for view, array in found.items()}


def cached_features(
    forward_of: Callable[[str], Callable[[np.ndarray], np.ndarray]],
    pixels: np.ndarray,
    keys: dict[str, str],
    views: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    stop: StopRequest | None = None,
    on_progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """The features of each of ``views`` of every image: from the cache where they are, else computed and cached.

    Args:
        forward_of: Gives the forward pass of a view (e.g. ``compiled_forward(model, size, view=view)``);
            called only for a view that must be computed.
        pixels: The decoded images the keys describe.
        keys: The cache key of each view (``view_keys``).
        views: ``ORIGINAL`` and/or ``MIRRORED``.
        cache_dir: The cache folder.
        stop: Checked between batches.
        on_progress: Called with (images done, total) over all the views computed.

    Returns:
        The features of each view, and True when every view came from the cache.
    """
    found = load_features(keys, views, len(pixels), cache_dir)
    missing = [view for view in views if found[view] is None]
    if not missing:
        if on_progress is not None:
            on_progress(len(pixels), len(pixels))
        return found, True
    found.update(compute_features(forward_of, pixels, keys, missing, cache_dir, stop=stop, on_progress=on_progress))
    return found, False


def compute_features(
    forward_of: Callable[[str], Callable[[np.ndarray], np.ndarray]],
    pixels: np.ndarray,
    keys: dict[str, str],
    views: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    stop: StopRequest | None = None,
    on_progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """The features of each of ``views`` of every image, computed now and cached (see ``cached_features``)."""
    cache, total, computed = FeatureCache(cache_dir), len(pixels) * len(views), {}
    for number, view in enumerate(views):
        computed[view] = forward_batches(forward_of(view), pixels, stop=stop, on_progress=on_progress, progress_offset=number * len(pixels), progress_total=total)
        cache.save(keys[view], computed[view])
    return computed


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int, make_model: Callable, mirrored: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities of each image from a model trained on the other folds (stratified, seeded).

    ``make_model()`` gives a fresh scikit-learn classifier for each fold. With
    ``mirrored`` (features of the mirror images), each fold's model trains on both
    views and averages its answers over both, as feature extraction does. A class
    absent from a fold's training images gets probability 0 there.
    """
    if mirrored is None:
        return out_of_fold_view_probabilities(features, labels, num_classes, folds, seed, make_model, [features])[0]
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    for train, held_out in _folds(features, labels, folds, seed):
        model = make_model()
        model.fit(np.concatenate([features[train], mirrored[train]]), np.concatenate([labels[train], labels[train]]))
        probabilities[np.ix_(held_out, model.classes_)] = (model.predict_proba(features[held_out]) + model.predict_proba(mirrored[held_out])) / 2
    return probabilities


def out_of_fold_view_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int, make_model: Callable, views: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """For each of ``views`` (the same images seen otherwise, e.g. their mirror images): class probabilities of each
    held-out image's view from a model trained on ``features`` of the other folds. One model per fold answers for every view."""
    answers = [np.zeros((len(labels), num_classes), dtype=np.float64) for _ in views]
    for train, held_out in _folds(features, labels, folds, seed):
        model = make_model()
        model.fit(features[train], labels[train])
        for answer, view in zip(answers, views, strict=True):
            answer[np.ix_(held_out, model.classes_)] = model.predict_proba(view[held_out])
    return answers


def _folds(features: np.ndarray, labels: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels)
