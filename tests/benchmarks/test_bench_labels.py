"""The label-noise benchmark's smoke run: flips are planted on a copy, found, and four runs are trained on the same held-out images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.labels import main

from conftest import make_class_folders

pytestmark = pytest.mark.slow  # trains real networks, or runs a benchmark or the browser


def test_smoke_run_plants_finds_and_trains(capsys, tmp_path: Path, imagenet_weights: Path) -> None:
    data = tmp_path / "data"
    make_class_folders(data / "train", {"red": 20, "green": 20, "blue": 20})
    make_class_folders(data / "test", {"red": 4, "green": 4, "blue": 4}, size=40)
    before = sorted(path.relative_to(data).as_posix() for path in data.rglob("*"))
    code = main([str(data), "--smoke", "--noise", "0.1", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "result.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert sorted(path.relative_to(data).as_posix() for path in data.rglob("*")) == before  # the user's folder is untouched
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["planted"] == 6
    assert [row["labels"] for row in result["runs"]] == ["clean", "noisy", "noisy, flagged excluded", "noisy, flagged relabelled"]
    runs = {row["labels"]: row for row in result["runs"]}
    assert runs["noisy, flagged excluded"]["train_images"] < runs["noisy"]["train_images"] == runs["noisy, flagged relabelled"]["train_images"]
    assert result["top_k"]["as many as planted"]["recall"] >= 0.5  # stripes and colours at 32 px: most flips are plain to see
    assert "| top k suspects | k | precision | recall |" in out and "| clean |" in out
    flipped = list((tmp_path / "work" / "noisy" / "train").rglob("flipped_*"))
    assert len(flipped) == 6

