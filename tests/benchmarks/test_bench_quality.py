"""The accuracy benchmark's smoke run: every recipe runs on the same split and the table says who picked what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality import main

pytestmark = pytest.mark.slow  # trains real networks, or runs a benchmark or the browser


def test_smoke_run_prints_a_row_per_recipe_and_the_picks(capsys, tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    code = main([str(tiny_dataset), "--smoke", "--recipes", "articles,feature_extraction,fine_tune,compare", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| recipe | accuracy | macro-F1 | minutes | notes |" in out
    report = json.loads((tmp_path / "rows.json").read_text())
    assert [row["recipe"] for row in report["rows"]] == ["articles", "feature_extraction", "fine_tune", "compare"]
    assert all(0 <= row["accuracy"] <= 1 for row in report["rows"][:3])
    assert report["picked"]["compare"] in ("feature_extraction", "fine_tune")
    assert f"compare picked {report['picked']['compare']}:" in out
    # Each recipe had a cache folder of its own, so each paid for a first run.
    assert {path.name for path in (tmp_path / "work").glob("cache_*")} >= {"cache_articles", "cache_feature_extraction", "cache_fine_tune", "cache_compare"}
