"""Files on disk: every write is whole or not at all, readable by others, and the cache folder follows the environment."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tl_core.files import atomic_write, cache_key, default_cache_dir, read_json, remove_abandoned_partials, write_json

from conftest import REPO


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")

    assert target.read_text() == "second"
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # colleagues sharing the folder can read it


def test_a_writer_that_fails_half_way_leaves_the_previous_file_and_no_partial_one(tmp_path: Path) -> None:
    target = tmp_path / "model.h5"
    target.write_bytes(b"the good model")

    def dies_half_way(path: str) -> None:
        Path(path).write_bytes(b"half a mod")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, dies_half_way)

    assert target.read_bytes() == b"the good model"
    assert [path.name for path in tmp_path.iterdir()] == ["model.h5"]


def test_a_writer_gets_a_path_with_the_targets_extension(tmp_path: Path) -> None:
    seen = []
    atomic_write(tmp_path / "features.npy", lambda path: (seen.append(path), Path(path).write_bytes(b"x")))
    assert seen[0].endswith(".npy") and Path(seen[0]).parent == tmp_path and Path(seen[0]).name.startswith(".")


def test_a_write_survives_a_killed_process_as_the_old_or_the_new_file(tmp_path: Path) -> None:
    # The bytes are synced before the rename: a reader (or a crash) sees one whole file or the other.
    target = tmp_path / "run.json"
    write_json(target, {"status": "finished"})
    calls = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        calls.append(descriptor)
        real_fsync(descriptor)

    try:
        os.fsync = recording_fsync
        write_json(target, {"status": "stopped"})
    finally:
        os.fsync = real_fsync
    assert read_json(target) == {"status": "stopped"}
    assert len(calls) >= 2  # the file, then its folder


def test_json_helpers_and_cache_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "a.json", {"path": tmp_path})  # values JSON cannot hold are written as text
    assert read_json(tmp_path / "a.json") == {"path": str(tmp_path)}
    assert read_json(tmp_path / "missing.json", {"default": 1}) == {"default": 1}
    (tmp_path / "broken.json").write_text("{not json")
    assert read_json(tmp_path / "broken.json") is None
    assert cache_key("features", 224, "abc") == cache_key("features", 224, "abc") != cache_key("features", 96, "abc")
    monkeypatch.setenv("TL_CORE_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"


def test_a_model_write_killed_half_way_leaves_the_previous_file_and_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "model.h5"
    target.write_bytes(b"the good model")
    writer = textwrap.dedent(f"""
        import time
        from tl_core.files import atomic_write

        def half_a_model(path):
            with open(path, "wb") as stream:
                stream.write(b"half a mod")
                stream.flush()
                print("writing", flush=True)
                time.sleep(60)

        atomic_write({str(target)!r}, half_a_model)
    """)
    child = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"writing"
    finally:
        child.kill()  # SIGKILL: no finally block, no atexit, nothing of the writer runs any more
        child.wait(10)
        child.stdout.close()
    assert target.read_bytes() == b"the good model"
    left = [path.name for path in tmp_path.iterdir() if path.name != "model.h5"]
    assert len(left) == 1 and left[0].startswith(".model-partial-"), "only a cleanup after the fact can remove it"
    atomic_write(tmp_path / "metrics.json", "{}")  # the next write into the folder does
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json", "model.h5"]
    assert target.read_bytes() == b"the good model"


def test_a_temporary_file_of_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    seen = []

    def writer(path: str) -> None:
        Path(path).write_bytes(b"x")
        seen.append(remove_abandoned_partials(tmp_path))  # another writer in this folder meanwhile

    atomic_write(tmp_path / "a.npy", writer)
    assert seen == [[]] and [path.name for path in tmp_path.iterdir()] == ["a.npy"]
