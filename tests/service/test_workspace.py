"""Session folders: uploads keep their paths, hostile names and archives are refused."""

from __future__ import annotations

import errno
import gc
import io
import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from tl_core.errors import DataError
from tl_core.service.workspace import ALIVE_FILE, WORKSPACE_PREFIX, Workspace, remove_session_folders, remove_stale_workspaces


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
    folder = first.unpack_zip(_zip({"train/cats/1.jpg": b"a", "train/dogs/2.jpg": b"b"}))
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
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_MB", "1")
    workspace = Workspace.create(tmp_path)
    message = "The zip totals 2.0 MB while at most 1.0 MB are accepted. Give the dataset's local folder path instead (Folder on this computer), or raise the limit with TL_CORE_MAX_UPLOAD_MB (megabytes)."
    with pytest.raises(DataError, match=re.escape(message)):
        workspace.unpack_zip(_zip({"cats/zeros.bin": bytes(2_000_000)}))
    assert _data_folders(workspace) == []


def test_zip_with_a_bomb_ratio_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("tl_core.service.workspace.RATIO_CHECKED_ABOVE_BYTES", 1024 * 1024)
    archive = _zip({"cats/zeros.bin": bytes(4 * 1024 * 1024)})
    entry = zipfile.ZipFile(archive).infolist()[0]
    ratio = entry.file_size / entry.compress_size
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"The zip unpacks to {ratio:.0f} times its size (over 200x): that is a zip bomb, not a folder of photos. Upload the real dataset.")):
        workspace.unpack_zip(archive)
    assert ratio > 200 and _data_folders(workspace) == []


def test_zip_with_too_many_entries_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_FILES", "2")
    message = "The zip holds 3 files while at most 2 are accepted. Give the dataset's local folder path instead (Folder on this computer), or raise the limit with TL_CORE_MAX_UPLOAD_FILES."
    with pytest.raises(DataError, match=re.escape(message)):
        Workspace.create(tmp_path).unpack_zip(_zip({"a/1.jpg": b"1", "a/2.jpg": b"2", "b/3.jpg": b"3"}))


def test_zip_with_an_absolute_entry_is_refused(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"Refused '{tmp_path}/evil.jpg': an absolute path in an upload could write outside the session folder.")):
        workspace.unpack_zip(_zip({"ok/a.jpg": b"a", f"{tmp_path}/evil.jpg": b"evil"}))
    assert not (tmp_path / "evil.jpg").exists() and _data_folders(workspace) == []


def test_encrypted_zip_entry_is_refused(tmp_path: Path) -> None:
    data = bytearray(_zip({"cats/secret.jpg": b"scrambled"}).getvalue())
    # Set the "encrypted" bit, as zips made with a password have it, in the local and the central header.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + flag_offset] |= 0x1
    buffer = io.BytesIO(bytes(data))
    message = "The zip entry 'cats/secret.jpg' is encrypted, while the app can only unpack zips without a password. Zip the folder again without a password."
    with pytest.raises(DataError, match=re.escape(message)):
        Workspace.create(tmp_path).unpack_zip(buffer)


def test_damaged_zip_keeps_the_previous_upload_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    first = workspace.unpack_zip(_zip({"cats/1.jpg": b"first"}), label="photos")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("cats/1.jpg", b"good bytes")
        archive.writestr("cats/2.jpg", b"original bytes")
    damaged = buffer.getvalue().replace(b"original bytes", b"ORIGINAL bytes")  # the CRC no longer matches
    message = "The zip entry 'cats/2.jpg' cannot be unpacked (Bad CRC-32 for file 'cats/2.jpg'). Zip the folder again, or upload the folder itself."
    with pytest.raises(DataError, match=re.escape(message)):
        workspace.unpack_zip(io.BytesIO(damaged), label="photos")
    assert (first / "cats" / "1.jpg").read_bytes() == b"first"
    assert _data_folders(workspace) == ["photos"]


def test_disk_full_while_unpacking_is_reported(tmp_path: Path, monkeypatch) -> None:
    workspace = Workspace.create(tmp_path)

    def full_disk(source, target, *arguments) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tl_core.service.workspace.shutil.copyfileobj", full_disk)
    message = (
        "Could not save 'cats/1.jpg' in the session folder: No space left on device. "
        "Free some disk space (or set TMPDIR to a disk with room and restart the app), or give the dataset's local folder path instead."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        workspace.unpack_zip(_zip({"cats/1.jpg": b"a"}))
    assert _data_folders(workspace) == []


def _data_folders(workspace: Workspace) -> list[str]:
    """Everything under the session's data folder, staging folders included."""
    return sorted(path.name for path in (workspace.root / "data").iterdir())


def test_a_single_zip_entry_over_the_file_limit_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TL_CORE_MAX_FILE_MB", "1")
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError, match=re.escape("'cats/huge.tif' is 2.0 MB while a single file may have at most 1.0 MB")):
        workspace.unpack_zip(_zip({"cats/1.jpg": b"1", "cats/huge.tif": bytes(2_000_000)}))
    assert _data_folders(workspace) == []


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


def test_a_live_session_older_than_a_day_survives_another_sessions_start(tmp_path: Path) -> None:
    live = Workspace.create(tmp_path)
    dataset = live.unpack_zip(_zip({"cats/1.jpg": b"a", "dogs/2.jpg": b"b"}), label="photos")
    (dataset / "label_decisions.json").write_text("{}")
    day_old = time.time() - 25 * 3600
    for path in (live.root, live.root / "data", dataset, live.root / ALIVE_FILE):
        os.utime(path, (day_old, day_old))  # untouched for 25 hours: a tab left open over a weekend
    Workspace.create(tmp_path)  # another tab starts, and sweeps
    assert (dataset / "cats" / "1.jpg").read_bytes() == b"a" and (dataset / "label_decisions.json").exists()
    live.touch()
    assert (live.root / ALIVE_FILE).stat().st_mtime > day_old  # every rerun marks it in use


def test_a_gone_sessions_folder_is_swept_once_its_lock_is_free(tmp_path: Path) -> None:
    gone = Workspace.create(tmp_path)
    root = gone.root
    gone._alive.release()  # as when its server died: the lock goes with the process, the folder stays
    day_old = time.time() - 25 * 3600
    os.utime(root / ALIVE_FILE, (day_old, day_old))
    os.utime(root, (day_old, day_old))
    Workspace.create(tmp_path)
    assert not root.exists()


def test_every_session_folder_goes_when_the_server_stops(tmp_path: Path) -> None:
    sessions = [Workspace.create(tmp_path) for _ in range(3)]
    sessions[0].unpack_zip(_zip({"cats/1.jpg": b"a"}))
    assert remove_session_folders() >= 3
    assert not any(workspace.root.exists() for workspace in sessions)
    assert list(tmp_path.glob(f"{WORKSPACE_PREFIX}*")) == []


def test_a_zip_is_read_where_it_is_and_its_entry_count_is_checked_before_its_index(tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "photos.zip"
    archive.write_bytes(_zip({"cats/1.jpg": b"a", "dogs/2.jpg": b"b"}).getvalue())

    class NoCopies(io.FileIO):
        def getvalue(self) -> bytes:  # what made a second copy of the whole zip before
            raise AssertionError("the zip was copied into memory")

    workspace = Workspace.create(tmp_path / "sessions")
    with NoCopies(archive) as uploaded:
        folder = workspace.unpack_zip(uploaded, label="from_file")
    assert (folder / "cats" / "1.jpg").read_bytes() == b"a"
    assert (workspace.unpack_zip(archive, label="from_path") / "dogs" / "2.jpg").read_bytes() == b"b"

    many = _zip({f"a/{index}.jpg": b"" for index in range(50)})
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_FILES", "10")

    def no_index(*arguments, **keywords):
        raise AssertionError("the whole index was read")

    monkeypatch.setattr("tl_core.service.workspace.zipfile.ZipFile", no_index)
    with pytest.raises(DataError, match=re.escape("The zip holds 50 files while at most 10 are accepted.")):
        workspace.unpack_zip(many)


def test_a_zip_with_a_file_and_a_folder_of_the_same_name_says_so(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    with pytest.raises(DataError) as refused:
        workspace.unpack_zip(_zip({"cats": b"a file", "cats/1.jpg": b"a"}))
    assert "A file and a folder of the same name are in the way of each other. Rename one of them and upload again." in str(refused.value)
    assert "disk space" not in str(refused.value) and _data_folders(workspace) == []


def test_tried_images_with_odd_names_are_saved_under_clean_ones(tmp_path: Path) -> None:
    from tl_core.service.engine import Engine

    workspace = Workspace.create(tmp_path)
    odd = [("bad\x00name.jpg", b"1"), ("x" * 300 + ".png", b"2"), ("../../etc/passwd", b"3"), ("C:\\photos\\cat.jpg", b"4"), ("", b"5")]
    paths, names = Engine().save_tried_images(workspace, odd)
    assert [Path(path).read_bytes() for path in paths] == [b"1", b"2", b"3", b"4", b"5"]
    assert all(Path(path).parent == workspace.data_dir("try") for path in paths)
    assert [Path(path).name for path in paths][:4] == ["001_bad_name.jpg", f"002_{'x' * 116}.png", "003_passwd", "004_cat.jpg"]
    assert names[:4] == ["bad\\x00name.jpg", "x" * 300 + ".png", "passwd", "cat.jpg"]
