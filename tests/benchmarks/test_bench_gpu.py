"""The GPU check runs on a CPU too (that is how it is tested), and reports every figure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu import main

pytestmark = pytest.mark.slow  # a few small trainings


def test_the_gpu_check_reports_every_figure(tmp_path: Path, ants_bees: Path, imagenet_weights: Path, capsys) -> None:
    report_path = tmp_path / "gpu.json"
    assert main(["--smoke", "--photos", str(ants_bees), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["backend"] in ("tensorflow", "jax", "torch") and report["device"]["kind"] in ("CPU", "GPU") and report["describe"]
    for key in ("features_generated", "features_photos"):
        assert report[key]["from_files_images_per_second"] > 0 and report[key]["from_cache_images_per_second"] > 0
    assert 390 <= report["features_photos"]["images"] <= 398 and 0.5 < report["short_run_on_photos"]["accuracy"] <= 1.0
    assert report["fine_tune"]["images_per_second"] > 0 and report["fine_tune"]["phases"]["fine_tune"] > 0
    assert report["model_files"]["dtypes"] == ["float32"] and report["model_files"]["largest_difference"] < 1e-5
