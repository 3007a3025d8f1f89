"""The backbone's runtime: chosen by a measurement on the run's own batches, kept honest by a parity check, remembered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tl_core.features import MIRRORED, forward_batches
from tl_core.runtime import KERAS, MEASURE_FROM_IMAGES, MIN_COSINE, ONNX, BackboneRunner, Candidate, RuntimeChoice, cosine_similarities


class Clock:
    """A fake clock: each fake runtime moves it on by its cost per image."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_backbone(clock: Clock, seconds_per_image: float, drift: float = 0.0):
    """A "backbone" whose features are the mean colour of each image (plus a planted drift), costing fake time."""

    def forward(batch: np.ndarray) -> np.ndarray:
        clock.now += seconds_per_image * len(batch)
        features = np.asarray(batch, dtype=np.float32).mean(axis=(1, 2)) + 1.0
        if drift:
            features = features * (1 + drift * np.random.default_rng(len(batch)).normal(size=features.shape).astype(np.float32))
        return features

    return forward


def counting(candidate_forward, built: list):
    def make():
        built.append(1)
        return candidate_forward

    return make


def raising(error: Exception):
    def make():
        raise error

    return make


def runs_like_keras(keras, runner: BackboneRunner) -> BackboneRunner:
    """The runner gives Keras' features on 200 images and has settled on Keras."""
    pixels = images(200)
    np.testing.assert_allclose(forward_batches(runner.forward(), pixels), keras(pixels), rtol=1e-6)
    assert runner.choice.runtime == KERAS
    return runner


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)


def test_a_faster_runtime_with_the_same_features_is_chosen_and_remembered(tmp_path: Path) -> None:
    clock, built = Clock(), []
    keras, onnx = fake_backbone(clock, 0.010), fake_backbone(clock, 0.004)
    pixels = images(640)
    runner = BackboneRunner(keras, "mobilenet 224", len(pixels), [Candidate(ONNX, counting(onnx, built))], cache_dir=tmp_path, timer=clock)
    features = forward_batches(runner.forward(), pixels)
    np.testing.assert_allclose(features, keras(pixels), rtol=1e-6)  # what was measured and what followed: the same features
    choice = runner.choice
    assert choice.runtime == ONNX and not choice.remembered and built == [1]
    assert choice.images_per_second == {KERAS: pytest.approx(100.0), ONNX: pytest.approx(250.0)}
    assert choice.speedup == pytest.approx(2.5) and choice.min_cosine[ONNX] >= MIN_COSINE and choice.images_compared == 3 * 64
    assert "2.5x" in choice.describe() and "ONNX Runtime (float32)" in choice.describe()

    # Another run on this machine takes the remembered choice without measuring: Keras never runs.
    clock.now, built_again = 0.0, []
    keras_calls = []
    again = BackboneRunner(lambda batch: keras_calls.append(1), "mobilenet 224", 64, [Candidate(ONNX, counting(onnx, built_again))], cache_dir=tmp_path, timer=clock)
    assert again.choice.runtime == ONNX and again.choice.remembered and built_again == []  # nothing converted before it is used
    forward_batches(again.forward(), pixels[:128])
    assert keras_calls == [] and built_again == [1]


def test_a_runtime_whose_features_drift_is_refused_and_that_is_remembered(tmp_path: Path) -> None:
    clock = Clock()
    keras, drifting = fake_backbone(clock, 0.010), fake_backbone(clock, 0.002, drift=0.05)
    pixels = images(640)
    runner = BackboneRunner(keras, "resnet 224", len(pixels), [Candidate(ONNX, lambda: drifting)], cache_dir=tmp_path, timer=clock)
    features = forward_batches(runner.forward(), pixels)
    np.testing.assert_allclose(features, keras(pixels), rtol=1e-6)
    assert runner.choice.runtime == KERAS and runner.choice.min_cosine[ONNX] < MIN_COSINE
    assert "features differ from Keras'" in runner.choice.reason and "ONNX Runtime (cosine" in runner.choice.reason
    remembered = BackboneRunner(keras, "resnet 224", 640, [Candidate(ONNX, lambda: drifting)], cache_dir=tmp_path, timer=clock)
    assert remembered.choice.runtime == KERAS and remembered.choice.remembered


def test_a_runtime_not_fast_enough_is_not_taken_and_measured_again_next_time(tmp_path: Path) -> None:
    clock = Clock()
    keras, similar = fake_backbone(clock, 0.010), fake_backbone(clock, 0.009)
    runner = BackboneRunner(keras, "vgg 224", 640, [Candidate(ONNX, lambda: similar)], cache_dir=tmp_path, timer=clock)
    forward_batches(runner.forward(), images(640))
    assert runner.choice.runtime == KERAS and "no runtime was at least" in runner.choice.reason
    assert BackboneRunner(keras, "vgg 224", 640, [Candidate(ONNX, lambda: similar)], cache_dir=tmp_path, timer=clock).choice is None  # measures again


def test_few_images_a_gpu_or_a_failing_runtime_leave_keras_in_charge(tmp_path: Path) -> None:
    clock = Clock()
    keras = fake_backbone(clock, 0.01)
    few = BackboneRunner(keras, "x", MEASURE_FROM_IMAGES - 1, [Candidate(ONNX, lambda: keras)], cache_dir=tmp_path, timer=clock)
    assert few.choice.runtime == KERAS and "too few" in few.choice.reason
    gpu = BackboneRunner(keras, "x", 10_000, [Candidate(ONNX, lambda: keras)], keras_only="the backbone runs on the GPU.", cache_dir=tmp_path)
    assert gpu.choice.reason == "the backbone runs on the GPU."

    failing = runs_like_keras(keras, BackboneRunner(keras, "x", 10_000, [Candidate(ONNX, raising(RuntimeError("Unsupported op: FancyConv")))], cache_dir=tmp_path, timer=clock))
    assert "could not run this backbone (Unsupported op: FancyConv)" in failing.choice.reason
    assert not list(tmp_path.rglob("*.json"))  # none of these is remembered


def test_mirror_images_go_through_the_chosen_runtime_flipped(tmp_path: Path) -> None:
    seen = []

    def keras(batch):
        seen.append(np.asarray(batch).copy())
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)

    runner = BackboneRunner(keras, "x", 10, cache_dir=tmp_path)
    pixels = images(3)
    mirrored = runner.forward(MIRRORED)(pixels)
    np.testing.assert_array_equal(mirrored, pixels[:, :, ::-1].reshape(3, -1).astype(np.float32))


def test_a_remembered_choice_that_cannot_start_falls_back_to_keras(tmp_path: Path) -> None:
    clock = Clock()
    keras, onnx = fake_backbone(clock, 0.01), fake_backbone(clock, 0.001)
    forward_batches(BackboneRunner(keras, "y", 640, [Candidate(ONNX, lambda: onnx)], cache_dir=tmp_path, timer=clock).forward(), images(640))
    (choice_file,) = (tmp_path / "runtimes").glob("*.json")
    assert json.loads(choice_file.read_text())["runtime"] == ONNX

    runner = runs_like_keras(keras, BackboneRunner(keras, "y", 640, [Candidate(ONNX, raising(OSError("no converter here")))], cache_dir=tmp_path, timer=clock))
    assert "could not start (no converter here)" in runner.choice.reason


def test_cosine_similarities() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(cosine_similarities(a, b), [1.0, 1.0, 0.0], atol=1e-6)
    assert RuntimeChoice.from_dict(RuntimeChoice(ONNX, "r", {KERAS: 1.0, ONNX: 2.0}).to_dict()).speedup == 2.0


@pytest.mark.slow  # converts a real backbone with tf2onnx (a few seconds)
def test_onnx_runtime_gives_keras_features_on_a_real_backbone(tmp_path: Path, imagenet_weights: Path) -> None:
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_identity, backbone_runner, onnx_candidate

    spec = get_backbone("mobilenet_v2")
    model = build_feature_model(spec, build_backbone(spec, "imagenet"), 64)
    identity = backbone_identity(spec, weights_identity(spec, "imagenet"), 64)
    pixels = images(32, seed=3).repeat(8, axis=1).repeat(8, axis=2)  # 64 px
    onnx = onnx_candidate(model, identity, tmp_path).make()
    reference = backbone_runner(model, spec, weights_identity(spec, "imagenet"), 64, 10, cache_dir=tmp_path).forward()(pixels)
    assert cosine_similarities(onnx(pixels), reference).min() >= MIN_COSINE
    assert len(list((tmp_path / "runtimes").glob("*.onnx"))) == 1  # converted once, kept for later runs


def test_speeds_measured_through_a_runner_are_brought_back_to_keras_speed(tmp_path: Path) -> None:
    """Estimates multiply Keras' speed by the chosen runtime's speed-up: a speed measured on ONNX Runtime must not count it twice."""
    clock = Clock()
    keras, fast = fake_backbone(clock, 0.01), fake_backbone(clock, 0.004)
    measuring = BackboneRunner(keras, "backbone-a", MEASURE_FROM_IMAGES, [Candidate(ONNX, lambda: fast)], cache_dir=tmp_path, timer=clock)
    forward_batches(measuring.forward(), images(320))
    assert measuring.choice.runtime == ONNX and not measuring.choice.remembered
    assert measuring.keras_images_per_second(123.0) == pytest.approx(100.0)  # Keras' own speed, measured side by side in this pass
    remembered = BackboneRunner(keras, "backbone-a", 64, [Candidate(ONNX, lambda: fast)], cache_dir=tmp_path, timer=clock)
    assert remembered.choice.remembered and remembered.choice.speedup == pytest.approx(2.5)
    assert remembered.keras_images_per_second(250.0) == pytest.approx(100.0)
    assert remembered.keras_images_per_second(None) is None
    only_keras = BackboneRunner(keras, "backbone-b", 64, keras_only="the backbone runs on the GPU.", cache_dir=tmp_path, timer=clock)
    assert only_keras.keras_images_per_second(90.0) == 90.0
