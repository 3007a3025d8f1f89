"""Receive a folder the browser sends in a few large requests, and the upload limits.

Streamlit's own uploader sends one request per file and keeps every file in
the page's state, which stops scaling at a few thousand photos (see the
docs/benchmarks.md, uploading a folder). The app's folder uploader instead packs many
files into each request; this module is the receiving end. It knows nothing
about HTTP or Streamlit: the web route hands it request bodies.

One upload goes through these steps:

1. ``begin(files, total_bytes, largest_name, largest_bytes)``: the browser
   says what it is about to send. The limits are checked here, before the
   first byte is written, so a folder that is too big is refused at once.
2. ``receive_batch(body)``, any number of times: ``body`` is one line of JSON,
   ``{"files": [{"path": "train/cats/1.jpg", "size": 1234}, ...]}``, a newline,
   then the bytes of those files one after the other in the same order. Each
   path is checked (no ``..``, no absolute path, no control characters) and
   the running totals are held to the plan and the limits, whatever the
   browser declared.
3. ``finish(promote)`` when every planned file has arrived: the staging
   folder then becomes the dataset folder (``Workspace.finish_folder_upload``),
   under the upload's lock, so no batch can slip in between. A finished upload
   is closed for good: ``begin`` refuses it, and the page opens a new one.
   Or ``cancel()``, which removes everything received so far.

Files are written only inside the upload's staging folder and nothing from
an upload is executed or unpickled. An upload is found by its token, a
random string only the session that opened it knows; the registry holds
uploads weakly, so an upload disappears with the session that owns it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from tl_core.errors import DataError

MB = 1_000_000  # a megabyte: 10^6 bytes
MAX_FILES_VARIABLE = "TL_CORE_MAX_UPLOAD_FILES"
MAX_TOTAL_MB_VARIABLE = "TL_CORE_MAX_UPLOAD_MB"
MAX_FILE_MB_VARIABLE = "TL_CORE_MAX_FILE_MB"
# A batch the browser sends holds at most this many bytes, unless one file alone is larger.
BATCH_BYTES = 8_000_000  # 8 MB; sizes are in MB of 10^6 bytes and GB of 10^9 throughout
BATCH_FILES = 500
# Room for the manifest line on top of the files in a batch.
_MANIFEST_ALLOWANCE = 4_000_000


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload (a folder or a zip) may hold.

    Attributes:
        max_files: Files in the upload.
        max_total_bytes: Bytes of all files together (unpacked, for a zip).
        max_file_bytes: Bytes of the largest single file.
    """

    max_files: int = 200_000
    max_total_bytes: int = 4_000_000_000
    max_file_bytes: int = 256_000_000

    @classmethod
    def from_environment(cls) -> UploadLimits:
        """The defaults, each replaced by its environment variable where one is set.

        ``TL_CORE_MAX_UPLOAD_FILES`` (a count), ``TL_CORE_MAX_UPLOAD_MB`` and
        ``TL_CORE_MAX_FILE_MB`` (megabytes of 10^6 bytes). Read at every call, so a test or a
        user can change them without restarting Python.

        Raises:
            DataError: When a variable is not a positive number.
        """
        defaults = cls()
        return cls(
            max_files=_positive_from_environment(MAX_FILES_VARIABLE, defaults.max_files, 1),
            max_total_bytes=_positive_from_environment(MAX_TOTAL_MB_VARIABLE, defaults.max_total_bytes, MB),
            max_file_bytes=_positive_from_environment(MAX_FILE_MB_VARIABLE, defaults.max_file_bytes, MB),
        )

    @property
    def max_request_bytes(self) -> int:
        """The largest request body a batch can legitimately have."""
        return max(BATCH_BYTES, self.max_file_bytes) + _MANIFEST_ALLOWANCE

    def check(self, files: int, total_bytes: int, largest_name: str = "", largest_bytes: int = 0, what: str = "The upload") -> None:
        """Refuses an upload over a limit, with the number found, the limit and what to do.

        Raises:
            DataError: When ``files``, ``total_bytes`` or ``largest_bytes`` is over its limit.
        """
        remedy = "Give the dataset's local folder path instead (Folder on this computer), or raise the limit"
        if files > self.max_files:
            raise DataError(f"{what} holds {files:,} files while at most {self.max_files:,} are accepted. {remedy} with {MAX_FILES_VARIABLE}.")
        if total_bytes > self.max_total_bytes:
            raise DataError(
                f"{what} totals {format_bytes(total_bytes)} while at most {format_bytes(self.max_total_bytes)} are accepted. {remedy} with {MAX_TOTAL_MB_VARIABLE} (megabytes)."
            )
        if largest_bytes > self.max_file_bytes:
            raise DataError(
                f"'{largest_name}' is {format_bytes(largest_bytes)} while a single file may have at most {format_bytes(self.max_file_bytes)}: "
                f"it is unlikely to be a photo. Remove it from the folder, or raise the limit with {MAX_FILE_MB_VARIABLE} (megabytes)."
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _positive_from_environment(name: str, default: int, unit: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"{name}={text!r} is not a positive number. Set it to a number such as {default // unit}, or unset it for the default.")
    return int(value * unit)


def format_bytes(count: int) -> str:
    """``812 bytes``, ``14.0 kB``, ``3.4 MB``, ``1.2 GB``: kilo-, mega- and gigabytes of 10^3, 10^6 and 10^9 bytes, as everywhere in the app."""
    if count >= 1e9:
        return f"{count / 1e9:.1f} GB"
    if count >= MB:
        return f"{count / MB:.1f} MB"
    if count >= 1e3:
        return f"{count / 1e3:.1f} kB"
    return f"{count:,} bytes"


def checked_relative_path(name: str) -> PurePosixPath:
    """The path an uploaded or unpacked file gets inside its folder.

    Backslashes count as separators and ``.`` parts are dropped.

    Raises:
        DataError: For an absolute path, a drive letter, a ``..`` part, an empty
            name, a control character (such as a NUL byte) or a part longer
            than file systems allow.
    """
    cleaned = name.replace("\\", "/")
    if PurePosixPath(cleaned).is_absolute() or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise DataError(f"Refused '{name}': an absolute path in an upload could write outside the session folder. Upload a folder or a zip with relative paths.")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise DataError(f"Refused '{name}': a path with '..' could write outside the session folder. Zip the folder again from its parent.")
    if any(unicodedata.category(character) == "Cc" for character in cleaned):
        raise DataError(f"Refused {name!r}: the name holds a control character, which no folder of photos needs. Rename the file.")
    if any(len(part.encode("utf-8")) > 255 for part in parts):
        raise DataError(f"Refused '{name}': a name longer than 255 bytes cannot be saved on most disks. Rename the file.")
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class UploadProgress:
    """Where an upload stands, as the browser and the page show it."""

    status: str  # "waiting", "receiving", "finished", "cancelled" or "failed"
    files: int
    total_files: int
    bytes: int
    total_bytes: int
    seconds: float
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class FolderUpload:
    """One folder upload into ``staging``, opened by ``Workspace.open_folder_upload``.

    Thread-safe: the web server may hand it several batches at once.

    Attributes:
        token: The secret the browser names the upload by.
        staging: The folder being filled; it is emptied when a new upload begins.
        label: The dataset name the folder gets once finished.
        limits: The limits this upload is held to.
    """

    def __init__(self, staging: Path, label: str, limits: UploadLimits) -> None:
        self.token = secrets.token_urlsafe(24)
        self.staging = staging
        self.label = label
        self.limits = limits
        self._lock = threading.Lock()
        self._status = "waiting"
        self._message = ""
        self._planned_files = self._planned_bytes = 0
        self._files = self._bytes = 0
        self._started = time.monotonic()
        self._paths: set[PurePosixPath] = set()
        self._parents: set[PurePosixPath] = set()
        self._folders: set[Path] = set()
        self._tops: set[str] = set()  # the first part of every path: one name when the user chose one folder

    def begin(self, files: int, total_bytes: int, largest_name: str = "", largest_bytes: int = 0) -> UploadProgress:
        """Starts (or restarts) the upload of ``files`` files of ``total_bytes`` in all.

        Raises:
            DataError: When there is nothing to send, the plan is over a limit, or the upload
                has finished (its files are the dataset now; a new upload needs a new token).
        """
        if files <= 0:
            raise DataError("The chosen folder holds no files. Choose the folder that holds one sub-folder per class.")
        self.limits.check(files, total_bytes, largest_name, largest_bytes, what="The chosen folder")
        with self._lock:
            if self._status == "finished":
                raise DataError("This upload has finished and its files are the dataset now, so it cannot start again. Reload the page and choose the folder again.")
            self._clear_staging()
            self._status, self._message = "receiving", ""
            self._planned_files, self._planned_bytes = files, total_bytes
            self._files = self._bytes = 0
            self._paths.clear()
            self._parents.clear()
            self._tops.clear()
            self._started = time.monotonic()
            return self._progress()

    def receive_batch(self, body: bytes) -> UploadProgress:
        """Writes the files of one batch (manifest line, newline, bytes).

        Raises:
            DataError: When the upload is not receiving, the batch is malformed or
                truncated, a path is refused or repeated, the totals would pass the
                plan or the limits, or a file cannot be written. The upload then
                fails and what it had received is removed.
        """
        with self._lock:
            if self._status != "receiving":
                raise DataError(f"This upload is {self._status}, so no more files are taken. Choose the folder again.")
            try:
                entries, data = _parse_batch(body)
                self._check_batch(entries)
                offset = 0
                for relative, size in entries:
                    self._write(relative, data[offset : offset + size])
                    offset += size
            except DataError as error:
                self._fail(str(error))
                raise
            return self._progress()

    def finish(self, promote: Callable[[Path], object] | None = None) -> UploadProgress:
        """Checks that every planned file arrived, closes the upload and hands over its files.

        Args:
            promote: Called with the staging folder while the upload still holds its lock (no batch,
                begin or cancel can run meanwhile): moves the files to where they are used.

        Raises:
            DataError: When the upload is not receiving, files are missing, or ``promote`` cannot
                move them (the upload then fails and what it received is removed).
        """
        with self._lock:
            if self._status != "receiving":
                raise DataError(f"This upload is {self._status}; there is nothing to finish. Choose the folder again.")
            if (self._files, self._bytes) != (self._planned_files, self._planned_bytes):
                message = (
                    f"Only {self._files:,} of {self._planned_files:,} files ({format_bytes(self._bytes)} of {format_bytes(self._planned_bytes)}) arrived. "
                    "The connection may have dropped: choose the folder again."
                )
                self._fail(message)
                raise DataError(message)
            if promote is not None:
                try:
                    promote(self.staging)
                except OSError as error:
                    failure = write_error(self.label, error)
                    self._fail(str(failure))
                    raise failure from error
            self._status = "finished"
            return self._progress()

    def cancel(self) -> UploadProgress:
        """Stops taking files and removes what was received."""
        with self._lock:
            if self._status != "finished":
                self._status, self._message = "cancelled", "Upload cancelled; nothing from it was kept."
                self._clear_staging()
            return self._progress()

    def progress(self) -> UploadProgress:
        with self._lock:
            return self._progress()

    @property
    def chosen_folder(self) -> str:
        """The name of the folder the user chose, which the browser puts before every path ("" when the files do not share one)."""
        with self._lock:
            tops = set(self._tops)
        return next(iter(tops)) if len(tops) == 1 and "" not in tops else ""

    def _progress(self) -> UploadProgress:
        return UploadProgress(self._status, self._files, self._planned_files, self._bytes, self._planned_bytes, round(time.monotonic() - self._started, 3), self._message)

    def _check_batch(self, entries: list[tuple[PurePosixPath, int]]) -> None:
        files = self._files + len(entries)
        total = self._bytes + sum(size for _, size in entries)
        if files > self._planned_files or total > self._planned_bytes:
            raise DataError(
                f"The browser sent more than it announced ({files:,} files, {format_bytes(total)} against {self._planned_files:,} files, "
                f"{format_bytes(self._planned_bytes)}). Choose the folder again."
            )
        largest_relative, largest = max(entries, key=lambda entry: entry[1], default=(PurePosixPath("."), 0))
        self.limits.check(files, total, str(largest_relative), largest, what="The chosen folder")
        for relative, _ in entries:
            if relative in self._paths:
                raise DataError(f"'{relative}' was sent twice in one upload. Choose the folder again.")
            clash = relative if relative in self._parents else next((parent for parent in relative.parents if parent in self._paths), None)
            if clash is not None:
                raise DataError(
                    f"'{clash}' is both a file and a folder in this upload, which no disk can hold. "
                    "Rename the file or the folder (it may come from a case-insensitive disk or a merged copy) and choose the folder again."
                )
            self._paths.add(relative)
            self._parents.update(relative.parents)
            self._tops.add(relative.parts[0] if len(relative.parts) > 1 else "")

    def _write(self, relative: PurePosixPath, content: memoryview) -> None:
        destination = self.staging.joinpath(*relative.parts)
        try:
            if destination.parent not in self._folders:
                destination.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(destination.parent)
            with open(destination, "wb") as sink:
                sink.write(content)
        except OSError as error:
            raise write_error(str(relative), error) from error
        self._files += 1
        self._bytes += len(content)

    def _fail(self, message: str) -> None:
        self._status, self._message = "failed", message
        self._clear_staging()

    def _clear_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        self._folders.clear()


def write_error(name: str, error: OSError) -> DataError:
    """The message for a file that could not be saved: what the disk said, and what to do about that."""
    found = f"Could not save '{name}' in the session folder: {error.strerror or error}."
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        remedy = "Free some disk space (or set TMPDIR to a disk with room and restart the app), or give the dataset's local folder path instead."
    elif error.errno == errno.ENAMETOOLONG:
        remedy = (
            "Its path is longer than this disk allows (folders nested too deep, or a name over 255 bytes). "
            "Shorten the folder or file names, or move the class folders up, and upload again."
        )
    elif error.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        remedy = "A file and a folder of the same name are in the way of each other. Rename one of them and upload again."
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        remedy = "The session folder cannot be written to: set TMPDIR to a folder this user can write and restart the app."
    else:
        remedy = "Upload again; if it happens again, give the dataset's local folder path instead."
    return DataError(f"{found} {remedy}")


def _parse_batch(body: bytes) -> tuple[list[tuple[PurePosixPath, int]], memoryview]:
    """The (path, size) pairs of a batch and the bytes that follow its manifest line."""
    newline = body.find(b"\n", 0, _MANIFEST_ALLOWANCE)
    if newline < 0:
        raise DataError("A batch of the upload has no manifest line. Reload the page and choose the folder again.")
    try:
        manifest = json.loads(body[:newline].decode("utf-8"))
        entries = [(str(item["path"]), item["size"]) for item in manifest["files"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"A batch of the upload has an unreadable manifest ({error}). Reload the page and choose the folder again.") from error
    if any(not isinstance(size, int) or isinstance(size, bool) or size < 0 for _, size in entries):
        raise DataError("A batch of the upload gives a file size that is not a whole number of bytes. Reload the page and choose the folder again.")
    data = memoryview(body)[newline + 1 :]
    declared = sum(size for _, size in entries)
    if declared != len(data):
        raise DataError(f"A batch of the upload carries {len(data):,} bytes where its manifest declares {declared:,}: it was cut short. Choose the folder again.")
    return [(checked_relative_path(path), size) for path, size in entries], data


_REGISTRY: weakref.WeakValueDictionary[str, FolderUpload] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


def register(upload: FolderUpload) -> None:
    """Makes ``upload`` findable by its token (for as long as its owner keeps it)."""
    with _REGISTRY_LOCK:
        _REGISTRY[upload.token] = upload


def find_upload(token: str) -> FolderUpload:
    """The open upload with this token.

    Raises:
        DataError: When there is none (the page was reloaded or the session ended).
    """
    with _REGISTRY_LOCK:
        upload = _REGISTRY.get(token)
    if upload is None:
        raise DataError("This upload is no longer open: the page was reloaded or the session ended. Choose the folder again.")
    return upload
