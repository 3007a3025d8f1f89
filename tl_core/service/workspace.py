"""A per-session working folder for uploaded images and unpacked zips, and where runs are kept.

Each browser session gets its own folder under the system's temporary
directory, so two sessions never see or overwrite each other's files. The
folder is deleted when the session's state is dropped (the browser tab
closed and Streamlit forgot the session) or the server stops, and folders
of sessions that vanished without that are removed after a day.

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
import tempfile
import time
import uuid
import weakref
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tl_core.errors import DataError
from tl_core.service.upload import FolderUpload, UploadLimits, checked_relative_path, register, write_error

WORKSPACE_PREFIX = "tl_core_session_"
RUNS_DIR_ENVIRONMENT_VARIABLE = "TL_CORE_RUNS_DIR"
STALE_AFTER_SECONDS = 24 * 3600
MAX_COMPRESSION_RATIO = 200
# The compression ratio is only judged for archives that unpack to more than this:
# small archives of flat test images compress very well and are harmless.
RATIO_CHECKED_ABOVE_BYTES = 100 * 1024**2

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

    @classmethod
    def create(cls, base: Path | None = None, runs_root: Path | None = None) -> Workspace:
        base = Path(base) if base else Path(tempfile.gettempdir())
        remove_stale_workspaces(base)
        root = base / f"{WORKSPACE_PREFIX}{uuid.uuid4().hex[:12]}"
        (root / "data").mkdir(parents=True)
        workspace = cls(root, Path(runs_root) if runs_root else default_runs_dir())
        # Remove the uploads when the session's state is garbage-collected, or at the latest when the server exits.
        weakref.finalize(workspace, shutil.rmtree, root, ignore_errors=True)
        return workspace

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

        Raises:
            DataError: When the upload is not complete (see ``FolderUpload.finish``).
        """
        upload.finish()
        return self._promote(upload.staging, upload.label)

    def unpack_zip(self, stream: BinaryIO | str | os.PathLike, label: str = "zip") -> Path:
        """Unpacks a zip into a fresh folder after checking every entry.

        Raises:
            DataError: When the file is not a zip, an entry would be written outside
                the folder, is encrypted or damaged, the archive unpacks to more than
                the limits allow, or the disk is full (nothing is left half-written then).
        """
        try:
            archive = zipfile.ZipFile(stream)
        except zipfile.BadZipFile as error:
            raise DataError(f"The uploaded file is not a readable .zip archive ({error}). Zip the folder again, or upload the folder itself.") from error
        with archive:
            entries = [entry for entry in archive.infolist() if not entry.is_dir()]
            _check_zip_limits(entries, UploadLimits.from_environment())
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
        return final

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


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


def remove_stale_workspaces(base: Path, older_than_seconds: float = STALE_AFTER_SECONDS) -> None:
    """Deletes session folders nobody touched for a day (sessions whose browser tab went away)."""
    cutoff = time.time() - older_than_seconds
    for folder in base.glob(f"{WORKSPACE_PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
