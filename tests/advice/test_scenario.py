"""The four-scenario matrix: size thresholds at their edge, cells, and reasons that name the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tl_core.advice.scenario import classify_size, recommend, scenario_number
from tl_core.data.sample import SAMPLE_CLASSES, write_sample_dataset
from tl_core.data.scan import scan_dataset

from conftest import make_class_folders


@pytest.mark.parametrize(
    ("size", "similarity", "number"),
    [("small", "high", 1), ("small", "low", 2), ("large", "low", 3), ("large", "high", 4)],
)
def test_matrix_cells(size: str, similarity: str, number: int) -> None:
    assert scenario_number(size, similarity) == number


def test_size_threshold_edge(tiny_dataset: Path) -> None:
    dataset = scan_dataset(tiny_dataset)  # 6 training images per class (10 minus 2 val, 2 test)
    assert classify_size(dataset, threshold=7).size == "small"
    assert classify_size(dataset, threshold=6).size == "large"


def test_recommendation_explains_with_the_measured_numbers(ants_bees: Path) -> None:
    dataset = scan_dataset(ants_bees)
    recommendation = recommend(dataset, "high")
    assert (recommendation.scenario, recommendation.strategy) == (1, "feature_extraction")
    assert recommendation.reasons[0].startswith("208 training images in 2 classes: 104 per class on average, fewer than the rule of thumb of 1,000 per class")
    assert set(recommendation.alternatives) == {2, 3, 4}
    low = recommend(dataset, "low")
    assert (low.scenario, low.strategy) == (2, "fine_tune")
    assert "Compare both" in low.reasons[2]


def test_tiny_classes_get_a_warning(tmp_path: Path) -> None:
    dataset = scan_dataset(make_class_folders(tmp_path / "d", {"a": 6, "b": 6}))
    assert any("smallest class has only 4 training images" in reason for reason in recommend(dataset, "high").reasons)


def test_sample_dataset_is_written_without_download(tmp_path: Path) -> None:
    dataset = scan_dataset(write_sample_dataset(tmp_path / "sample"))
    assert dataset.class_names == list(SAMPLE_CLASSES)
    assert len(dataset.records) == 60 * len(SAMPLE_CLASSES) and not dataset.skipped
