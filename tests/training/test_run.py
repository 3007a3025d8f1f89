"""Training runs end to end with real Keras models: strategies, caches, freezing, events, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tl_core.config import TrainConfig
from tl_core.events import EpochEnded, ModelSaved, Notice, PhaseStarted, StopRequest, TrainingFinished, TrainingStarted, TrainingStopped
from tl_core.models.backbones import get_backbone
from tl_core.runs.folder import load_run
from tl_core.runs.predict import predict_files

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def _run(config: TrainConfig, stop: StopRequest | None = None):
    from tl_core.training.run import train

    events = []
    result = train(config, on_event=events.append, stop=stop)
    return result, events


def test_feature_extraction_on_ants_bees_is_accurate_and_reuses_its_cache(tmp_path: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    config = TrainConfig(data_dir=str(ants_bees), out_dir=str(tmp_path / "first"), epochs=10, image_size=224, cache_dir=str(tmp_path / "cache"))
    result, events = _run(config)
    assert result.status == "finished"
    assert result.evaluation.accuracy >= 0.85, result.evaluation.accuracy  # on ants_bees' own val/ folder, which chose nothing
    assert result.summary.cache == {"images": "miss", "features": "miss"}
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.evaluation.accuracy
    assert metrics["class_names"] == ["ants", "bees"] and metrics["evaluated_split"] == "test" and metrics["selection_split"] == "val"
    assert np.array(metrics["confusion_matrix"]).sum() == 153
    assert set(metrics["per_class"]["ants"]) == {"precision", "recall", "f1", "support"}
    assert len(metrics["history"]) == len([event for event in events if isinstance(event, EpochEnded)]) >= 1
    assert all(set(entry) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"} for entry in metrics["history"])
    assert {"path", "true_class", "predicted_class", "confidence"} <= set(metrics["misclassified"][0])
    assert 0.5 <= metrics["roc_auc"] <= 1.0
    run_info = json.loads((tmp_path / "first" / "run.json").read_text())
    assert run_info["data"]["fingerprint"] and run_info["versions"]["keras"] and run_info["seconds"]["features"] > 0
    assert run_info["data"]["modes"] == {"RGB": 397, "P": 1}  # how each image was stored, for the Export page's snippets
    assert json.loads((tmp_path / "first" / "labels.json").read_text()) == ["ants", "bees"]
    # The first model (the images' own features) is saved before the mirror images are computed; with 37
    # validation images they are expected to pay, so the model is trained on and saved again with the test-time flip.
    saved = [index for index, event in enumerate(events) if isinstance(event, ModelSaved)]
    assert len(saved) == 2 and isinstance(events[-1], TrainingFinished) and saved[-1] < len(events) - 1
    mirrors_phase = next(index for index, event in enumerate(events) if isinstance(event, PhaseStarted) and "mirror images" in event.description)
    assert saved[0] < mirrors_phase < saved[1]
    # One story: the head's epochs on the mirror images count in the phase's plan, and the last note names the epoch the file holds.
    head_epochs = len(metrics["history"])
    assert run_info["phases"] == [{"phase": "head", "title": "the head", "first_epoch": 1, "last_epoch": head_epochs, "epochs": head_epochs, "planned_epochs": 2 * config.epochs, "stopped_early": head_epochs < 2 * config.epochs}]
    kept = [note for note in run_info["notes"] if "keeps the weights of epoch" in note]
    assert kept[0].startswith("The first model keeps") and kept[-1].startswith(f"The model (with the mirror images) keeps the weights of epoch {run_info['best_epoch']},")
    assert run_info["test_time_flip"] and set(run_info["cache_keys"]) == {"images", "features", "mirrored"}
    assert run_info["feature_runtime"]["runtime"] == "keras" and "too few" in run_info["feature_runtime"]["reason"]  # 398 images

    # "Train again" with another head: neither the JPEGs nor the backbone run again.
    second_config = TrainConfig(data_dir=str(ants_bees), out_dir=str(tmp_path / "second"), epochs=3, image_size=224, head_units=64, learning_rate=5e-4, cache_dir=str(tmp_path / "cache"))
    second, second_events = _run(second_config)
    assert second.summary.cache == {"images": "hit", "features": "hit"}
    assert "features" not in second.summary.seconds
    notices = [event.message for event in second_events if isinstance(event, Notice)]
    assert "Bottleneck features reused from the cache: the backbone did not run again." in notices
    assert "The mirror images' features reused from the cache." in notices
    assert len([event for event in second_events if isinstance(event, ModelSaved)]) == 1 and second.summary.test_time_flip
    assert second.summary.feature_runtime is None  # the backbone did not run


def test_events_follow_the_documented_order(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=2, image_size=32, batch_size=8, cache_dir=str(tmp_path / "cache"))
    result, events = _run(config)
    kinds = [event.kind for event in events]
    assert kinds[0] == "TrainingStarted" and kinds[-1] == "TrainingFinished"
    phases = [event.phase for event in events if isinstance(event, PhaseStarted)]
    # First run: the backbone runs while the images are read; the first model is saved, then the mirror images'
    # features (a handful of validation images: they are expected to pay) and the model saved again.
    assert phases == ["features", "head", "evaluate", "export", "features", "head", "evaluate", "export"]
    assert kinds.count("ModelSaved") == 2
    started = events[0]
    assert isinstance(started, TrainingStarted) and started.device["kind"] in ("CPU", "GPU") and started.class_names == ["circles", "squares", "stripes"]
    epochs = [event for event in events if isinstance(event, EpochEnded)]
    assert [event.epoch for event in epochs] == [1, 2, 3, 4] and all(event.seconds > 0 for event in epochs)  # up to 2 more with the mirror images
    assert "BatchEnded" in kinds
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.status == "finished" and finished.test_accuracy == result.evaluation.accuracy


def test_features_computed_while_reading_equal_features_of_cached_images(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=1, image_size=32, cache_dir=str(tmp_path / "cache"))
    first, _ = _run(config)
    assert first.summary.cache == {"images": "miss", "features": "miss"}
    # Two files: the images' features and their mirror images' (feature extraction with flips uses both).
    streamed = sorted((tmp_path / "cache" / "features").glob("*.npy"))
    assert len(streamed) == 2
    streamed_features = [np.load(path) for path in streamed]
    for path in streamed:
        path.unlink()
    again, events = _run(config)  # the decoded images are cached now; the features are computed from them
    assert again.summary.cache == {"images": "hit", "features": "miss"}
    assert [event.phase for event in events if isinstance(event, PhaseStarted)][:2] == ["decode", "features"]
    assert all(features.shape == (30, get_backbone("mobilenet_v2").feature_dim) for features in streamed_features)
    assert not np.allclose(streamed_features[0], streamed_features[1])  # a mirror image has other features
    for path, features in zip(streamed, streamed_features, strict=True):
        np.testing.assert_allclose(np.load(path), features, rtol=1e-5, atol=1e-5)
    # With both caches, the pixels are mapped, not read: only a mirror images' pass would need them.
    third, events = _run(config)
    assert third.summary.cache == {"images": "hit", "features": "hit"}
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert "Decoded images reused from the cache; held in disk (memory-mapped: the features are cached, so pixels are read only if the mirror images need them)." in notices
    assert third.evaluation.accuracy == again.evaluation.accuracy


def test_feature_extraction_can_train_on_cached_augmented_views(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=1, image_size=32, augment_views=2, cache_dir=str(tmp_path / "cache"))
    result, events = _run(config)
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert "The head trains on the training images and their mirror images and 2 randomly augmented copies (72 feature vectors)." in notices
    again, events = _run(config)
    # Every view came from the cache; the head trains on the images' features, then on, with the mirror images' added.
    assert [event.phase for event in events if isinstance(event, PhaseStarted)] == ["decode", "features", "head", "head", "evaluate", "export"]
    assert again.summary.cache["features"] == "hit"


def test_same_seed_gives_same_split_and_metrics(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    histories = []
    for name in ("a", "b"):
        config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / name), epochs=3, image_size=32, batch_size=8, seed=7, cache_dir=str(tmp_path / "cache"))
        result, _ = _run(config)
        histories.append([{key: entry[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy")} for entry in result.history])
        assert result.summary.data["fingerprint"]
    assert histories[0] == histories[1]


def test_fine_tune_keeps_exactly_the_first_k_layers_unchanged(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    import keras

    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, inner_classifier

    frozen = 60
    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), strategy="fine_tune", freeze_layers=frozen, epochs=1, warmup_epochs=0,
        image_size=32, batch_size=8, learning_rate=1e-2, cache_dir=str(tmp_path / "cache"),
    )
    result, events = _run(config)
    assert result.summary.frozen_layers == frozen
    # No warm-up here, so the one fine-tuning epoch is the best one and its weights are kept.
    assert [event.phase for event in events if isinstance(event, PhaseStarted)] == ["features", "fine_tune", "evaluate", "export"]
    pretrained = build_backbone(get_backbone("mobilenet_v2"), "imagenet")
    exported = keras.models.load_model(tmp_path / "run" / "model.keras")
    trained = inner_classifier(exported).get_layer(pretrained.name)  # the file averages over mirror images (the recipe's test-time flip)
    changed = []
    for index, (before, after) in enumerate(zip(pretrained.layers, trained.layers, strict=False)):
        if any(not np.array_equal(old, new) for old, new in zip(before.get_weights(), after.get_weights(), strict=False)):
            changed.append(index)
            assert not isinstance(after, keras.layers.BatchNormalization), f"BatchNorm layer {after.name} changed"
    assert changed and min(changed) >= frozen, changed[:5]


def test_stop_request_ends_the_run_cleanly_and_keeps_the_best_epoch(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.training.run import train

    stop = StopRequest()
    events = []

    def listen(event) -> None:
        events.append(event)
        if isinstance(event, EpochEnded) and event.epoch == 2:
            stop.request("test asked to stop")

    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=50, image_size=32, batch_size=4, cache_dir=str(tmp_path / "cache"))
    result = train(config, on_event=listen, stop=stop)
    assert result.status == "stopped"
    assert len(result.history) == 2  # the epoch interrupted by the stop is not counted
    assert any(isinstance(event, TrainingStopped) and event.reason == "test asked to stop" for event in events)
    assert (tmp_path / "run" / "model.h5").exists() and json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "stopped"


@pytest.mark.parametrize("strategy", ["full_fine_tune", "from_scratch"])
def test_image_training_strategies_run_and_export(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path, strategy: str) -> None:
    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), strategy=strategy, epochs=1, warmup_epochs=1, image_size=32, batch_size=8,
        class_weights=True, cache_dir=str(tmp_path / "cache"),
    )
    result, _ = _run(config)
    assert result.status == "finished"
    assert result.summary.frozen_layers == 0
    assert result.summary.weights.startswith("none" if strategy == "from_scratch" else "imagenet:")
    assert load_run(tmp_path / "run").image_size == 32


def test_exported_h5_loads_without_tl_core_and_matches_predict(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.data.images import load_image

    run_dir = tmp_path / "run"
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(run_dir), epochs=2, image_size=48, batch_size=8, cache_dir=str(tmp_path / "cache"))
    _run(config)
    images = sorted(tiny_dataset.glob("*/*.png"))[::7]
    predictions = predict_files(load_run(run_dir), images)
    np.save(tmp_path / "pixels.npy", np.stack([load_image(path, 48) for path in images]))
    script = textwrap.dedent(
        f"""
        import json, sys
        try:
            import tl_core
            sys.exit("tl_core must not be importable here")
        except ImportError:
            pass
        import numpy as np, keras
        model = keras.models.load_model({str(run_dir / 'model.h5')!r})
        probabilities = model.predict(np.load({str(tmp_path / 'pixels.npy')!r}).astype("float32"), verbose=0)
        print(json.dumps(probabilities.tolist()))
        """
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    probabilities = np.array(json.loads(completed.stdout.strip().splitlines()[-1]))
    expected = np.array([[dict(prediction.top)[name] for name in load_run(run_dir).class_names] for prediction in predictions])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert [prediction.predicted_class for prediction in predictions] == [load_run(run_dir).class_names[index] for index in probabilities.argmax(axis=1)]


def _run_in_fresh_process(preamble: str, tmp_path: Path, tiny_dataset: Path, strategies: tuple[str, ...]) -> dict:
    """Trains each strategy in a new Python process after ``preamble`` (device set-up that must come first)."""
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import numpy as np
        import tensorflow as tf
        import tl_core.training.run as training
        from tl_core.config import TrainConfig
        from tl_core.device import DeviceInfo
        from tl_core.runs.folder import load_run
        from tl_core.runs.predict import predict_files
        """
    ) + textwrap.dedent(preamble) + textwrap.dedent(
        """
        report = {}
        for strategy in sys.argv[2:]:
            config = TrainConfig(data_dir=sys.argv[1], out_dir=f"runs/{strategy}", strategy=strategy, epochs=1, warmup_epochs=1, image_size=32, batch_size=8, cache_dir="cache")
            result = training.train(config)
            run = load_run(f"runs/{strategy}")
            predicted = predict_files(run, [sorted(path for path in Path(sys.argv[1]).rglob("*") if path.is_file())[0]])[0]
            report[strategy] = {
                "status": result.status, "epochs": len(result.history), "notes": result.summary.notes,
                "loss_finite": bool(np.isfinite([entry["loss"] for entry in result.history]).all()),
                "saved_dtypes": sorted({str(weight.dtype) for weight in run.model.weights}), "predicted": predicted.predicted_class,
            }
        print(json.dumps(report))
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, "-c", script, str(tiny_dataset), *strategies], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_several_devices_train_one_mirrored_model(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    # Two logical CPUs stand in for two GPUs: MirroredStrategy treats them the same way.
    preamble = """
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tl_core.device import Distribution
        training.distribution_strategy = lambda device: Distribution(2, "MirroredStrategy over two logical CPUs", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    """
    report = _run_in_fresh_process(preamble, tmp_path, tiny_dataset, ("feature_extraction", "fine_tune"))
    for strategy, expected_epochs in (("feature_extraction", 2), ("fine_tune", 2)):  # feature extraction: 1 epoch, then 1 with the mirror images
        outcome = report[strategy]
        assert outcome["status"] == "finished" and outcome["epochs"] == expected_epochs and outcome["loss_finite"], outcome
        assert any(note.startswith("Training on 2 GPUs at once (MirroredStrategy") for note in outcome["notes"])
        assert outcome["predicted"] in ("circles", "squares", "stripes")


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    # The GPU path's policy, run on the CPU (slower there, but the same code).
    preamble = """
        training.detect_device = lambda: DeviceInfo(kind="CPU", name="CPU", reason="test", mixed_precision="mixed_float16")
    """
    report = _run_in_fresh_process(preamble, tmp_path, tiny_dataset, ("feature_extraction", "fine_tune"))
    for strategy in ("feature_extraction", "fine_tune"):
        outcome = report[strategy]
        assert outcome["status"] == "finished" and outcome["loss_finite"], outcome
        assert outcome["saved_dtypes"] == ["float32"], outcome  # mixed precision is for training speed; the file is plain float32


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


def test_feature_extraction_with_turns_learns_from_and_answers_over_the_eight_views(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """Turned images of the same class: the head learns from all eight views, and the file averages the same eight, pixel for pixel."""
    from tl_core.config import AugmentConfig
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import evaluate_run
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=3, image_size=32, batch_size=8, cache_dir=str(tmp_path / "cache"),
        augmentation=AugmentConfig(turns=True),
    )
    result = train(config)
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 8  # the images' features and those of their seven other views
    assert any("their mirror images and turned views (7 views)" in note for note in result.summary.notes)
    run = load_run(tmp_path / "run")
    assert any(layer.name == "mean_over_views" for layer in run.model.layers)
    evaluation, _ = evaluate_run(run, tiny_dataset)
    assert evaluation.confusion_matrix == result.evaluation.confusion_matrix
    confidences = {item["path"]: item["confidence"] for item in result.evaluation.to_dict()["misclassified"]}
    assert {item["path"]: pytest.approx(item["confidence"], abs=1e-4) for item in evaluation.to_dict()["misclassified"]} == confidences


def test_fine_tuning_with_turns_answers_over_the_eight_views_in_the_file_and_the_evaluation(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.config import AugmentConfig
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import evaluate_run
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), strategy="fine_tune", epochs=1, warmup_epochs=2, image_size=32, batch_size=8,
        cache_dir=str(tmp_path / "cache"), augmentation=AugmentConfig(turns=True),
    )
    result = train(config)
    run = load_run(tmp_path / "run")
    average = next(layer for layer in run.model.layers if layer.name == "mean_over_views")
    assert len(average.input) == 8
    evaluation, _ = evaluate_run(run, tiny_dataset)
    assert evaluation.confusion_matrix == result.evaluation.confusion_matrix


def test_a_centre_crop_run_saves_a_model_that_takes_whole_images_and_keeps_their_middle(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """Trained on the middles: the files take the whole image a quarter larger and crop it themselves, and give the run's answers."""
    from tl_core.data.images import load_image
    from tl_core.insight.explain import explain_file
    from tl_core.runs.predict import evaluate_run
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=3, batch_size=8, cache_dir=str(tmp_path / "cache"),
        centre_crop=True, export_formats=("tflite",),
    )  # at the network's own size, as a user's run: the frame is found from it
    result = train(config)
    assert result.summary.config["centre_crop"] is True and result.summary.input_size == 280
    assert result.summary.exports["tflite"]["ok"], result.summary.exports
    run = load_run(tmp_path / "run")
    assert run.model.input_shape[1:] == (280, 280, 3) and run.image_size == 280
    evaluation, _ = evaluate_run(run, tiny_dataset)  # whole images at 280 px, cropped by the model
    assert evaluation.confusion_matrix == result.evaluation.confusion_matrix
    confidences = {item["path"]: item["confidence"] for item in result.evaluation.to_dict()["misclassified"]}
    assert {item["path"]: pytest.approx(item["confidence"], abs=1e-4) for item in evaluation.to_dict()["misclassified"]} == confidences
    path = sorted((tiny_dataset / "circles").iterdir())[0]
    explanation, pixels = explain_file(run, path)
    assert pixels.shape == (224, 224, 3) and np.array_equal(pixels, load_image(path, 224, centre_crop=True))
    # Trained again from it with whole images: nothing of the middles is reused.
    again = train(TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "again"), epochs=1, batch_size=8, cache_dir=str(tmp_path / "cache"),
        from_run=str(tmp_path / "run"), centre_crop=False,
    ))
    assert any("it used the middle of each image" in note for note in again.summary.notes)
    assert load_run(tmp_path / "again").model.input_shape[1:] == (224, 224, 3)


def test_fine_tuning_on_the_middles_is_evaluated_on_them_and_saved_with_its_crop(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """Fine-tuning evaluates the whole classifier on the decoded middles (not the file's model, which expects larger images)."""
    from tl_core.runs.predict import evaluate_run
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), strategy="fine_tune", epochs=1, warmup_epochs=1, image_size=32, batch_size=8,
        cache_dir=str(tmp_path / "cache"), centre_crop=True,
    )
    result = train(config)
    assert result.status == "finished" and result.summary.input_size == 40
    run = load_run(tmp_path / "run")
    assert run.model.input_shape[1:] == (40, 40, 3)
    evaluation, _ = evaluate_run(run, tiny_dataset)  # whole images at 40 px, cropped by the model: the run's answers
    assert evaluation.confusion_matrix == result.evaluation.confusion_matrix


def test_flips_off_means_no_mirror_anywhere(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    from tl_core.config import AugmentConfig
    from tl_core.training.run import train

    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=2, image_size=32, augmentation=AugmentConfig(flip="none"), cache_dir=str(tmp_path / "cache"),
    )
    result = train(config)
    assert result.summary.test_time_flip is False  # asked for by the recipe, but a mirror image is not a valid example here
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 1  # no mirror images' features either


def test_two_networks_joined_train_a_head_each_and_the_file_averages_them(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """The pair's saved model holds one head per network, averaged; it loads in safe mode and explains its answers."""
    import keras

    from tl_core.insight.explain import explain
    from tl_core.models.build import MEAN_OVER_NETWORKS, inner_classifier

    second = imagenet_weights.parent / get_backbone("mobilenet_0.75").weights_file
    if not second.exists():
        pytest.skip(f"skipped: MobileNet 0.75's ImageNet weights not found at {second}")
    out = tmp_path / "pair"
    config = TrainConfig(
        data_dir=str(tiny_dataset), out_dir=str(out), backbone="mobilenet_v2+mobilenet_0.75", image_size=32, epochs=3, cache_dir=str(tmp_path / "cache"), seed=0
    )
    result, _ = _run(config)
    assert result.status == "finished"
    head = inner_classifier(keras.models.load_model(out / "model.h5", safe_mode=True)).get_layer("head")
    assert [head.get_layer(f"part_{index}_predictions").kernel.shape for index in (0, 1)] == [(2192, 3), (768, 3)]
    features = np.random.default_rng(0).normal(size=(4, 2960)).astype("float32")
    parts = keras.Model(head.inputs, head.get_layer(MEAN_OVER_NETWORKS).input)(features)
    np.testing.assert_allclose(np.asarray(head(features)), (np.asarray(parts[0]) + np.asarray(parts[1])) / 2, atol=1e-6)
    run = load_run(out)
    image = np.asarray(keras.utils.load_img(sorted((tiny_dataset / "squares").iterdir())[0], target_size=(32, 32)), dtype=np.float32)
    explanation = explain(run.model, image)
    assert explanation.heatmap.shape == (32, 32) and explanation.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
