"""The recipe's parts, each tested for what it does: defaults per strategy, the learning-rate schedule,
label smoothing, test-time flipping inside the exported model, and the time estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tl_core.config import QUICK_RECIPES, RECIPES, TrainConfig
from tl_core.errors import ConfigError

# --------------------------------------------------------------------------- defaults per strategy


@pytest.mark.parametrize("strategy", list(RECIPES))
def test_settings_left_unset_take_the_strategys_recipe(strategy: str) -> None:
    config = TrainConfig(data_dir="d", out_dir="o", strategy=strategy).validated()
    assert config.recipe_settings == RECIPES[strategy]
    quick = TrainConfig(data_dir="d", out_dir="o", strategy=strategy, quick=True).validated()
    assert quick.recipe_settings == {**RECIPES[strategy], **QUICK_RECIPES[strategy]}
    assert quick.epochs < config.epochs or (strategy == "feature_extraction" and not quick.test_time_flip)  # fewer passes over the images


def test_settings_given_are_kept_and_auto_waits_for_its_strategy() -> None:
    config = TrainConfig(data_dir="d", out_dir="o", strategy="fine_tune", epochs=2, test_time_flip=False, learning_rate_schedule="constant").validated()
    assert (config.epochs, config.test_time_flip, config.learning_rate_schedule, config.warmup_epochs) == (2, False, "constant", RECIPES["fine_tune"]["warmup_epochs"])
    auto = TrainConfig(data_dir="d", out_dir="o", strategy="auto").validated()
    assert auto.epochs is None and auto.test_time_flip is None
    with pytest.raises(ConfigError, match="learning_rate_schedule is 'linear' while it must be one of cosine, constant"):
        TrainConfig(data_dir="d", out_dir="o", learning_rate_schedule="linear").validated()


# --------------------------------------------------------------------------- schedule and label smoothing


def test_fine_tuning_schedule_warms_up_over_the_first_epoch_then_decays_to_a_hundredth() -> None:
    from tl_core.training.loops import fine_tune_schedule

    schedule = fine_tune_schedule(1e-4, steps_per_epoch=50, epochs=12, shape="cosine")
    rates = np.array([float(schedule(step)) for step in range(0, 600)])
    assert rates[0] == pytest.approx(1e-5, rel=1e-3)  # starts at a tenth of the peak
    assert rates.argmax() == pytest.approx(50, abs=1) and rates.max() == pytest.approx(1e-4, rel=1e-3)
    assert np.all(np.diff(rates[:50]) > 0) and np.all(np.diff(rates[51:]) <= 0)  # up during the first epoch, then only down
    assert rates[-1] == pytest.approx(1e-6, rel=0.05)  # a hundredth of the peak by the last step
    short = fine_tune_schedule(1e-4, steps_per_epoch=50, epochs=2, shape="cosine")  # warm-up is at most a tenth of the phase
    assert np.argmax([float(short(step)) for step in range(100)]) == 10
    assert fine_tune_schedule(1e-4, 50, 8, "constant") == 1e-4


def test_label_smoothing_keeps_the_head_from_becoming_certain() -> None:
    import keras

    from tl_core.models.build import build_head
    from tl_core.training.loops import HeadTrainer

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = (rng.normal(size=(200, 8)) + labels[:, None] * 4).astype("float32")  # easily separable
    confidence = {}
    for smoothing in (0.0, 0.2):
        keras.utils.set_random_seed(0)
        head = build_head(8, 2, dropout=0.0)
        HeadTrainer(head, 0.05, 32, label_smoothing=smoothing).fit(features, labels, (features, labels), epochs=60)
        confidence[smoothing] = float(np.asarray(head(features)).max(axis=1).mean())
    assert confidence[0.0] > 0.99
    # With 0.2 smoothing over 2 classes the target is 0.9 for the right class: the head settles near it.
    assert confidence[0.2] == pytest.approx(0.9, abs=0.03)


def test_smoothed_loss_for_fit_matches_the_formula() -> None:
    from tl_core.training.loops import SmoothedSparseCrossentropy

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    labels = np.array([0, 2])
    targets = np.eye(3)[labels] * 0.9 + 0.1 / 3
    expected = float(np.mean(-(targets * np.log(probabilities)).sum(axis=1)))
    assert float(SmoothedSparseCrossentropy(0.1)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- test-time flipping


def test_the_mirror_layers_mirror_exactly_and_the_flip_model_averages_both_answers(tmp_path: Path) -> None:
    import keras

    from tl_core.models.build import mirror_layers, unwrap_test_time_flip, with_test_time_flip

    size = 12
    inputs = keras.Input((size, size, 3))
    # A model that is not symmetric: it looks at the left half only.
    left_half = keras.layers.Cropping2D(((0, 0), (0, size // 2)))(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(left_half))
    classifier = keras.Model(inputs, outputs)
    images = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")

    mirrored = images
    for layer in mirror_layers(size):
        mirrored = layer(mirrored)
    np.testing.assert_array_equal(np.asarray(mirrored), images[:, :, ::-1])

    flip_model = with_test_time_flip(classifier, size)
    assert unwrap_test_time_flip(flip_model) is classifier and unwrap_test_time_flip(classifier) is classifier
    expected = (np.asarray(classifier(images)) + np.asarray(classifier(images[:, :, ::-1].copy()))) / 2
    np.testing.assert_allclose(np.asarray(flip_model(images)), expected, atol=1e-6)
    assert not np.allclose(expected, np.asarray(classifier(images)))  # the mirror image really changed the answer
    flip_model.save(tmp_path / "flip.h5")
    reloaded = keras.models.load_model(tmp_path / "flip.h5", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-6)


def test_feature_extraction_with_test_time_flip_reports_what_the_exported_file_predicts(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """The evaluation averages cached features of each image and its mirror image; the file mirrors pixels. Both must agree."""
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import evaluate_run
    from tl_core.training.run import train

    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=5, image_size=48, batch_size=8, cache_dir=str(tmp_path / "cache"))
    result = train(config)
    assert result.summary.test_time_flip is True and result.summary.config["test_time_flip"] is True
    run = load_run(tmp_path / "run")
    assert any(layer.name == "mean_over_mirror" for layer in run.model.layers)
    evaluation, details = evaluate_run(run, tiny_dataset)
    assert details["split"] == "test"
    assert evaluation.confusion_matrix == result.evaluation.confusion_matrix
    confidences = {item["path"]: item["confidence"] for item in result.evaluation.to_dict()["misclassified"]}
    assert {item["path"]: pytest.approx(item["confidence"], abs=1e-4) for item in evaluation.to_dict()["misclassified"]} == confidences


def test_flips_off_means_no_mirror_anywhere(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.config import AugmentConfig
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=2, image_size=32, augmentation=AugmentConfig(flip="none"), cache_dir=str(tmp_path / "cache"),
    )
    result = train(config)
    assert result.summary.test_time_flip is False  # asked for by the recipe, but a mirror image is not a valid example here
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 1  # no mirror images' features either


# --------------------------------------------------------------------------- the time estimate


def test_the_trainable_share_of_the_arithmetic_falls_as_more_layers_freeze() -> None:
    from tl_core.training.estimate import layer_costs, trainable_share

    names, costs = layer_costs("mobilenet_v2", 224)
    assert len(names) == len(costs) == 154
    assert sum(costs) == pytest.approx(300e6, rel=0.05)  # MobileNetV2's published ~300 M multiply-adds at 224 px
    shares = [trainable_share("mobilenet_v2", 224, frozen) for frozen in (0, 56, 107, 154)]
    assert shares[0] == pytest.approx(1.0) and shares[-1] == 0.0 and shares == sorted(shares, reverse=True)


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


def test_a_run_states_its_estimate_and_keeps_it_in_run_json(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.events import Notice
    from tl_core.training.run import train

    events = []
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=2, image_size=32, cache_dir=str(tmp_path / "cache"))
    result = train(config, on_event=events.append)
    assert any(isinstance(event, Notice) and event.message.startswith("Estimated time: about ") for event in events)
    assert result.summary.estimate["seconds"] > 0 and "features" in result.summary.estimate["parts"]
