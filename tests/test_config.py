"""Settings: each strategy's recipe fills the settings left unset, and the rules that follow from a config."""

from __future__ import annotations

import re

import pytest

from tl_core.config import IMBALANCE_FOR_CLASS_WEIGHTS, QUICK_RECIPES, RECIPES, AugmentConfig, TrainConfig, class_weights_default, parse_formats, recipe_description
from tl_core.errors import ConfigError


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


@pytest.mark.parametrize(
    ("strategy", "uses_warmup", "trains_on_images", "uses_features", "planned_epochs", "head_epochs"),
    [
        ("feature_extraction", False, False, True, 200, 200),
        ("fine_tune", True, True, True, 208, 200),
        ("full_fine_tune", True, True, True, 208, 200),
        ("from_scratch", False, True, False, 30, 0),
    ],
)
def test_strategy_rules_are_properties_of_the_config(strategy, uses_warmup, trains_on_images, uses_features, planned_epochs, head_epochs) -> None:
    config = TrainConfig(data_dir="d", out_dir="o", strategy=strategy).validated()
    assert (config.uses_warmup, config.trains_on_images, config.uses_features, config.planned_epochs, config.head_epochs) == (
        uses_warmup, trains_on_images, uses_features, planned_epochs, head_epochs,
    )


@pytest.mark.parametrize(
    ("flip", "quick", "test_time_flip", "mirrors", "uses_test_time_flip", "mirrored_features"),
    [
        ("horizontal", False, None, True, True, True),
        ("horizontal_and_vertical", True, None, True, False, False),  # the quick recipe: one pass of the backbone per image
        ("horizontal", True, True, True, True, True),  # unless test-time flip is asked for
        ("vertical", False, None, False, False, False),  # a mirror image is not a valid example here
        ("none", False, True, False, False, False),
    ],
)
def test_mirror_rules(flip, quick, test_time_flip, mirrors, uses_test_time_flip, mirrored_features) -> None:
    config = TrainConfig(data_dir="d", out_dir="o", augmentation=AugmentConfig(flip=flip), quick=quick, test_time_flip=test_time_flip).validated()
    assert (config.mirrors, config.uses_test_time_flip, config.mirrored_features) == (mirrors, uses_test_time_flip, mirrored_features)


def test_class_weights_turn_on_for_imbalanced_data_unless_the_user_says() -> None:
    assert not class_weights_default(2.9) and class_weights_default(IMBALANCE_FOR_CLASS_WEIGHTS)
    assert TrainConfig(data_dir="d", out_dir="o").class_weights is None  # decided once the data is scanned


def test_recipe_texts_are_built_from_the_recipe_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "for 8 epochs" in recipe_description("fine_tune") and "at most 200 epochs" in recipe_description("fine_tune")
    assert "for 3 epochs" in recipe_description("fine_tune", quick=True)
    # Change the recipe and the words follow: no page can stay stale.
    monkeypatch.setitem(RECIPES, "fine_tune", {**RECIPES["fine_tune"], "epochs": 12, "warmup_epochs": 50})
    assert "for 12 epochs" in recipe_description("fine_tune") and "at most 50 epochs" in recipe_description("fine_tune")
    assert "for 30 epochs" in recipe_description("from_scratch") and "up to 200 epochs" in recipe_description("feature_extraction")


def test_export_formats_are_checked_and_named() -> None:
    assert parse_formats("tflite, onnx") == ("tflite", "onnx")
    assert parse_formats(["ONNX", "int8", "onnx"]) == ("onnx", "int8")
    assert parse_formats("none") == () and parse_formats([]) == ()
    with pytest.raises(ConfigError, match=re.escape("Unknown export format 'png'. Choose from: tflite, int8, onnx (or none).")):
        parse_formats("tflite png")
    with pytest.raises(ConfigError, match="'savedmodel'"):
        TrainConfig(data_dir="d", out_dir="o", export_formats=("savedmodel",)).validated()
