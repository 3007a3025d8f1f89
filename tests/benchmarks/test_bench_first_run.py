"""A tiny run of the whole-process benchmark: every figure is measured and printed beside its baseline (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.first_run import main, split_folder

pytestmark = pytest.mark.slow  # five processes that each load TensorFlow


def test_the_benchmark_reports_every_figure(capsys, tmp_path: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    assert main([str(ants_bees), "--smoke", "--json", str(tmp_path / "report.json")]) == 0
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    (round_,) = report["rounds"]
    assert 0 <= round_["recipe"]["accuracy"] <= 1 and round_["recipe"]["held_out_images"] == round_["first"]["held_out_images"]  # the same images
    first, second = round_["first"], round_["second"]
    assert 0 < first["first_model_seconds"] < first["seconds"] and 0 <= first["accuracy"] <= 1
    assert second["first_model_seconds"] < second["seconds"] and "features" not in second["phases"]  # the backbone did not run again
    backbone = report["backbone"]["this_cpu"]
    assert backbone["images_per_second"]["keras"] > 0 and backbone["images_per_second"]["onnxruntime"] > 0 and backbone["min_cosine"] > 0.999
    assert "avx2_only" in report["backbone"]  # measured, or the reason it could not be
    assert {"data", "phone_photos_4032x3024"} == set(report["decoding"])
    for line in ("the articles' recipe", "our first run, default settings: the first model saved", "our second run", "this cpu", "phone photos 4032x3024"):
        assert line in table, line


def test_a_folder_without_train_and_val_is_split_per_class_into_a_copy(tmp_path: Path) -> None:
    for name, count in (("a", 10), ("b", 5)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(count):
            (tmp_path / "data" / name / f"{index}.jpg").write_bytes(b"x")
    target = split_folder(tmp_path / "data", tmp_path / "work")
    assert sorted(path.name for path in target.iterdir()) == ["train", "val"]
    assert len(list((target / "val" / "a").iterdir())) == 2 and len(list((target / "train" / "b").iterdir())) == 4
    assert not any(path.is_symlink() for path in target.rglob("*"))
    assert split_folder(target, tmp_path / "other") == target  # a folder with train/ and val/ is used as it is
