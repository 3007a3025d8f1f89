"""The run folder: written atomically (a full disk or a refused write leaves no partial model), and read back."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from tl_core.errors import RunError
from tl_core.runs.folder import RunSummary, read_summary, update_summary, write_run_folder


class PartialModel:
    """A model whose save writes part of the file, then fails as a full disk does."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def save(self, path: str) -> None:
        Path(path).write_bytes(b"partial model bytes")
        if path.endswith(self.fail_on):
            raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full_message(run_dir: Path) -> str:
    return f"Could not write the run folder '{run_dir}': No space left on device. Choose a folder you can write to with enough free space (--out)."


def test_disk_full_while_saving_the_model_leaves_no_model_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=re.escape(_disk_full_message(run_dir))):
        write_run_folder(run_dir, summary=RunSummary(status="finished"), model=PartialModel(fail_on=".h5"), class_names=["a", "b"])
    assert sorted(path.name for path in run_dir.iterdir()) == ["model.keras"]  # finished before the disk filled; no model.h5, no partial file


def test_disk_full_when_renaming_into_place_leaves_no_model_file(tmp_path: Path, monkeypatch) -> None:
    def full_disk(source, target) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tl_core.runs.folder.os.replace", full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=re.escape(_disk_full_message(run_dir))):
        write_run_folder(run_dir, summary=RunSummary(status="finished"), model=PartialModel(fail_on="never"), class_names=["a", "b"])
    assert list(run_dir.iterdir()) == []


def test_a_refused_write_is_reported_and_leaves_no_model_file(tmp_path: Path, monkeypatch) -> None:
    def refuse(*arguments, **options):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tl_core.files.tempfile.mkstemp", refuse)
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=re.escape(f"Could not write the run folder '{run_dir}': Permission denied. Choose a folder you can write to with enough free space (--out).")):
        write_run_folder(run_dir, summary=RunSummary(status="finished"), model=PartialModel(fail_on="never"), class_names=["a"])
    assert list(run_dir.iterdir()) == []


def test_an_unwritable_output_folder_is_reported(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("skipped: this user (root) can write to a read-only folder, so chmod cannot make one; the fault-injection tests above cover the same message")
        run_dir = locked / "run"
        with pytest.raises(RunError, match=re.escape(f"Could not write the run folder '{run_dir}': Permission denied. Choose a folder you can write to with enough free space (--out).")):
            write_run_folder(run_dir, summary=RunSummary(status="finished"), model=PartialModel(fail_on="never"), class_names=["a"])
        assert not run_dir.exists()
    finally:
        locked.chmod(0o700)


def test_run_json_round_trips_and_keeps_what_this_version_does_not_know(tmp_path: Path) -> None:
    summary = RunSummary(
        status="finished", created="2026-12-06T10:00:00+00:00", config={"backbone": "mobilenet_v2", "seed": 3}, backbone={"name": "mobilenet_v2", "display_name": "MobileNetV2"},
        image_size=224, data={"root": "/photos/insects", "class_names": ["ants", "bees"], "counts": {"train": {"ants": 3, "bees": 4}, "test": {"ants": 1, "bees": 1}},
                              "evaluation_split": "test", "seed": 3, "split_fractions": {"train": 0.7, "val": 0.15, "test": 0.15}},
        seconds={"total": 12.5}, extra={"from_a_later_version": [1, 2]},
    )
    write_run_folder(tmp_path, summary)
    back = read_summary(tmp_path)

    assert back == summary and back.to_dict() == summary.to_dict()
    assert "error" not in back.to_dict() and back.to_dict()["from_a_later_version"] == [1, 2]
    assert (back.display_name, back.class_names, back.dataset_name, back.image_count, back.total_seconds) == ("MobileNetV2", ["ants", "bees"], "insects", 9, 12.5)
    assert back.split_options == {"seed": 3, "val_fraction": 0.15, "test_fraction": 0.15}


def test_an_old_or_damaged_run_json_still_reads(tmp_path: Path) -> None:
    # An early version wrote fewer keys; a damaged entry of the wrong kind falls back to its default.
    (tmp_path / "run.json").write_text(json.dumps({"status": "stopped", "config": "not a dict", "data": {"class_names": ["a", "b"]}, "history": None}))
    summary = read_summary(tmp_path)
    assert (summary.status, summary.config, summary.class_names, summary.history, summary.evaluation_split, summary.selection_split) == ("stopped", {}, ["a", "b"], None, "test", "val")
    assert summary.display_name == "" and summary.image_count is None


def test_a_missing_or_broken_run_json_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=re.escape(f"Could not read '{tmp_path / 'run.json'}'")):
        read_summary(tmp_path)
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="does not hold an object"):
        read_summary(tmp_path)


def test_updating_a_summary_changes_only_what_is_asked(tmp_path: Path) -> None:
    write_run_folder(tmp_path, RunSummary(status="finished", notes=["kept"]))
    update_summary(tmp_path, exports={"onnx": {"ok": True}})
    summary = read_summary(tmp_path)
    assert summary.notes == ["kept"] and summary.exports == {"onnx": {"ok": True}}
