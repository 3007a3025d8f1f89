"""The run history: listing run folders (damaged ones too), comparing configs, deleting safely, the `runs` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core.errors import RunError
from tl_core.runs.history import config_differences, delete_run, list_runs, read_run

from conftest import REPO
from fake_engine import finished_run


def test_runs_are_listed_newest_first_with_what_they_did(tmp_path: Path) -> None:
    finished_run(tmp_path, "older", "2026-12-01T10:00:00+00:00")
    finished_run(tmp_path, "newer", "2026-12-03T10:00:00+00:00", strategy="fine_tune")
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "empty_folder").mkdir()

    records = list_runs(tmp_path)

    assert [record.name for record in records] == ["newer", "older"]
    newest = records[0]
    assert (newest.status, newest.dataset, newest.fingerprint, newest.images, newest.classes) == ("finished", "insects", "abc123", 30, 2)
    assert (newest.backbone, newest.strategy, newest.frozen_layers, newest.image_size, newest.seed) == ("MobileNetV2", "fine_tune", 154, 32, 0)
    assert newest.epochs == 5 and newest.test_accuracy == pytest.approx(0.75) and newest.seconds == 90.0 and newest.has_model
    assert list_runs(tmp_path / "absent") == []


def test_damaged_and_unfinished_folders_are_listed_not_fatal(tmp_path: Path) -> None:
    finished_run(tmp_path, "good", "2026-12-01T10:00:00+00:00")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.h5").write_bytes(b"partial")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "run.json").write_text(json.dumps({"status": "failed", "config": "not a dict", "error": "ResourceExhaustedError: out of memory"}))

    records = {record.name: record for record in list_runs(tmp_path)}

    assert records["half"].status == "incomplete" and "no run.json" in records["half"].problem
    assert records["broken"].status == "unreadable" and records["broken"].problem.startswith("run.json cannot be read")
    assert records["odd"].status == "failed" and records["odd"].problem == "ResourceExhaustedError: out of memory" and records["odd"].config == {}
    assert records["good"].status == "finished"
    assert read_run(tmp_path / "broken").to_dict()["run_dir"] == str(tmp_path / "broken")


def test_config_differences_name_nested_settings_and_ignore_the_folder() -> None:
    first = {"out_dir": "a", "epochs": 10, "augmentation": {"zoom": 0.2, "flip": "horizontal"}}
    second = {"out_dir": "b", "epochs": 10, "augmentation": {"zoom": 0.1, "flip": "horizontal"}, "label_smoothing": 0.1}
    assert config_differences(first, second) == ["augmentation.zoom", "label_smoothing"]


def test_delete_removes_only_a_run_folder_inside_the_runs_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = finished_run(runs, "doomed", "2026-12-01T10:00:00+00:00")
    outside = finished_run(tmp_path / "elsewhere", "precious", "2026-12-01T10:00:00+00:00")
    (runs / "plain").mkdir()
    (runs / "link").symlink_to(outside)

    for target in (outside, runs / "plain", runs / "link", runs / ".." / "elsewhere" / "precious", runs):
        with pytest.raises(RunError, match="is not a run folder in"):
            delete_run(target, runs)
    assert outside.is_dir() and (runs / "plain").is_dir()

    delete_run(run_dir, runs)
    assert not run_dir.exists() and [record.name for record in list_runs(runs)] == ["link"]  # listed, never deleted through the link


@pytest.mark.slow
def test_a_run_that_fails_mid_way_leaves_a_failed_record(tmp_path: Path, imagenet_weights: Path, monkeypatch) -> None:
    from tl_core.config import TrainConfig
    from tl_core.training import run as training
    from tl_core.training.run import train

    from conftest import make_class_folders

    def out_of_memory(run):
        raise MemoryError("no room for the features")

    monkeypatch.setattr(training, "read_images", out_of_memory)
    data = make_class_folders(tmp_path / "data", {"a": 6, "b": 6}, size=32)
    config = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "runs" / "failing"), image_size=32, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(MemoryError):
        train(config)

    (record,) = list_runs(tmp_path / "runs")
    assert record.status == "failed" and "ran out of memory" in record.problem and record.dataset == "data"
    # A mistake in the settings or the data starts no run and leaves no folder.
    with pytest.raises(Exception, match="does not exist"):
        train(TrainConfig(data_dir=str(tmp_path / "missing"), out_dir=str(tmp_path / "runs" / "never")))
    assert not (tmp_path / "runs" / "never").exists()


def test_the_runs_command_prints_the_table_and_json(tmp_path: Path) -> None:
    finished_run(tmp_path, "newer", "2026-12-03T10:00:00+00:00")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{")

    table = subprocess.run([sys.executable, "-m", "tl_core", "runs", "--runs-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["created", "status", "dataset", "images"]
    assert "finished" in table.stdout and "insects" in table.stdout and "0.750" in table.stdout and "1.5" in table.stdout
    assert any(line.startswith("broken (unreadable): run.json cannot be read") for line in lines)

    as_json = subprocess.run([sys.executable, "-m", "tl_core", "runs", "--runs-dir", str(tmp_path), "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    rows = json.loads(as_json.stdout)
    assert {row["name"]: row["status"] for row in rows} == {"newer": "finished", "broken": "unreadable"}
    newer = next(row for row in rows if row["name"] == "newer")
    assert "config" not in newer and newer["test_accuracy"] == pytest.approx(0.75) and newer["run_dir"] == str(tmp_path / "newer")

    empty = subprocess.run([sys.executable, "-m", "tl_core", "runs", "--runs-dir", str(tmp_path / "none")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert empty.returncode == 0 and empty.stdout.strip() == f"no runs in {tmp_path / 'none'}"


def test_each_run_says_where_it_trained(tmp_path: Path) -> None:
    gpu = finished_run(tmp_path, "gpu", "2026-12-02T10:00:00+00:00")
    summary = json.loads((gpu / "run.json").read_text())
    summary["device"] = {"kind": "GPU", "name": "NVIDIA H100 80GB HBM3", "count": 1, "backend": "torch", "mixed_precision": "mixed_bfloat16", "precision": "bfloat16"}
    (gpu / "run.json").write_text(json.dumps(summary))
    old = finished_run(tmp_path, "old", "2026-12-01T10:00:00+00:00")  # written before backends were recorded
    summary = json.loads((old / "run.json").read_text())
    summary["device"] = {"kind": "CPU", "name": "CPU", "reason": "no GPU"}
    (old / "run.json").write_text(json.dumps(summary))

    devices = {record.name: record.device for record in list_runs(tmp_path)}
    assert devices == {"gpu": "GPU NVIDIA H100 80GB HBM3 · PyTorch · bfloat16", "old": "CPU · TensorFlow · float32"}
