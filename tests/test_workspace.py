"""Session folders: uploads keep their paths, hostile names and archives are refused."""

from __future__ import annotations

import gc
import io
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tl_core.errors import DataError
from tl_core.workspace import WORKSPACE_PREFIX, Workspace, remove_stale_workspaces


@dataclass
class Upload:
    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def _zip(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_sessions_get_separate_folders_and_uploads_keep_their_paths(tmp_path: Path) -> None:
    first, second = Workspace.create(tmp_path), Workspace.create(tmp_path)
    assert first.root != second.root
    folder = first.save_uploaded_files([Upload("train/cats/1.jpg", b"a"), Upload("train/dogs/2.jpg", b"b")])
    assert (folder / "train" / "cats" / "1.jpg").read_bytes() == b"a"
    assert not any(second.root.joinpath("data").iterdir())
    assert first.new_run_dir("fine_tune") != second.new_run_dir("fine_tune")
    first.cleanup()
    assert not first.root.exists()


def test_uploads_go_when_the_session_state_is_dropped(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path, runs_root=tmp_path / "runs")
    root = workspace.root
    del workspace
    gc.collect()
    assert not root.exists()


@pytest.mark.parametrize("name", ["../evil.jpg", "cats/../../evil.jpg", "/etc/passwd", "C:\\evil.jpg"])
def test_upload_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"Refused '{name}'")):
        workspace.save_uploaded_files([Upload(name, b"x")])
    assert not (tmp_path / "evil.jpg").exists()


def test_zip_with_single_top_folder_and_macosx_unpacks_cleanly(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    folder = workspace.unpack_zip(_zip({"photos/cats/1.jpg": b"a", "__MACOSX/photos/cats/._1.jpg": b"fork"}), label="photos")
    assert (folder / "photos" / "cats" / "1.jpg").exists()
    assert not (folder / "__MACOSX").exists()


def test_zip_slip_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape("Refused '../../outside.jpg': a path with '..' could write outside the session folder.")):
        workspace.unpack_zip(_zip({"ok/a.jpg": b"a", "../../outside.jpg": b"evil"}))
    assert not (tmp_path / "outside.jpg").exists()


def test_zip_bomb_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("tl_core.workspace.MAX_UNPACKED_BYTES", 1024 * 1024)
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape("The zip would unpack to 0.0 GB while at most 0 GB are accepted.")):
        workspace.unpack_zip(_zip({"cats/zeros.bin": bytes(2 * 1024 * 1024)}))


def test_not_a_zip_gets_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape("The uploaded file is not a readable .zip archive")):
        Workspace.create(tmp_path).unpack_zip(io.BytesIO(b"plain text"))


def test_stale_session_folders_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"{WORKSPACE_PREFIX}old"
    stale.mkdir()
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    fresh = Workspace.create(tmp_path)
    remove_stale_workspaces(tmp_path)
    assert not stale.exists() and fresh.root.exists()
