"""A tiny run of the speed benchmark: every measurement runs and the table is complete (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.speed import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def test_benchmark_smoke_run_prints_every_ratio(capsys, tmp_path: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    assert main(["--smoke", "--source", str(ants_bees), "--json", str(tmp_path / "bench.json")]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "bench.json").read_text())
    assert set(results["ratios"]) == {
        "first_run_extraction_vs_forward_limit", "naive_end_to_end_over_first_run", "naive_end_to_end_over_second_run",
        "warm_image_cache_vs_forward_limit", "extraction_3000_over_head_20_epochs", "fine_tune_steps_vs_plain_fit",
    }
    assert all(value > 0 for value in results["ratios"].values())
    assert results["second_run"]["cache"] == {"images": "hit", "features": "hit"}
    assert results["facts"]["cpu_count"] >= 1 and results["peak_memory_mb"] > 0
    assert results["advice_seconds"] > 0 and 0 < results["first_run"]["first_epoch_seconds"] < results["first_run"]["seconds"]
    memory = results["memory_run"]
    assert memory["images"] == 40 and memory["peak_memory_mb"] > 100 and memory["images_held_in"] == "memory"
    assert table.count("\n| ") == 11  # header, six measurements, one reference line, advice, first epoch, memory run
