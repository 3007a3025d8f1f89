"""Bottleneck features: one forward pass over decoded images, cached by view, shared by training, advice and the label finder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_core.events import Interrupted, StopRequest
from tl_core.features import MIRRORED, ORIGINAL, FeatureCache, cached_features, forward_batches, load_features, out_of_fold_probabilities, view_keys
from tl_core.models.backbones import get_backbone


def mean_colour(batch: np.ndarray) -> np.ndarray:
    """A stand-in forward pass: each image's mean colour (three features)."""
    return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))


def test_forward_batches_runs_the_chosen_rows_in_order_and_reports_progress() -> None:
    pixels = np.stack([np.full((4, 4, 3), value, dtype=np.uint8) for value in range(10)])
    progress = []
    outputs = forward_batches(mean_colour, pixels, np.array([7, 2, 9]), batch_size=2, on_progress=lambda done, total: progress.append((done, total)), progress_offset=10, progress_total=13)
    assert outputs.dtype == np.float32 and outputs[:, 0].tolist() == [7.0, 2.0, 9.0]
    assert progress == [(12, 13), (13, 13)]


def test_a_stop_request_ends_the_pass_before_the_next_batch() -> None:
    pixels = np.zeros((6, 4, 4, 3), dtype=np.uint8)
    stop = StopRequest()
    calls = []

    def forward(batch):
        calls.append(len(batch))
        stop.request("enough")
        return mean_colour(batch)

    with pytest.raises(Interrupted, match="enough"):
        forward_batches(forward, pixels, batch_size=2, stop=stop)
    assert calls == [2]


def test_speeds_count_full_batches_after_the_first() -> None:
    speeds = []
    forward_batches(mean_colour, np.zeros((7, 4, 4, 3), dtype=np.uint8), batch_size=2, speeds=speeds)
    assert len(speeds) == 1 and speeds[0] > 0  # batches 2 and 3 were full and not the first; the last (1 image) is not counted


def test_features_are_computed_once_per_view_then_read_from_the_cache(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)
    keys = view_keys(get_backbone("mobilenet_v2"), "imagenet:test", 4, "images-key")
    computed = []

    def forward_of(view: str):
        computed.append(view)
        return (lambda batch: mean_colour(batch[:, :, ::-1])) if view == MIRRORED else mean_colour

    first, from_cache = cached_features(forward_of, pixels, keys, [ORIGINAL, MIRRORED], tmp_path)
    again, from_cache_again = cached_features(forward_of, pixels, keys, [ORIGINAL, MIRRORED], tmp_path)

    assert computed == [ORIGINAL, MIRRORED] and not from_cache and from_cache_again
    np.testing.assert_array_equal(first[ORIGINAL], again[ORIGINAL])
    assert keys[ORIGINAL] != keys[MIRRORED] and FeatureCache(tmp_path).path(keys[MIRRORED]).is_file()
    # Features cached for another number of images do not count.
    assert load_features(keys, [ORIGINAL], 6, tmp_path) == {ORIGINAL: None}


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_image() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    # With one neighbour, a model that had seen an image would always give its own label (probability 1).
    features = np.repeat(np.arange(10, dtype=np.float32)[:, None], 2, axis=1)
    labels = np.array([0, 1] * 5)
    probabilities = out_of_fold_probabilities(features, labels, 2, 5, 0, lambda: KNeighborsClassifier(n_neighbors=1))
    assert probabilities.shape == (10, 2)
    assert (probabilities.argmax(axis=1) != labels).all()  # each image's nearest other image has the other label
