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
or that unpacks to more than the configured limits (a "zip bomb"). Folder
uploads have limits too (``MAX_UPLOAD_FILES``, ``MAX_UPLOAD_BYTES``). Every
name and limit is checked before the first byte is written, and a dataset is
written into a staging folder that only replaces the previous upload of the
same name once it is complete, so a refused or failed upload (disk full)
leaves nothing half-written behind. Uploaded bytes are only ever written
to files: nothing from an upload is executed or unpickled.
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
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from tl_core.errors import DataError

WORKSPACE_PREFIX = "tl_core_session_"
RUNS_DIR_ENVIRONMENT_VARIABLE = "TL_CORE_RUNS_DIR"
STALE_AFTER_SECONDS = 24 * 3600
MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_ZIP_ENTRIES = 200_000
MAX_COMPRESSION_RATIO = 200
# The compression ratio is only judged for archives that unpack to more than this:
# small archives of flat test images compress very well and are harmless.
RATIO_CHECKED_ABOVE_BYTES = 100 * 1024**2
MAX_UPLOAD_FILES = 200_000
MAX_UPLOAD_BYTES = 4 * 1024**3


class UploadedFile(Protocol):
    """What Streamlit's uploader returns: a name (relative path in directory mode) and bytes."""

    name: str

    def getvalue(self) -> bytes: ...


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

    def save_uploaded_files(self, files: list[UploadedFile], label: str = "upload") -> Path:
        """Writes files from a folder upload, keeping their relative paths.

        Returns:
            The folder that now holds the uploaded tree.

        Raises:
            DataError: When nothing was uploaded, there are more files or bytes than
                the limits allow, a name tries to leave the folder, or the disk is
                full (nothing is left half-written then).
        """
        if not files:
            raise DataError("No files were uploaded. Choose a folder that holds one sub-folder per class.")
        _check_upload_limits(files)
        relatives = [_checked_relative_path(uploaded.name) for uploaded in files]
        with self._staging(label) as staging:
            for uploaded, relative in zip(files, relatives, strict=True):
                destination = staging.joinpath(*relative.parts)
                try:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(uploaded.getvalue())
                except OSError as error:
                    raise _write_error(uploaded.name, error) from error
        return self.data_dir(label)

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
            _check_zip_limits(entries)
            planned = [(entry, _checked_relative_path(entry.filename)) for entry in entries]
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
            final = self.data_dir(label)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _checked_relative_path(name: str) -> PurePosixPath:
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if path.is_absolute() or cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise DataError(f"Refused '{name}': an absolute path in an upload could write outside the session folder. Upload a folder or a zip with relative paths.")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts or ".." in parts:
        raise DataError(f"Refused '{name}': a path with '..' could write outside the session folder. Zip the folder again from its parent.")
    return PurePosixPath(*parts)


def _check_upload_limits(files: list[UploadedFile]) -> None:
    if len(files) > MAX_UPLOAD_FILES:
        raise DataError(
            f"The upload holds {len(files):,} files while at most {MAX_UPLOAD_FILES:,} are accepted. "
            "Give the dataset's local folder path instead of uploading it."
        )
    total = sum(_upload_size(uploaded) for uploaded in files)
    if total > MAX_UPLOAD_BYTES:
        raise DataError(
            f"The uploaded files total {_format_bytes(total)} while at most {_format_bytes(MAX_UPLOAD_BYTES)} are accepted. "
            "Give the dataset's local folder path instead of uploading it."
        )


def _upload_size(uploaded: UploadedFile) -> int:
    """The upload's size: Streamlit's ``size`` when it has one, else the length of its bytes."""
    size = getattr(uploaded, "size", None)
    return int(size) if isinstance(size, int) else len(uploaded.getvalue())


def _check_zip_limits(entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_ZIP_ENTRIES:
        raise DataError(f"The zip holds {len(entries):,} files while at most {MAX_ZIP_ENTRIES:,} are accepted. Split the dataset, or give its local folder path instead.")
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise DataError(
            f"The zip would unpack to {_format_bytes(unpacked)} while at most {_format_bytes(MAX_UNPACKED_BYTES)} are accepted. "
            "Give the dataset's local folder path instead of uploading it."
        )
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
        raise _write_error(entry.filename, error) from error


def _write_error(name: str, error: OSError) -> DataError:
    return DataError(
        f"Could not save '{name}' in the session folder: {error.strerror or error}. "
        "Free some disk space (or set TMPDIR to a disk with room and restart the app), or give the dataset's local folder path instead."
    )


def _format_bytes(count: int) -> str:
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GB"
    if count >= 1024**2:
        return f"{count / 1024**2:.1f} MB"
    return f"{count:,} bytes"


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
