"""The settings a run starts from: one rule for the Setup page and --strategy auto."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tl_core.advice import auto
from tl_core.advice.settings import suggested_settings
from tl_core.config import RECIPES, TrainConfig
from tl_core.data.scan import scan_dataset

from conftest import make_class_folders
from fake_engine import FakeEngine, canned_advice

# The fake engine's layer names: a MobileNetV2-like stem, five blocks and a top (7 blocks, the usual depth freezes the first 16 layers).
LAYER_NAMES = [layer.name for layer in FakeEngine().layer_map("mobilenet_v2").layers]


@pytest.fixture
def dataset(tmp_path: Path):
    return scan_dataset(make_class_folders(tmp_path / "shapes", {"circles": 12, "squares": 12}))


def test_without_advice_the_recipe_and_the_usual_depth(dataset) -> None:
    suggested = suggested_settings(dataset, "mobilenet_v2", "fine_tune", layer_names=LAYER_NAMES)
    recipe = RECIPES["fine_tune"]
    assert (suggested.epochs, suggested.warmup_epochs, suggested.early_stopping_patience, suggested.test_time_flip) == (
        recipe["epochs"], recipe["warmup_epochs"], recipe["early_stopping_patience"], recipe["test_time_flip"],
    )
    assert (suggested.freeze_layers, suggested.freeze_block, suggested.flip, suggested.class_weights) == (16, "block_5", "horizontal", False)
    assert suggested.freeze_reason.startswith("the usual depth") and suggested.epochs_reason == "the recipe's"
    assert suggested_settings(dataset, "mobilenet_v2", "feature_extraction", layer_names=LAYER_NAMES).freeze_layers is None


def test_the_advice_sets_the_depth_flips_and_the_epochs_of_the_strategy_it_chose(dataset) -> None:
    advice = replace(canned_advice(dataset), flip="none", epochs=60)  # recommends feature extraction, measured fine-tuning's depth at 12
    chosen = suggested_settings(dataset, "mobilenet_v2", "feature_extraction", advice=advice, layer_names=LAYER_NAMES)
    other = suggested_settings(dataset, "mobilenet_v2", "fine_tune", advice=advice, layer_names=LAYER_NAMES)
    assert (chosen.epochs, chosen.flip) == (60, "none") and "time budget" in chosen.epochs_reason
    assert (other.epochs, other.flip, other.freeze_layers, other.freeze_block) == (RECIPES["fine_tune"]["epochs"], "none", 12, "block_2")
    assert other.freeze_reason.startswith("measured")
    # The quick variant keeps its own epochs, and advice for another backbone is not used.
    assert suggested_settings(dataset, "mobilenet_v2", "feature_extraction", quick=True, advice=advice).epochs == RECIPES["feature_extraction"]["epochs"]
    assert suggested_settings(dataset, "resnet50", "feature_extraction", advice=advice).epochs == RECIPES["feature_extraction"]["epochs"]


def test_imbalanced_data_starts_with_class_weights(tmp_path: Path) -> None:
    imbalanced = scan_dataset(make_class_folders(tmp_path / "imbalanced", {"common": 40, "rare": 10}))
    assert suggested_settings(imbalanced, "mobilenet_v2", "feature_extraction").class_weights


def test_the_command_lines_auto_gives_the_run_the_setup_page_would(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    advice = replace(canned_advice(dataset), flip="none", epochs=60)
    monkeypatch.setattr("tl_core.advice.advise.advise", lambda *arguments, **keywords: advice)
    config, notes = auto.resolve_auto(TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto").validated())
    page = suggested_settings(dataset, "mobilenet_v2", advice.recommendation.strategy, advice=advice)
    assert (config.strategy, config.epochs, config.augmentation.flip) == (advice.recommendation.strategy, page.epochs, page.flip)
    assert any("Left-right flips turned off" in note for note in notes)


def test_where_turned_images_read_as_the_same_class_auto_turns_the_views_on_unless_the_user_said_no(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.config import AugmentConfig

    advice = replace(canned_advice(dataset), turns=True)  # recommends feature extraction
    monkeypatch.setattr("tl_core.advice.advise.advise", lambda *arguments, **keywords: advice)
    assert suggested_settings(dataset, "mobilenet_v2", "feature_extraction", advice=advice).turns
    config, notes = auto.resolve_auto(TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto").validated())
    assert config.augmentation.turns is True and any(note.startswith("Turned views on") for note in notes)
    assert len(config.extra_feature_views) == 7
    said_no = TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto", augmentation=AugmentConfig(turns=False)).validated()
    assert auto.resolve_auto(said_no)[0].augmentation.turns is False
    monkeypatch.setattr("tl_core.advice.advise.advise", lambda *arguments, **keywords: replace(advice, turns=False))
    config, _ = auto.resolve_auto(TrainConfig(data_dir=str(dataset.root), out_dir="o", strategy="auto").validated())
    assert not config.augmentation.turns and config.extra_feature_views == ["mirrored"]
