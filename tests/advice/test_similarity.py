"""The similarity measurement's mirror-image test (a probe trained on the images, read on their mirror images), and the joined networks' probe."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tl_core.advice.similarity import MIRROR_LOSS_LIMIT, _probe_accuracy, _view_accuracies
from tl_core.models.backbones import get_backbone


def _features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes of 40 feature vectors each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 40)
    centres = rng.normal(size=(3, 16)) * 3
    return centres[labels] + rng.normal(size=(len(labels), 16)), labels


def test_a_probe_read_on_mirror_images_tells_same_class_views_from_other_class_views() -> None:
    features, labels = _features()
    plain = _probe_accuracy(features, labels, 0)
    # A scene's mirror image: the same class, its features moved a little.
    same = features + np.random.default_rng(1).normal(scale=0.3, size=features.shape)
    # A digit's mirror image: it reads as another class (its features are another class's).
    other = features[np.argsort(np.roll(labels, 40), kind="stable")]
    on_images, on_same, on_other = _view_accuracies(features, labels, 0, [features, same, other])
    assert on_images == plain  # the images themselves: the plain probe, same folds
    assert on_same >= plain - MIRROR_LOSS_LIMIT
    assert on_other < plain - 0.5


def test_mirror_images_help_follows_the_transfer_when_it_was_measured() -> None:
    from tl_core.advice.similarity import Measurement

    measurement = Measurement(
        sample_size=480, chance_accuracy=0.05, probe_accuracy=0.9, random_probe_accuracy=0.4, probe_similarity=0.8, shift_profile=[], mean_shift=0.2,
        shift_similarity=0.7, imagenet_confidence=None, confidence_similarity=None, similarity_score=0.75, similarity="high", seconds=1.0,
    )
    # Aerial scenes: the probe with mirror images lost 0.7 points (noise), the transfer 1.3: mirror images help.
    aerial = replace(measurement, probe_accuracy=0.903, mirror_probe_accuracy=0.896, mirror_transfer_accuracy=0.890)
    # Digits: the probe with mirror images lost only 1 point, but read on mirror images the probe lost 10.7.
    digits = replace(measurement, probe_accuracy=0.980, mirror_probe_accuracy=0.971, mirror_transfer_accuracy=0.873)
    assert aerial.mirror_images_help and not digits.mirror_images_help
    assert replace(digits, mirror_transfer_accuracy=None).mirror_images_help  # nothing measured: flips stay on, as for photos


def test_the_joined_probe_compares_itself_with_its_first_network_image_by_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The joined features hold the first network's as their first columns: a probe per network, their answers averaged, against the first network's probe on the same folds."""
    import tl_core.advice.similarity as similarity

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 20)
    first = get_backbone("mobilenet_v2").feature_dim
    # The first network's part is noise; the second network's part separates the classes: a clear gain.
    features = np.concatenate([rng.normal(size=(len(labels), first)), labels[:, None] + 0.1 * rng.normal(size=(len(labels), 768))], axis=1).astype(np.float32)
    rows = np.arange(len(labels))  # the "pixels": each image's row, so every batch gets its own images' features

    class Runner:
        def forward(self, mirror=False):
            return lambda batch: features[batch]

        def keras_images_per_second(self, measured):
            return 50.0

    monkeypatch.setattr(similarity, "decoded_sample", lambda *arguments, **options: (None, None, rows, labels, np.ones(len(labels), dtype=bool)))
    monkeypatch.setattr("tl_core.models.build.build_backbone", lambda spec, weights: None)
    monkeypatch.setattr("tl_core.models.build.build_feature_model", lambda spec, backbone, size: None)
    monkeypatch.setattr("tl_core.runtime.backbone_runner", lambda *arguments, **keywords: Runner())
    monkeypatch.setattr(similarity, "forward_batches", lambda forward, pixels, **keywords: forward(pixels))
    widths = []
    own_probe = similarity.probe_probabilities
    monkeypatch.setattr(similarity, "probe_probabilities", lambda part, *arguments: widths.append(part.shape[1]) or own_probe(part, *arguments))
    probe = similarity.probe_at_size(None, "mobilenet_v2+mobilenet_0.75", 32, False)
    assert widths == [first, 768]  # a probe per network, their answers averaged, as the joined head does
    assert probe.backbone == "mobilenet_v2+mobilenet_0.75" and probe.probe_accuracy >= 0.95
    assert probe.baseline_accuracy < 0.75 and 0.0 < probe.difference_error < 0.15
    assert probe.credited_difference == pytest.approx(probe.probe_accuracy - probe.baseline_accuracy - probe.difference_error)


def test_turned_images_count_as_the_same_class_only_where_the_probe_reads_them_about_as_well() -> None:
    from tl_core.advice.similarity import turns_same_class

    assert turns_same_class(0.909, 0.923)  # aerial scenes, as the advice measured them
    assert not turns_same_class(0.827, 0.707)  # cat photos: up matters
    assert not turns_same_class(0.955, 0.947)  # ants and bees: read almost as well, yet the turned views cost 0.7-2 points
    assert turns_same_class(0.90, 0.90)
