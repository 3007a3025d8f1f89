"""The Setup page, run through the router with the fake engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.advice.scenario import recommend
from tl_core.data.records import Dataset
from tl_core.data.scan import scan_dataset
from tl_core.device import DeviceInfo
from tl_core.errors import ConfigError
from tl_core.models.backbones import get_backbone
from tl_core.models.blocks import freeze_wording
from ui.state import DatasetResult

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine

APP = str(REPO / "app.py")
MOBILENET = get_backbone("mobilenet_v2")
FAKE_LAYERS = 22  # layers in FakeEngine.layer_map


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three balanced classes of generated images."""
    return make_class_folders(tmp_path / "shapes", {"circles": 10, "squares": 10, "stripes": 10})


def open_setup(dataset: Dataset | None, data_dir: str | None = None, engine: FakeEngine | None = None, **preset) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = engine or FakeEngine()
    at.session_state["dataset"] = dataset
    at.session_state["data_dir"] = data_dir
    for key, value in preset.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/setup.py").run()
    return at


def open_with_folder(folder: Path, **preset) -> AppTest:
    return open_setup(scan_dataset(folder), str(folder), **preset)


def metric(at: AppTest, label: str) -> str:
    return next(element.value for element in at.metric if element.label == label)


def expected_trainable(frozen_layers: int, classes: int = 3) -> str:
    head = MOBILENET.feature_dim * classes + classes
    return f"{FakeEngine().layer_map('mobilenet_v2').trainable_parameters(frozen_layers) + head:,}"


def links_to(at: AppTest, page: str) -> bool:
    return any(link.proto.page.removesuffix(".py").endswith(page) for link in at.get("page_link"))


def test_empty_state_points_to_the_data_page() -> None:
    at = open_setup(None)

    assert not at.exception
    assert at.title[0].value == "3 · Model and training setup"
    assert "No dataset loaded yet" in at.info[0].value
    assert links_to(at, "data")
    assert not at.selectbox and not at.metric
    assert at.session_state["train_config"] is None


def test_defaults_build_a_valid_feature_extraction_config(folder: Path) -> None:
    at = open_with_folder(folder)

    assert not at.exception
    # The device, first and plainly.
    assert "Training will run on the CPU." in at.info[0].value and "CPU (2 cores, TensorFlow): this TensorFlow build has no GPU support" in at.info[0].value
    assert any("Keras backend: TensorFlow (fake engine)" in caption.value for caption in at.caption)
    assert at.selectbox(key="setup_backbone").value == "mobilenet_v2"
    assert "MobileNetV2 · pretrained at 224 px · 2.3 M parameters" in at.selectbox(key="setup_backbone").options
    assert at.radio(key="setup_strategy").value == "feature_extraction"
    config = at.session_state["train_config"]
    assert config == config.validated()
    assert (config.strategy, config.backbone, config.freeze_layers, config.image_size, config.epochs) == ("feature_extraction", "mobilenet_v2", None, 224, 200)
    assert config.data_dir == str(folder) and config.out_dir == ""
    assert (config.warmup_epochs, config.class_weights, config.test_time_flip, config.quick) == (0, False, True, False)
    # Only the head trains; everything in the backbone is frozen.
    assert metric(at, "Parameters that train") == f"{get_backbone('mobilenet_v2').feature_dim * 3 + 3:,}"
    assert metric(at, "Layers frozen") == f"{FAKE_LAYERS} of {FAKE_LAYERS}"
    assert "Ready: feature extraction with MobileNetV2 at 224 px: the head on cached features (at most 200 epochs, until its validation loss stops improving)" in at.success[-1].value and "test-time flip" in at.success[-1].value
    # How long it takes here, and what the quick recipe would take.
    assert metric(at, "Estimated time") == "40 min"
    assert any("The quick recipe would take about" in element.value for element in at.caption)
    assert len(at.get("plotly_chart")) == 1
    assert links_to(at, "train")


def test_a_gpu_is_named(folder: Path) -> None:
    class GpuEngine(FakeEngine):
        def device(self):
            return DeviceInfo(kind="GPU", name="NVIDIA H100 80GB HBM3", count=1, mixed_precision="mixed_bfloat16", backend="torch")

    at = open_setup(scan_dataset(folder), str(folder), engine=GpuEngine())

    assert not at.exception
    assert "Training will run on the GPU: NVIDIA H100 80GB HBM3" in at.success[0].value
    assert "(PyTorch, bfloat16)" in at.success[0].value


def test_strategy_defaults_to_the_choice_made_on_the_scenario_page(folder: Path) -> None:
    dataset = scan_dataset(folder)
    at = open_setup(dataset, str(folder), recommendation=recommend(dataset, "high"), chosen_strategy="fine_tune")

    assert not at.exception
    assert at.radio(key="setup_strategy").value == "fine_tune"
    # Not the recommendation: the trade-off is explained.
    trade_off = " ".join(element.value for element in at.info)
    assert "Step 2 recommended **feature extraction**" in trade_off and "Fine-tuning lets the later layers adapt" in trade_off
    assert at.session_state["train_config"].freeze_layers == 16  # the engine's default depth: the first two thirds of the fake backbone's 7 blocks


def test_recommendation_is_the_default_without_a_choice(folder: Path) -> None:
    dataset = scan_dataset(folder)
    at = open_setup(dataset, str(folder), recommendation=recommend(dataset, "low"))

    assert not at.exception
    assert at.radio(key="setup_strategy").value == "fine_tune"
    assert "recommended" in at.radio(key="setup_strategy").options[1]
    assert not any("Step 2 recommended" in element.value for element in at.info)


def test_freeze_slider_changes_the_trainable_parameters(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")
    slider = at.select_slider(key="setup_freeze_mobilenet_v2")

    assert not at.exception
    assert slider.value == 16
    assert metric(at, "Parameters that train") == expected_trainable(16)
    wording = freeze_wording(FakeEngine().layer_map("mobilenet_v2").blocks, 16)
    assert wording == "the first 16 of 22 layers frozen (stem to block_4); block_5 to top retrain"
    assert f"Freeze depth: **{wording}**" in " ".join(element.value for element in at.caption)

    slider.set_value(10).run()

    assert not at.exception
    assert metric(at, "Parameters that train") == expected_trainable(10)
    assert expected_trainable(16) != expected_trainable(10)
    assert metric(at, "Layers frozen") == "10 of 22"
    assert at.session_state["train_config"].freeze_layers == 10
    assert "first 10 of 22 layers frozen" in at.success[-1].value


@pytest.mark.parametrize(
    ("strategy", "frozen", "words"),
    [("full_fine_tune", 0, "No layer is frozen"), ("from_scratch", 0, "start from random weights"), ("feature_extraction", FAKE_LAYERS, "All 22 layers stay frozen")],
)
def test_other_strategies_show_what_is_frozen(folder: Path, strategy: str, frozen: int, words: str) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")

    at.radio(key="setup_strategy").set_value(strategy).run()

    assert not at.exception
    assert at.session_state["chosen_strategy"] == strategy
    assert metric(at, "Layers frozen") == f"{frozen} of {FAKE_LAYERS}"
    assert any(words in element.value for element in at.caption)
    assert not [widget for widget in at.select_slider if widget.key.startswith("setup_freeze")]
    config = at.session_state["train_config"]
    assert config.strategy == strategy and config.freeze_layers is None


def test_warmup_only_for_fine_tuning(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="full_fine_tune")

    assert not at.exception
    at.number_input(key="setup_warmup_full_fine_tune_recommended").set_value(2).run()
    assert at.session_state["train_config"].warmup_epochs == 2
    assert "a warm-up of the head on cached features (at most 2 epochs, until its validation loss stops improving), then 8 epochs of fine-tuning" in at.success[-1].value

    at.radio(key="setup_strategy").set_value("from_scratch").run()
    assert not at.exception
    assert at.session_state["train_config"].warmup_epochs == 0
    assert not [widget for widget in at.number_input if widget.key.startswith("setup_warmup")]


def test_augmentation_preview_shows_three_classes_and_new_versions(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")

    assert not at.exception
    rows = at.get("image")
    assert len(rows) == 3
    assert all(row.captions == ["original", "version 1", "version 2", "version 3", "version 4"] for row in rows)
    labels = " ".join(element.value for element in at.markdown)
    for name in ("circles", "squares", "stripes"):
        assert f"**{name}**" in labels
    first_urls = rows[0].value

    next(button for button in at.button if button.label == "New random versions").click().run()

    assert not at.exception
    assert at.session_state["setup_preview_seed"] == 1
    assert at.get("image")[0].value != first_urls


def test_augmentation_settings_reach_the_config(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")

    at.slider(key="setup_rotation").set_value(0.25).run()
    at.selectbox(key="setup_flip").set_value("vertical").run()

    assert not at.exception
    augmentation = at.session_state["train_config"].augmentation
    assert (augmentation.rotation, augmentation.flip) == (0.25, "vertical")
    assert any("±90° rotation" in element.value for element in at.caption)

    at.checkbox(key="setup_augment").uncheck().run()

    assert not at.exception
    assert at.session_state["train_config"].augment is False
    assert not at.get("image")
    assert any("Augmentation is off" in element.value for element in at.info)


def test_feature_extraction_explains_augmented_views(folder: Path) -> None:
    at = open_with_folder(folder)

    assert not at.exception
    assert any("augmented views" in element.value for element in at.info)
    assert at.session_state["train_config"].augment_views == 0
    assert any("Preview only" in element.value for element in at.caption)

    at.number_input(key="setup_augment_views").set_value(2).run()

    assert not at.exception
    assert at.session_state["train_config"].augment_views == 2
    assert "with augmentation (2 cached views)" in at.success[-1].value


def test_training_settings_reach_the_config(folder: Path) -> None:
    at = open_with_folder(folder)

    at.selectbox(key="setup_image_size_mobilenet_v2").set_value(128).run()
    at.number_input(key="setup_epochs_feature_extraction_recommended").set_value(3).run()
    at.select_slider(key="setup_batch_size").set_value(16).run()
    at.select_slider(key="setup_learning_rate").set_value(1e-4).run()
    at.number_input(key="setup_seed").set_value(7).run()

    assert not at.exception
    config = at.session_state["train_config"]
    assert (config.image_size, config.epochs, config.batch_size, config.learning_rate, config.seed) == (128, 3, 16, 1e-4, 7)
    assert "at 128 px: the head on cached features (at most 3 epochs" in at.success[-1].value


def test_image_sizes_follow_the_backbone(folder: Path) -> None:
    at = open_with_folder(folder)

    at.selectbox(key="setup_backbone").set_value("inception_v3").run()

    assert not at.exception
    sizes = at.selectbox(key="setup_image_size_inception_v3")
    assert sizes.value == 299
    assert all(option.startswith(("96", "128", "160", "192", "224", "299")) for option in sizes.options)
    assert at.session_state["train_config"].image_size == 299
    assert "InceptionV3" in at.success[-1].value


def test_class_weights_are_preticked_for_imbalanced_data(tmp_path: Path) -> None:
    imbalanced = make_class_folders(tmp_path / "imbalanced", {"common": 40, "rare": 10})
    at = open_with_folder(imbalanced)

    assert not at.exception
    assert at.checkbox(key="setup_class_weights").value is True
    assert at.session_state["train_config"].class_weights is True


def test_settings_survive_a_visit_to_another_page(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")
    at.number_input(key="setup_epochs_fine_tune_recommended").set_value(4).run()
    at.select_slider(key="setup_freeze_mobilenet_v2").set_value(13).run()

    at.switch_page("pages/scenario.py").run()
    at.switch_page("pages/setup.py").run()

    assert not at.exception
    assert at.number_input(key="setup_epochs_fine_tune_recommended").value == 4
    assert at.select_slider(key="setup_freeze_mobilenet_v2").value == 13
    config = at.session_state["train_config"]
    assert (config.epochs, config.freeze_layers) == (4, 13)


def test_an_invalid_config_is_an_error_message_not_a_crash(folder: Path) -> None:
    class TinyEngine(FakeEngine):
        def backbones(self):
            # A network whose own size is below what TrainConfig allows.
            return [replace(MOBILENET, default_size=16, min_size=16)]

    at = open_setup(scan_dataset(folder), str(folder), engine=TinyEngine())

    assert not at.exception
    assert "image_size is 16 while it must be between 32 and 1024" in at.error[0].value
    assert at.session_state["train_config"] is None


def test_engine_errors_are_shown_plainly(folder: Path) -> None:
    class BrokenEngine(FakeEngine):
        def layer_map(self, backbone):
            raise ConfigError(f"No layers found for '{backbone}'. Choose another backbone.")

    at = open_setup(scan_dataset(folder), str(folder), engine=BrokenEngine())

    assert not at.exception
    assert at.error[0].value == "No layers found for 'mobilenet_v2'. Choose another backbone."


def test_measured_freeze_depth_is_the_starting_point(folder: Path) -> None:
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["dataset"] = dataset
    at.session_state["data_dir"] = str(folder)
    at.session_state["chosen_strategy"] = "fine_tune"
    at.session_state["advice"] = DatasetResult(dataset.fingerprint(), canned_advice(dataset, "low"))
    at.run()
    at.switch_page("pages/setup.py").run()
    assert not at.exception
    measured = freeze_wording(FakeEngine().layer_map("mobilenet_v2").blocks, 12)
    assert f"Starting from the measured suggestion: {measured} (measured: " in " ".join(caption.value for caption in at.caption)
    assert at.session_state["train_config"].freeze_layers == 13  # the nearest block boundary of the fake layer map


def test_the_quick_recipe_makes_fewer_passes_and_says_how_long_each_takes(folder: Path) -> None:
    at = open_with_folder(folder, chosen_strategy="fine_tune")
    recommended = at.session_state["train_config"]
    assert (recommended.epochs, recommended.warmup_epochs, recommended.learning_rate_schedule, recommended.test_time_flip) == (8, 200, "cosine", True)
    slow = metric(at, "Estimated time")

    at.radio(key="setup_recipe_fine_tune").set_value("quick").run()

    assert not at.exception
    quick = at.session_state["train_config"]
    assert (quick.quick, quick.epochs, quick.warmup_epochs, quick.test_time_flip) == (True, 3, 200, False)
    assert metric(at, "Estimated time") != slow
    assert any("train on augmented images for 3 epochs" in element.value and "Quick: fewer epochs and no test-time flip" in element.value for element in at.caption)
    assert any("The recommended recipe would take about" in element.value for element in at.caption)


def test_test_time_flip_needs_left_right_flips(folder: Path) -> None:
    at = open_with_folder(folder)
    at.selectbox(key="setup_flip").set_value("vertical").run()

    assert not at.exception
    assert at.checkbox(key="setup_tta_feature_extraction_recommended").disabled
    assert at.session_state["train_config"].test_time_flip is False


def _open_with_advice(folder: Path, dataset, advice) -> AppTest:
    """The Setup page after the Scenario page's advice for ``dataset`` (its recommended strategy chosen)."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["dataset"] = dataset
    at.session_state["data_dir"] = str(folder)
    at.session_state["chosen_strategy"] = advice.recommendation.strategy
    at.session_state["advice"] = DatasetResult(dataset.fingerprint(), advice)
    at.run()
    at.switch_page("pages/setup.py").run()
    return at


def test_the_advice_sets_flips_and_epochs(folder: Path) -> None:
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    advice = replace(canned_advice(dataset, "low"), flip="none", epochs=60)  # mirror images look like another class; epochs fitted to the budget
    at = _open_with_advice(folder, dataset, advice)

    assert not at.exception
    config = at.session_state["train_config"]
    assert (config.strategy, config.epochs, config.augmentation.flip, config.test_time_flip) == ("feature_extraction", 60, "none", False)


def test_the_advice_ticks_the_turned_views_where_turns_keep_the_class(folder: Path) -> None:
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    advice = replace(canned_advice(dataset, "low"), turns=True)
    at = _open_with_advice(folder, dataset, advice)

    assert not at.exception
    assert at.checkbox(key="setup_turns").value and "The advice measured that turned images" in at.checkbox(key="setup_turns").help
    assert at.session_state["train_config"].augmentation.turns is True
    at.checkbox(key="setup_turns").uncheck().run()
    assert at.session_state["train_config"].augmentation.turns is False
    at.checkbox(key="setup_turns").check().run()
    at.selectbox(key="setup_flip").set_value("vertical").run()  # turned views come with mirror images: without left-right flips, none
    assert at.checkbox(key="setup_turns").disabled and at.session_state["train_config"].augmentation.turns is False


def test_where_the_measurement_overrode_the_matrix_setup_says_so_and_its_tips_agree(folder: Path) -> None:
    """The advice recommends feature extraction where the matrix says fine-tuning: Setup repeats the same sentence as Scenario,
    and its CPU tip points at this plan's own estimate instead of recommending another strategy."""
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    advice = canned_advice(dataset, "low")
    at = open_setup(dataset, str(folder), recommendation=advice.recommendation, advice=DatasetResult(dataset.fingerprint(), advice))

    assert not at.exception
    assert at.radio(key="setup_strategy").value == "feature_extraction"
    captions = " ".join(element.value for element in at.caption)
    assert f"Recommended by the measurement on Step 2: {advice.override_text()}" in captions
    device_tip = at.info[0].value
    assert "Training will run on the CPU" in device_tip and "feature extraction" not in device_tip and "the estimate at the bottom of this page" in device_tip

    at.radio(key="setup_strategy").set_value("fine_tune").run()
    assert not at.exception
    assert advice.override_text() in " ".join(element.value for element in at.info)


def test_the_advised_image_size_is_the_starting_point_and_says_why(folder: Path) -> None:
    """Small images: the advice measured feature extraction at 64 px as good as at 224 px; Setup starts there, says why, and the user can change it."""
    from dataclasses import replace

    from tl_core.advice.candidates import Candidate

    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    advice = canned_advice(dataset, "low")
    reason = "Image size 64 px: your images are typically 48 px; of the sizes weighed (64 px, 128 px, 224 px), the recommended candidate runs at this one."
    candidates = [replace(row, recommended=False) for row in advice.candidates] + [
        Candidate("feature_extraction", 0.975, "measured: the probe at 64 px", 10.0, 200, True, recommended=True, image_size=64)
    ]
    advice = replace(advice, candidates=candidates, image_size=64, image_size_reason=reason, typical_side=48)
    at = open_setup(dataset, str(folder), chosen_strategy="feature_extraction", advice=DatasetResult(dataset.fingerprint(), advice))

    assert not at.exception
    sizes = at.selectbox(key="setup_image_size_mobilenet_v2")
    assert sizes.value == 64 and "64 px (advised)" in sizes.options
    assert reason in [caption.value for caption in at.caption]
    assert at.session_state["train_config"].image_size == 64
    sizes.set_value(224).run()
    assert at.session_state["train_config"].image_size == 224


def test_the_joined_networks_adopted_on_the_scenario_page_start_the_setup_and_only_extract_features(folder: Path) -> None:
    dataset = scan_dataset(folder)
    joined = "mobilenet_v2+mobilenet_0.75"
    at = open_setup(dataset, str(folder), recommendation=recommend(dataset, "high"), chosen_strategy="feature_extraction", chosen_backbone=joined)

    assert not at.exception
    assert at.selectbox(key="setup_backbone").value == joined
    assert at.radio(key="setup_strategy_joined").options == ["Feature extraction · recommended"]
    assert any("This backbone joins two networks' features, so it only extracts features" in element.value for element in at.caption)
    assert any(element.value.startswith("Both networks (MobileNetV2, MobileNet (0.75 width)) stay frozen.") and "a new head per network" in element.value for element in at.caption)
    assert metric(at, "Parameters that train") == f"{(2192 + 768 + 2) * dataset.num_classes:,}"  # a head per network, each with its biases
    freeze_map = json.loads(at.get("plotly_chart")[0].proto.spec)
    head_bar = next(trace for trace in freeze_map["data"] if trace["name"] == "new head")
    assert "<b>new heads</b><br>pooling + a dense layer per network, their answers averaged" in head_bar["hovertemplate"]
    config = at.session_state["train_config"]
    assert (config.backbone, config.strategy, config.freeze_layers) == (joined, "feature_extraction", None)
    assert "a head per network on cached features, their answers averaged (at most 200 epochs" in at.success[-1].value
    # Choosing one network again brings every strategy back, and the next visit starts from that choice.
    at.selectbox(key="setup_backbone").set_value("mobilenet_v2").run()
    assert at.radio(key="setup_strategy").value == "feature_extraction" and len(at.radio(key="setup_strategy").options) == 4
    assert at.session_state["chosen_backbone"] == "mobilenet_v2"


def test_the_advice_ticks_the_middle_of_each_image_where_it_read_better(folder: Path) -> None:
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    plain = _open_with_advice(folder, dataset, canned_advice(dataset, "low"))
    assert not plain.checkbox(key="setup_centre_crop").value and plain.session_state["train_config"].centre_crop is False
    assert "The advice did not find the middles" in plain.checkbox(key="setup_centre_crop").help

    at = _open_with_advice(folder, dataset, replace(canned_advice(dataset, "low"), centre_crop=True))
    assert not at.exception
    assert at.checkbox(key="setup_centre_crop").value and "The advice measured that the middles read better" in at.checkbox(key="setup_centre_crop").help
    assert at.session_state["train_config"].centre_crop is True
    assert "the middle of each image (the model takes 280 px)" in at.success[0].value
    at.checkbox(key="setup_centre_crop").uncheck().run()
    assert at.session_state["train_config"].centre_crop is False


def test_the_augmentation_preview_shows_the_middles_when_the_box_is_ticked(folder: Path) -> None:
    from fake_engine import canned_advice

    dataset = scan_dataset(folder)
    at = _open_with_advice(folder, dataset, replace(canned_advice(dataset, "low"), centre_crop=True))
    at.checkbox(key="setup_augment").check().run()
    engine = at.session_state["engine"]
    assert engine.previewed_middles[-1] is True
    assert any("the middle of each image" in caption.value for caption in at.caption)
    at.checkbox(key="setup_centre_crop").uncheck().run()
    assert not at.exception
    assert engine.previewed_middles[-1] is False
    assert not any("the middle of each image (the box" in caption.value for caption in at.caption)
