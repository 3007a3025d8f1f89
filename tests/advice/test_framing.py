"""Whole images or their middles: the probe compares both on the same images and folds, and counts only a gain beyond its noise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tl_core.advice import framing, similarity
from tl_core.advice.framing import CropProbe, worth_probing
from tl_core.data.scan import scan_dataset

from conftest import make_class_folders


@pytest.fixture
def dataset(tmp_path: Path):
    return scan_dataset(make_class_folders(tmp_path / "shapes", {"circles": 12, "squares": 12}))


class _Decoded:
    key = "sample"


def _probe_on(monkeypatch: pytest.MonkeyPatch, whole: np.ndarray, middle: np.ndarray, labels: np.ndarray) -> CropProbe | None:
    """The probe with the decoded sample standing for its own features (whole images, or their middles)."""
    keep = np.ones(len(labels), dtype=bool)
    monkeypatch.setattr(similarity, "decoded_sample", lambda *arguments, centre_crop=False: (_Decoded(), keep, middle if centre_crop else whole, labels, keep))
    monkeypatch.setattr(framing, "cached_features", lambda forward_of, pixels, keys, views, cache_dir: ({view: pixels for view in views}, True))
    monkeypatch.setattr("tl_core.models.weights.weights_identity", lambda spec, weights: "imagenet")
    return framing.probe_centre_crop(None, "mobilenet_v2", 500)


def test_middles_that_separate_the_classes_better_are_credited_less_their_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centres = generator.normal(size=(3, 16))
    blurred = centres[labels] + generator.normal(scale=1.6, size=(120, 16))  # the whole images: the subject is small
    clear = centres[labels] + generator.normal(scale=0.4, size=(120, 16))  # their middles: it fills the view

    probe = _probe_on(monkeypatch, blurred, clear, labels)
    assert probe.images == 120 and probe.probe_accuracy > probe.baseline_accuracy + 0.05
    assert 0.0 < probe.difference_error < 0.1 and probe.pays
    assert probe.credited_difference == pytest.approx(probe.probe_accuracy - probe.baseline_accuracy - probe.difference_error)
    assert "points)" in probe.words() and f"{probe.probe_accuracy:.1%} against {probe.baseline_accuracy:.1%}" in probe.words()

    scenes = _probe_on(monkeypatch, clear, blurred, labels)  # the edges carry the class: the middles lose
    assert scenes.probe_accuracy < scenes.baseline_accuracy and not scenes.pays


def test_a_gain_inside_the_noise_does_not_pay_and_a_sample_with_an_unreadable_image_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not CropProbe(0.905, 0.900, 0.008, 400).pays and CropProbe(0.93, 0.90, 0.01, 400).pays
    keep = np.array([True, False, True])
    monkeypatch.setattr(similarity, "decoded_sample", lambda *arguments, centre_crop=False: (_Decoded(), keep, np.zeros((2, 4)), np.array([0, 1]), keep[keep]))
    assert framing.probe_centre_crop(None, "mobilenet_v2", 500) is None


def test_the_probe_is_skipped_where_even_half_the_errors_would_add_under_half_a_point() -> None:
    assert worth_probing(0.95) and worth_probing(0.985)
    assert not worth_probing(0.99) and not worth_probing(0.999)


def test_where_the_middles_pay_every_candidate_starts_from_the_credited_gain(dataset) -> None:
    from tl_core.advice.advise import _crop_reason, _with_middles

    from fake_engine import canned_advice

    measurement = replace(canned_advice(dataset).measurement, feature_extraction_estimate=0.90)
    paying, not_paying = CropProbe(0.95, 0.92, 0.01, 300), CropProbe(0.92, 0.93, 0.01, 300)
    assert _with_middles(measurement, paying).feature_extraction_accuracy == pytest.approx(0.92)
    assert _with_middles(measurement, not_paying) is measurement and _with_middles(measurement, None) is measurement
    assert _with_middles(replace(measurement, feature_extraction_estimate=0.995), paying).feature_extraction_accuracy == 1.0
    assert "reads each image's middle" in _crop_reason(paying) and "the whole images are used" in _crop_reason(not_paying)
    assert "same 300 images" in _crop_reason(paying)


def test_auto_reads_the_middles_where_the_advice_measured_them_better_unless_the_user_said_no(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.advice import auto
    from tl_core.advice.settings import suggested_settings
    from tl_core.config import TrainConfig

    from fake_engine import canned_advice

    advice = replace(canned_advice(dataset), centre_crop=True, crop_probe=CropProbe(0.95, 0.92, 0.01, 300))
    assert advice.to_dict()["centre_crop"] is True and advice.to_dict()["crop_probe"]["images"] == 300
    monkeypatch.setattr("tl_core.advice.advise.advise", lambda *arguments, **keywords: advice)
    assert suggested_settings(dataset, "mobilenet_v2", "feature_extraction", advice=advice).centre_crop
    config, notes = auto.resolve_auto(TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto").validated())
    assert config.centre_crop is True and config.input_size is None  # the backbone's own size: its frame is set when the run starts
    assert any(note.startswith("Centre crop on") for note in notes)
    said_no = TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto", centre_crop=False).validated()
    assert auto.resolve_auto(said_no)[0].centre_crop is False
    monkeypatch.setattr("tl_core.advice.advise.advise", lambda *arguments, **keywords: replace(advice, centre_crop=False))
    assert not auto.resolve_auto(TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto").validated())[0].crops_centre
    assert TrainConfig(data_dir="d", out_dir="o", image_size=224, centre_crop=True).input_size == 280
    assert TrainConfig(data_dir="d", out_dir="o", image_size=224).input_size == 224


def test_a_comparison_of_strategies_reads_the_images_as_the_advice_chose(tmp_path: Path) -> None:
    from tl_core.advice.compare import comparison_config

    assert comparison_config(tmp_path, "fine_tune", tmp_path / "run", 2, centre_crop=True).crops_centre
    assert not comparison_config(tmp_path, "fine_tune", tmp_path / "run", 2).crops_centre
