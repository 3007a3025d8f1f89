"""The time estimate: the model's arithmetic, the measured forward pass, and every pass over the images counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tl_core.config import TrainConfig


def test_the_trainable_share_of_the_arithmetic_falls_as_more_layers_freeze() -> None:
    from tl_core.training.estimate import layer_costs, trainable_share

    names, costs = layer_costs("mobilenet_v2", 224)
    assert len(names) == len(costs) == 154
    assert sum(costs) == pytest.approx(300e6, rel=0.05)  # MobileNetV2's published ~300 M multiply-adds at 224 px
    shares = [trainable_share("mobilenet_v2", 224, frozen) for frozen in (0, 56, 107, 154)]
    assert shares[0] == pytest.approx(1.0) and shares[-1] == 0.0 and shares == sorted(shares, reverse=True)


@pytest.mark.slow
def test_throughput_is_measured_once_and_scaled_to_other_sizes(tmp_path: Path, imagenet_weights: Path) -> None:
    from tl_core.training.estimate import THROUGHPUT_FILE, forward_throughput

    measured = forward_throughput("mobilenet_v2", 64, "CPU x test", cache_dir=tmp_path)
    assert measured.images_per_second > 0
    remembered = json.loads((tmp_path / THROUGHPUT_FILE).read_text())
    assert list(remembered) == ["CPU x test|mobilenet_v2|64"]
    assert forward_throughput("mobilenet_v2", 64, "CPU x test", cache_dir=tmp_path) == measured  # read back, not measured again
    scaled = forward_throughput("mobilenet_v2", 128, "CPU x test", cache_dir=tmp_path, measure=False)
    assert scaled.images_per_second == pytest.approx(measured.images_per_second / 4)
    assert forward_throughput("resnet50", 64, "CPU x test", cache_dir=tmp_path, measure=False) is None


def test_estimate_counts_every_pass_over_the_images(tmp_path: Path, tiny_dataset: Path) -> None:
    from tl_core.data.scan import scan_dataset
    from tl_core.training.estimate import Throughput, duration_text, estimate_run

    dataset = scan_dataset(tiny_dataset)
    throughput = Throughput("CPU x test", "mobilenet_v2", 32, 100.0, 0.0)

    def estimate(strategy: str, **settings):
        config = TrainConfig(data_dir=str(tiny_dataset), out_dir="", strategy=strategy, image_size=32, cache_dir=str(tmp_path), **settings).validated()
        return estimate_run(config, dataset, throughput, decode_seconds=0.01)

    features = estimate("feature_extraction")
    # 30 images and their 30 mirror images through the backbone at 100 images/s.
    assert features.parts["features"] == pytest.approx(0.6, abs=0.05)
    assert estimate("feature_extraction", quick=True).parts["features"] == pytest.approx(0.3, abs=0.05)  # quick: no mirror images
    fine_tune = estimate("fine_tune", epochs=4)
    assert fine_tune.parts["fine_tune"] > 0 and fine_tune.seconds > features.seconds
    assert estimate("fine_tune", epochs=8).parts["fine_tune"] == pytest.approx(2 * fine_tune.parts["fine_tune"], rel=1e-3)
    assert estimate("full_fine_tune", epochs=4).parts["full_fine_tune"] > fine_tune.parts["fine_tune"]  # more layers to train
    assert "forward pass measured at 100 images/s" in features.basis
    # Portable files cost their measured conversion time (the tests' default asks for none).
    assert "portable files" not in features.parts
    assert estimate("feature_extraction", export_formats=("tflite", "onnx")).parts["portable files"] == pytest.approx(16.0)
    assert [duration_text(seconds) for seconds in (12, 61, 400, 4000)] == ["10 s", "1 min", "7 min", "1 h 7 min"]


@pytest.mark.slow
def test_a_run_states_its_estimate_and_keeps_it_in_run_json(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.events import Notice
    from tl_core.training.run import train

    events = []
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=2, image_size=32, cache_dir=str(tmp_path / "cache"))
    result = train(config, on_event=events.append)
    assert any(isinstance(event, Notice) and event.message.startswith("Estimated time: about ") for event in events)
    assert result.summary.estimate["seconds"] > 0 and "features" in result.summary.estimate["parts"]
