"""The estimate benchmark's smoke run: each estimate against its run, the phases, the readouts, and the second run learning from the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.estimates import main

pytestmark = pytest.mark.slow  # trains real networks


def test_smoke_run_compares_every_estimate_with_its_run(capsys, tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path, monkeypatch) -> None:
    monkeypatch.setenv("TL_CORE_CACHE_DIR", str(tmp_path / "elsewhere"))  # the benchmark points it at its own cache folder
    code = main([str(tiny_dataset), "--smoke", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| dataset | strategy | planned epochs | learnt from runs | Scenario said | Setup and Train said | took | error | within ±25 % or 5 s | load |" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["strategy"] for row in rows] == ["fine_tune", "fine_tune"]
    assert rows[0]["learned_from"] == 0 and rows[1]["learned_from"] == 1, "the second estimate learns from the first run"
    for row in rows:
        assert row["actual_seconds"] > 0 and row["timings"]["total"]["actual"] == pytest.approx(row["actual_seconds"], abs=0.1)
        assert [readout["phase"] for readout in row["readouts"]] == ["head", "fine_tune"]
        assert all(readout["said"] is not None and readout["actual"] > 0 for readout in row["readouts"])
    timings = json.loads((tmp_path / "work" / "cache" / "timings.json").read_text())
    assert len(timings) == 2
    assert "estimates and readouts within ±25 % (or 5 s) of what happened (load:" in out
