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
    from tl_core.training.estimate import TRACE_SECONDS, Throughput, duration_text, estimate_run

    dataset = scan_dataset(tiny_dataset)
    throughput = Throughput("CPU x test", "mobilenet_v2", 32, 100.0, 0.0)

    def estimate(strategy: str, **settings):
        config = TrainConfig(data_dir=str(tiny_dataset), out_dir="", strategy=strategy, image_size=32, cache_dir=str(tmp_path), **settings).validated()
        return estimate_run(config, dataset, throughput, decode_seconds=0.01)

    features = estimate("feature_extraction")
    # 30 images, then (where they pay, after the first model) their 30 mirror images, through the backbone at 100 images/s.
    assert features.parts["features"] == pytest.approx(0.3, abs=0.05) and features.parts["mirror features"] == pytest.approx(0.3, abs=0.05)
    assert features.epochs["head"] == 400 and "mirror head" in features.parts  # the head's 200 epochs, then as many on both views
    assert estimate("feature_extraction", quick=True).parts["features"] == pytest.approx(0.3, abs=0.05)  # quick: no mirror images
    fine_tune = estimate("fine_tune", epochs=4)
    assert fine_tune.parts["fine_tune"] > 0 and fine_tune.seconds > features.seconds
    # Twice the epochs, twice the time, on top of tracing the training step once.
    assert estimate("fine_tune", epochs=8).parts["fine_tune"] - TRACE_SECONDS == pytest.approx(2 * (fine_tune.parts["fine_tune"] - TRACE_SECONDS), rel=1e-3)
    assert fine_tune.epochs == {"head": 200, "fine_tune": 4} and not fine_tune.corrections and without_head(fine_tune.parts) == without_head(fine_tune.model_parts)
    # Early stopping ends the head's warm-up: before any run here, after about twice its patience and ten more epochs.
    assert fine_tune.expected_epochs == {"head": 30, "fine_tune": 4}
    assert fine_tune.parts["head"] == pytest.approx(fine_tune.model_parts["head"] * 30 / 200, abs=0.06)
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
    assert result.summary.timings["total"]["actual"] == pytest.approx(result.summary.seconds["total"], abs=0.1)
    # 2 epochs on the images, then 2 on the images and their mirror images (a handful of validation images: they pay).
    assert result.summary.timings["head"]["epochs"] == 4 and result.summary.timings["head"]["planned_epochs"] == 4
    assert result.summary.phases[0]["planned_epochs"] == 4
    remembered = json.loads((tmp_path / "cache" / "timings.json").read_text())
    assert remembered[-1]["groups"] == result.summary.timings and remembered[-1]["strategy"] == "feature_extraction"


def test_later_estimates_on_this_device_learn_from_recorded_runs(tmp_path: Path, tiny_dataset: Path) -> None:
    """A fake device whose fine-tuning epochs take 1.5 times the arithmetic, whose warm-ups stop after a tenth of their
    epochs, and whose fixed costs are twice the guess: after two recorded runs the estimate says so; another device is untouched."""
    from tl_core.data.scan import scan_dataset
    from tl_core.training.estimate import Throughput, estimate_run
    from tl_core.training.timings import compare_with_estimate, record_timings

    dataset = scan_dataset(tiny_dataset)
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir="", strategy="fine_tune", epochs=4, image_size=32, cache_dir=str(tmp_path)).validated()
    device = Throughput("tensorflow CPU x2 (fake)", "mobilenet_v2", 32, 100.0, 0.0)
    first = estimate_run(config, dataset, device, decode_seconds=0.01)
    assert first.learned_from == 0 and without_head(first.parts) == without_head(first.model_parts)

    def a_run_on_the_fake_device(fine_tune_epochs: int) -> dict:
        model = first.model_parts
        seconds = {
            "features": model["features"] + model.get("decode", 0.0),
            "head": model["head"] / 10,  # 20 of its 200 epochs at the modelled pace
            "fine_tune": 1.5 * model["fine_tune"] * fine_tune_epochs / 4,
            "evaluate": model["evaluate"],
        }
        seconds["total"] = sum(seconds.values()) + 2 * (model["setup"] + model["files"])
        history = [{"epoch": epoch, "phase": "head"} for epoch in range(1, 21)] + [{"epoch": 20 + epoch, "phase": "fine_tune"} for epoch in range(1, fine_tune_epochs + 1)]
        return compare_with_estimate(first.to_dict(), seconds, history, "fine_tune")

    record_timings(a_run_on_the_fake_device(4), device.device, "mobilenet_v2", 32, "fine_tune", tmp_path)
    record_timings(a_run_on_the_fake_device(2), device.device, "mobilenet_v2", 32, "fine_tune", tmp_path)  # stopped early: half the epochs, same pace
    learnt = estimate_run(config, dataset, device, decode_seconds=0.01)
    assert learnt.learned_from == 2 and "corrected by what 2 earlier runs here took" in learnt.basis
    # Two runs against the arithmetic's one: the corrections move two thirds of the way (in the logarithm).
    assert learnt.corrections["fine_tune"] == pytest.approx(1.5 ** (2 / 3), rel=0.02)
    assert learnt.parts["fine_tune"] == pytest.approx(1.5 ** (2 / 3) * first.model_parts["fine_tune"], rel=0.02)
    assert learnt.expected_epochs["head"] == 20 and learnt.parts["head"] == pytest.approx(first.model_parts["head"] / 10, abs=0.06)  # 20 of 200 epochs
    assert learnt.parts["setup"] == pytest.approx(2 ** (2 / 3) * first.model_parts["setup"], rel=0.05)  # the rest: building, tracing, writing
    assert learnt.seconds > first.seconds
    other_device = estimate_run(config, dataset, Throughput("jax GPU:fake x1", "mobilenet_v2", 32, 100.0, 0.0), decode_seconds=0.01)
    assert other_device.learned_from == 0 and without_head(other_device.parts) == without_head(other_device.model_parts)


def without_head(parts: dict) -> dict:
    return {name: seconds for name, seconds in parts.items() if name != "head"}


def test_the_remembered_throughput_is_the_median_of_the_recent_measurements(tmp_path: Path) -> None:
    """A measurement taken while another program kept the cores busy does not set every later estimate."""
    from tl_core.training.estimate import Throughput, forward_throughput, remember_throughput

    for speed in (100.0, 40.0, 110.0):
        remember_throughput(Throughput("CPU x test", "mobilenet_v2", 224, speed, 0.0), tmp_path)
    assert forward_throughput("mobilenet_v2", 224, "CPU x test", cache_dir=tmp_path, measure=False).images_per_second == 100.0
    for speed in (60.0, 60.0, 60.0, 60.0):
        remember_throughput(Throughput("CPU x test", "mobilenet_v2", 224, speed, 0.0), tmp_path)
    assert forward_throughput("mobilenet_v2", 224, "CPU x test", cache_dir=tmp_path, measure=False).images_per_second == 60.0  # the last five


def test_features_are_estimated_at_the_speed_of_the_runtime_an_earlier_run_chose_here(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    """A machine where ONNX Runtime ran the backbone 2.5x as fast as Keras: the next estimate's features take 1/2.5 the time."""
    import tl_core.runtime as runtime
    from tl_core.data.scan import scan_dataset
    from tl_core.models.backbones import get_backbone
    from tl_core.models.weights import weights_identity
    from tl_core.training.estimate import Throughput, estimate_run

    monkeypatch.setattr(runtime, "MEASURE_FROM_IMAGES", 10)  # the tiny set's 30 images count as enough to measure
    dataset = scan_dataset(tiny_dataset)
    throughput = Throughput("CPU x test", "mobilenet_v2", 32, 100.0, 0.0)
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir="", strategy="feature_extraction", image_size=32, cache_dir=str(tmp_path)).validated()
    before = estimate_run(config, dataset, throughput, decode_seconds=0.01, learn=False)
    spec = get_backbone("mobilenet_v2")
    path = runtime.choice_file(runtime.backbone_identity(spec, weights_identity(spec, "imagenet"), 32), tmp_path)
    path.parent.mkdir(parents=True)
    choice = runtime.RuntimeChoice(runtime.ONNX, "faster", {runtime.KERAS: 100.0, runtime.ONNX: 250.0}, {runtime.ONNX: 0.99999}, 64)
    path.write_text(json.dumps(choice.to_dict()))
    after = estimate_run(config, dataset, throughput, decode_seconds=0.01, learn=False)
    assert after.parts["features"] == pytest.approx(before.parts["features"] / 2.5, abs=0.06)  # parts are rounded to 0.1 s
    assert "2.5x that on ONNX Runtime" in after.basis and "ONNX" not in before.basis
    on_gpu = estimate_run(config, dataset, Throughput("GPU x test", "mobilenet_v2", 32, 100.0, 0.0), decode_seconds=0.01, learn=False)
    assert on_gpu.parts["features"] == pytest.approx(before.parts["features"], abs=0.06)  # a GPU runs the backbone on Keras


def test_a_run_whose_mirror_images_did_not_pay_is_compared_with_what_it_did() -> None:
    """The estimate counted the mirror images' pass and the head's second round; a run that skipped them is judged without them."""
    from tl_core.training.timings import compare_with_estimate

    estimate = {
        "seconds": 80.0, "epochs": {"head": 400},
        "parts": {"setup": 8.0, "features": 30.0, "mirror features": 30.0, "head": 3.0, "mirror head": 6.0, "files": 3.0},
    }
    seconds = {"features": 28.0, "head": 2.0, "total": 36.0}
    history = [{"epoch": number, "phase": "head"} for number in range(1, 30)]
    skipped = compare_with_estimate(estimate, seconds, history, "feature_extraction", mirrors_ran=False)
    assert skipped["images"] == {"estimated": 30.0, "model": 30.0, "actual": 28.0}
    assert skipped["head"] == {"estimated": 3.0, "model": 3.0, "actual": 2.0, "planned_epochs": 200, "epochs": 29}
    assert skipped["total"] == {"estimated": 80.0, "actual": 36.0}  # what the user was told stays on record
    ran = compare_with_estimate(estimate, seconds, history, "feature_extraction")
    assert ran["images"]["estimated"] == 60.0 and ran["head"]["planned_epochs"] == 400


def test_the_advice_expected_accuracy_foresees_whether_the_mirror_images_are_counted(tmp_path: Path) -> None:
    """A run skips the mirror images' pass where its first model leaves too few errors for them to fix; the estimate foresees it."""
    from tl_core.data.scan import scan_dataset
    from tl_core.training.estimate import Throughput, estimate_run, remember_expected_accuracy

    from conftest import make_class_folders

    data = make_class_folders(tmp_path / "many", {"a": 150, "b": 150}, size=16)
    dataset = scan_dataset(data)
    assert len(dataset.split("val")) >= 40  # enough validation images for a near-perfect model to leave under half a point
    throughput = Throughput("CPU x test", "mobilenet_v2", 32, 100.0, 0.0)
    config = TrainConfig(data_dir=str(data), out_dir="", image_size=32, cache_dir=str(tmp_path)).validated()
    without_advice = estimate_run(config, dataset, throughput, decode_seconds=0.01)
    assert "mirror features" in without_advice.parts and without_advice.epochs["head"] == 400  # nothing known: counted
    remember_expected_accuracy(dataset, "mobilenet_v2", 32, 0.80, tmp_path)
    assert "mirror features" in estimate_run(config, dataset, throughput, decode_seconds=0.01).parts  # many errors left to fix
    remember_expected_accuracy(dataset, "mobilenet_v2", 32, 0.999, tmp_path)
    foreseen = estimate_run(config, dataset, throughput, decode_seconds=0.01)
    assert "mirror features" not in foreseen.parts and "mirror head" not in foreseen.parts and foreseen.epochs["head"] == 200
    assert foreseen.parts["features"] == without_advice.parts["features"] and foreseen.seconds < without_advice.seconds
    assert "the mirror images' pass is not counted: at the 99.9% the advice expects" in foreseen.basis
    # Another size of the same images has its own expectation (none here).
    other = TrainConfig(data_dir=str(data), out_dir="", image_size=48, cache_dir=str(tmp_path)).validated()
    assert "mirror features" in estimate_run(other, dataset, Throughput("CPU x test", "mobilenet_v2", 48, 100.0, 0.0), decode_seconds=0.01).parts


def test_the_app_estimate_adds_the_start_up_its_runs_took_here(tmp_path: Path) -> None:
    """Start-ups are learnt per device, as the median of the latest few; the estimate then names the part."""
    from tl_core.training.estimate import START_UP, Estimate
    from tl_core.training.timings import learned_start_up, record_start_up

    cache = tmp_path / "cache"
    assert learned_start_up("tensorflow CPU x2", cache) is None
    for seconds in (30.0, 6.0, 5.0, 7.0, 6.5, 5.5):  # the oldest (a cold disk) has left the latest five
        record_start_up(seconds, "tensorflow CPU x2", cache)
    record_start_up(1.0, "jax GPU:H100 x1", cache)
    assert learned_start_up("tensorflow CPU x2", cache) == pytest.approx(6.0)
    estimate = Estimate(20.0, {"features": 15.0, "head": 5.0}, "forward pass measured").with_start_up(6.0)
    assert estimate.seconds == 26.0 and list(estimate.parts) == [START_UP, "features", "head"]
    assert "starting the training process" in estimate.basis


def test_a_run_times_itself_with_the_forward_speed_filed_in_its_own_cache_folder(tmp_path: Path, tiny_dataset: Path) -> None:
    """The advice files its forward pass in the cache folder it was given; the run it advises reads the same one.

    With ``--cache-dir`` the two used to read different files (the run the default folder), so the advice's minutes and
    the run's own estimate disagreed by 2x on aerial scenes, with the same corrections learned from earlier runs.
    """
    import time

    from tl_core.device import detect_device
    from tl_core.events import StopRequest
    from tl_core.training.context import RunContext
    from tl_core.training.estimate import Throughput, remember_throughput
    from tl_core.training.run import prepare

    cache = tmp_path / "cache"
    remember_throughput(Throughput(detect_device().key, "mobilenet_v2", 32, 1234.0, time.time()), cache)  # as the advice files its own pass
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), image_size=32, cache_dir=str(cache))
    run = RunContext(config, lambda event: None, StopRequest(), started=time.perf_counter())
    prepare(run)
    assert run.estimate.basis.startswith("forward pass measured at 1234 images/s")
