"""A per-session working folder for uploaded images and unpacked zips, and where runs are kept.

Each browser session gets its own folder under the system's temporary
directory, so two sessions never see or overwrite each other's files. The
folder is deleted when the session's state is dropped (the browser tab
closed and Streamlit forgot the session) or when the server stops cleanly
(``remove_session_folders``, called as the server shuts down). A live
session holds a lock on its folder (``.alive``) and touches it on every
rerun; a new session sweeps away only folders whose lock is free (their
server is gone) and that nobody touched for a day, so a session left open
over a weekend keeps its data.

Trained runs are *not* temporary: they go to the runs folder
(``$TL_CORE_RUNS_DIR``, default ``~/tl_core_runs``), one uniquely named
folder per run, so a model survives the session that trained it.

Uploads are written only inside the folder: a file name with ``..`` or an
absolute path is refused, and so is a zip whose entries would land outside,
or that unpacks to more than the limits allow (a "zip bomb"). Folder uploads
and zips share the limits of ``tl_core.service.upload.UploadLimits`` (files, total
size, largest file; each configurable by an environment variable). A zip's
names and limits are checked before the first byte is written; a folder
upload declares its totals before it sends anything and is held to them.
A dataset is written into a staging folder that only replaces the previous
upload of the same name once it is complete, so a refused, cancelled or
failed upload (disk full) leaves nothing half-written behind. Uploaded bytes
are only ever written to files: nothing from an upload is executed or unpickled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tl_core.errors import DataError
from tl_core.files import FileLock, atomic_write, sync_folder
from tl_core.service.upload import FolderUpload, UploadLimits, checked_relative_path, register, write_error

WORKSPACE_PREFIX = "tl_core_session_"
RUNS_DIR_ENVIRONMENT_VARIABLE = "TL_CORE_RUNS_DIR"
STALE_AFTER_SECONDS = 24 * 3600
MAX_COMPRESSION_RATIO = 200
# The compression ratio is only judged for archives that unpack to more than this:
# small archives of flat test images compress very well and are harmless.
RATIO_CHECKED_ABOVE_BYTES = 100_000_000  # 100 MB
ALIVE_FILE = ".alive"  # locked by the live session that owns the folder, touched on every rerun
# What removes each live session's folder; the server calls them all when it stops.
_REMOVERS: set[weakref.finalize] = set()
_REMOVERS_LOCK = threading.Lock()


def default_runs_dir() -> Path:
    """``$TL_CORE_RUNS_DIR``, else ``~/tl_core_runs``."""
    return Path(os.environ.get(RUNS_DIR_ENVIRONMENT_VARIABLE) or Path.home() / "tl_core_runs").expanduser()


@dataclass
class Workspace:
    """A folder owned by one session.

    Attributes:
        root: The session's temporary folder; ``data/`` holds its datasets.
        runs_root: Where this session's runs are kept (shared, persistent; names never collide).
    """

    root: Path
    runs_root: Path
    _alive: FileLock | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, base: Path | None = None, runs_root: Path | None = None) -> Workspace:
        base = Path(base) if base else Path(tempfile.gettempdir())
        remove_stale_workspaces(base)
        root = base / f"{WORKSPACE_PREFIX}{uuid.uuid4().hex[:12]}"
        (root / "data").mkdir(parents=True)
        alive = FileLock(root / ALIVE_FILE)
        alive.acquire(blocking=False)  # a fresh folder: nobody else can hold it
        workspace = cls(root, Path(runs_root) if runs_root else default_runs_dir(), alive)
        # Remove the uploads when the session's state is garbage-collected, when the server stops
        # (remove_session_folders), or at the latest when the Python process exits.
        remover = weakref.finalize(workspace, _remove_folder, root, alive)
        with _REMOVERS_LOCK:
            _REMOVERS.difference_update([done for done in _REMOVERS if not done.alive])
            _REMOVERS.add(remover)
        return workspace

    def touch(self) -> None:
        """Marks the folder as in use now (every rerun of the session's page calls this)."""
        try:
            os.utime(self.root / ALIVE_FILE)
        except OSError:
            pass  # the folder went away (cleaned up by hand): the next upload says so

    def new_run_dir(self, label: str = "run") -> Path:
        """A new, not yet existing run folder: time stamp, label and a random suffix (unique across sessions)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.runs_root / f"{stamp}-{_safe_component(label)}-{uuid.uuid4().hex[:6]}"

    def data_dir(self, label: str) -> Path:
        """Where the dataset uploaded under ``label`` lives."""
        return self.root / "data" / _safe_component(label)

    def fresh_data_dir(self, label: str) -> Path:
        """An empty folder for a new dataset (an earlier upload with the same label is replaced)."""
        folder = self.data_dir(label)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def open_folder_upload(self, label: str = "folder_upload", limits: UploadLimits | None = None) -> FolderUpload:
        """A new folder upload that the browser can send files to (by its token).

        The session keeps the returned object; the upload lives as long as it does.
        ``finish_folder_upload`` turns it into the dataset folder ``data_dir(label)``.
        """
        staging = self.root / "data" / f".staging-{uuid.uuid4().hex[:8]}"
        upload = FolderUpload(staging, label, limits or UploadLimits.from_environment())
        weakref.finalize(upload, shutil.rmtree, staging, ignore_errors=True)
        register(upload)
        return upload

    def finish_folder_upload(self, upload: FolderUpload) -> Path:
        """Closes a complete upload and makes its files the dataset ``data_dir(upload.label)``.

        The upload is checked and moved into place while it holds its lock, so no batch can
        arrive in between, and a finished upload can neither be reopened nor moved twice.

        Returns:
            The folder the user chose, under its own name (``data_dir(label)/<name>``), so the
            dataset, the History and ``run.json`` call it what the user calls it; the whole
            upload's folder when the files share no folder.

        Raises:
            DataError: When the upload is not complete or not receiving (see ``FolderUpload.finish``).
        """
        upload.finish(promote=lambda staging: self._promote(staging, upload.label))
        chosen = upload.chosen_folder
        return self.data_dir(upload.label) / chosen if chosen else self.data_dir(upload.label)

    def save_files(self, label: str, files: list[tuple[str, bytes]]) -> list[Path]:
        """Saves files the browser sent (name, bytes) in a fresh folder ``data_dir(label)``, in order.

        Each file keeps only a cleaned form of its base name, after its position (``001_cat.jpg``):
        a name from the browser never chooses the folder, and a name the disk cannot hold (a NUL
        byte, a control character, over 255 bytes) is shortened or cleaned rather than refused.

        Raises:
            DataError: When a file cannot be written (the message says why and what to do).
        """
        folder = self.fresh_data_dir(label)
        paths = []
        for number, (name, data) in enumerate(files, start=1):
            path = folder / f"{number:03d}_{safe_file_name(name)}"
            try:
                atomic_write(path, data)
            except OSError as error:
                raise write_error(name, error) from error
            paths.append(path)
        return paths

    def unpack_zip(self, stream: BinaryIO | str | os.PathLike, label: str = "zip") -> Path:
        """Unpacks a zip into a fresh folder after checking every entry.

        ``stream`` is read where it is (the uploaded file itself, or a path): it is never copied into
        memory. The number of entries the archive declares is checked before its index is read.

        Raises:
            DataError: When the file is not a zip, holds more entries than the limits allow, an
                entry would be written outside the folder, is encrypted or damaged, the archive
                unpacks to more than the limits allow, or the disk is full (nothing is left
                half-written then).
        """
        with contextlib.ExitStack() as closing:
            if isinstance(stream, (str, os.PathLike)):
                stream = closing.enter_context(open(stream, "rb"))
            return self._unpack_zip(stream, label)

    def _unpack_zip(self, stream: BinaryIO, label: str) -> Path:
        limits = UploadLimits.from_environment()
        declared = _declared_zip_entries(stream)
        if declared is not None and declared > limits.max_files:
            limits.check(declared, 0, what="The zip")
        try:
            archive = zipfile.ZipFile(stream)
        except zipfile.BadZipFile as error:
            raise DataError(f"The uploaded file is not a readable .zip archive ({error}). Zip the folder again, or upload the folder itself.") from error
        with archive:
            entries = [entry for entry in archive.infolist() if not entry.is_dir()]
            _check_zip_limits(entries, limits)
            planned = [(entry, checked_relative_path(entry.filename)) for entry in entries]
            _check_not_encrypted(entries)
            with self._staging(label) as staging:
                for entry, relative in planned:
                    if relative.parts[0] == "__MACOSX":
                        continue  # resource forks macOS adds to zips: never images
                    _unpack_entry(archive, entry, staging.joinpath(*relative.parts))
        return self.data_dir(label)

    @contextlib.contextmanager
    def _staging(self, label: str) -> Iterator[Path]:
        """A hidden folder to write a dataset into; it becomes ``data/<label>`` only when complete."""
        staging = self.root / "data" / f".staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            yield staging
            self._promote(staging, label)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _promote(self, staging: Path, label: str) -> Path:
        """Moves a complete staging folder to ``data/<label>``, replacing an earlier dataset of that name."""
        final = self.data_dir(label)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        sync_folder(final.parent)
        return final

    def cleanup(self) -> None:
        _remove_folder(self.root, self._alive)


def _remove_folder(root: Path, alive: FileLock | None) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if alive is not None:
        alive.release()


def is_in_session_folder(path: str | os.PathLike, base: Path | None = None) -> bool:
    """Whether ``path`` (resolved) lies in a session folder of this app under ``base`` (the temporary folder by default)."""
    try:
        parts = Path(path).resolve().relative_to(Path(base or tempfile.gettempdir()).resolve()).parts
    except (ValueError, OSError, RuntimeError):
        return False
    return bool(parts) and parts[0].startswith(WORKSPACE_PREFIX)


def remove_session_folders() -> int:
    """Removes the folder of every session of this process, live or closed (the server calls it as it stops); returns how many."""
    with _REMOVERS_LOCK:
        removers = [remover for remover in _REMOVERS if remover.alive]
        _REMOVERS.clear()
    for remover in removers:
        remover()
    return len(removers)


def _declared_zip_entries(stream: BinaryIO) -> int | None:
    """The number of entries a zip's end record declares, read from the archive's last bytes only.

    None when there is no end record (``zipfile`` then says what is wrong) or the stream cannot seek.
    """
    try:
        size = stream.seek(0, os.SEEK_END)
        tail_size = min(size, 22 + 65535 + 20)  # the end record, the longest comment, the zip64 locator
        stream.seek(size - tail_size)
        tail = stream.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        (entries,) = struct.unpack_from("<H", tail, at + 10)
        if entries == 0xFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":  # zip64: the count is in its own record
            (record_offset,) = struct.unpack_from("<Q", tail, at - 20 + 8)
            stream.seek(record_offset)
            record = stream.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                (entries,) = struct.unpack_from("<Q", record, 32)
        return entries
    except (OSError, ValueError, struct.error):
        return None
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.seek(0)


def _check_zip_limits(entries: list[zipfile.ZipInfo], limits: UploadLimits) -> None:
    largest = max(entries, key=lambda entry: entry.file_size, default=None)
    unpacked = sum(entry.file_size for entry in entries)
    limits.check(len(entries), unpacked, largest.filename if largest else "", largest.file_size if largest else 0, what="The zip")
    packed = sum(entry.compress_size for entry in entries)
    if packed and unpacked / packed > MAX_COMPRESSION_RATIO and unpacked > RATIO_CHECKED_ABOVE_BYTES:
        raise DataError(
            f"The zip unpacks to {unpacked / packed:.0f} times its size (over {MAX_COMPRESSION_RATIO}x): that is a zip bomb, not a folder of photos. "
            "Upload the real dataset."
        )


def _check_not_encrypted(entries: list[zipfile.ZipInfo]) -> None:
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise DataError(f"The zip entry '{entry.filename}' is encrypted, while the app can only unpack zips without a password. Zip the folder again without a password.")


def _unpack_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, destination: Path) -> None:
    """Copies one entry's bytes to ``destination`` (a plain file; nothing in it is run)."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(entry) as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as error:
        raise DataError(f"The zip entry '{entry.filename}' cannot be unpacked ({error}). Zip the folder again, or upload the folder itself.") from error
    except OSError as error:
        raise write_error(entry.filename, error) from error


def _safe_component(label: str) -> str:
    cleaned = "".join(character if character.isalnum() or character in "-_." else "_" for character in label).strip("._")
    return cleaned[:60] or "data"


def safe_file_name(name: str, max_bytes: int = 120) -> str:
    """A base name any disk can hold: no folder part, no control character, at most ``max_bytes`` bytes, the extension kept."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join("_" if ord(character) < 32 or ord(character) == 127 else character for character in base).strip().lstrip(".")
    stem, dot, extension = base.rpartition(".")
    if not dot or len(extension.encode("utf-8", errors="replace")) > 10:
        stem, extension = base, ""
    suffix = f".{extension}" if extension else ""
    budget = max_bytes - len(suffix.encode("utf-8", errors="replace"))
    stem = stem.encode("utf-8", errors="replace")[:budget].decode("utf-8", errors="ignore")
    return (stem or "image") + suffix


def shown_name(name: str) -> str:
    """A file name from the browser as a page shows it: the base name, control characters written out (``a\\x00b.jpg``)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "image"
    return "".join(character.encode("unicode_escape").decode("ascii") if ord(character) < 32 or ord(character) == 127 else character for character in base)


def remove_stale_workspaces(base: Path, older_than_seconds: float = STALE_AFTER_SECONDS) -> None:
    """Deletes the session folders of sessions that are gone: the folder's lock is free and nobody touched it for a day.

    A live session holds its folder's lock however long it has been idle, so its data is never swept.
    """
    cutoff = time.time() - older_than_seconds
    for folder in base.glob(f"{WORKSPACE_PREFIX}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or _last_touched(folder) >= cutoff:
                continue
            lock = FileLock(folder / ALIVE_FILE)
            if not lock.acquire(blocking=False):
                continue  # a live session (of this server or another one) owns it
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
        except OSError:
            continue


def _last_touched(folder: Path) -> float:
    try:
        return max(folder.stat().st_mtime, (folder / ALIVE_FILE).stat().st_mtime)
    except FileNotFoundError:
        return folder.stat().st_mtime
