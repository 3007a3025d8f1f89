"""Files on disk: the one way this package writes a file, and where its cache lives.

Every file the package writes (model files, reports, caches, the label
decisions) goes through ``atomic_write``: the bytes go to a temporary file in
the same folder, are flushed to the disk (``fsync``), and only then is the
file renamed into place, after which the folder itself is synced so the
rename survives a power cut. A reader therefore sees the old file or the new
one, never half of one; a failure (disk full, an exception) leaves the
previous file as it was and no partial file behind. A process killed while
writing cannot clean up after itself: its temporary file carries the
machine and the process in its name, and the next write into that folder
removes it once that process is gone (or after a day, for a file of another
machine sharing the folder).

``FileLock`` is the one advisory lock: the label decisions hold it around
their read-modify-write, and each live session holds one on its folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_DIR_ENVIRONMENT_VARIABLE = "TL_CORE_CACHE_DIR"
FILE_MODE = 0o644  # ordinary files: the owner writes, everyone who can see the folder reads
_PARTIAL = "-partial-"
# Which machine wrote a temporary file: six hex digits, then the process id (see ``_temporary_beside``).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
# A temporary file of another machine (a shared network folder) is left alone for this long.
ABANDONED_AFTER_SECONDS = 24 * 3600


def atomic_write(target: str | os.PathLike, data: bytes | str | Callable[[str], None], mode: int = FILE_MODE) -> Path:
    """Writes ``target`` all at once: under a temporary name first, synced, then renamed into place.

    Args:
        target: The file to write (its folder must exist).
        data: The bytes or text to write, or a function that writes the file at the path it is given
            (for writers that want a path, such as ``keras.Model.save`` or ``numpy.save``; the
            temporary path keeps the target's extension, which such writers look at).
        mode: The file's permissions.

    Returns:
        The target path.

    Raises:
        OSError: When the folder cannot be written; nothing is left behind then.
    """
    target = Path(target)
    remove_abandoned_partials(target.parent)
    with _temporary_beside(target) as temporary:
        if callable(data):
            data(temporary)
        else:
            with open(temporary, "wb") as stream:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        _sync_file(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    sync_folder(target.parent)
    return target


def write_json(target: str | os.PathLike, value: object, indent: int | None = 2) -> Path:
    """``value`` as JSON in ``target``, written with ``atomic_write`` (values JSON cannot hold are written as text)."""
    return atomic_write(target, json.dumps(value, indent=indent, default=str))


def read_json(path: str | os.PathLike, default: object = None) -> object:
    """The JSON in ``path``, or ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


@contextlib.contextmanager
def _temporary_beside(target: Path) -> Iterator[str]:
    """A fresh hidden file name next to ``target`` (same folder, same extension); removed afterwards if still there."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}{_PARTIAL}{_HOST}{os.getpid()}-", suffix=target.suffix)
    os.close(handle)
    os.unlink(temporary)  # writers such as keras.Model.save want to create the file themselves
    try:
        yield temporary
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def remove_abandoned_partials(folder: str | os.PathLike, older_than_seconds: float = ABANDONED_AFTER_SECONDS) -> list[Path]:
    """Removes the temporary files that writers killed mid-write left in ``folder``; returns them.

    A temporary file is abandoned when the process that wrote it, on this machine, is gone, or
    when it was last written more than ``older_than_seconds`` ago (a file of another machine).
    """
    removed = []
    try:
        with os.scandir(folder) as entries:
            candidates = [entry for entry in entries if entry.name.startswith(".") and _PARTIAL in entry.name]
    except OSError:
        return removed
    for entry in candidates:
        writer = entry.name[entry.name.rfind(_PARTIAL) + len(_PARTIAL) :].split("-", 1)[0]
        host, pid = writer[:6], writer[6:]
        try:
            abandoned = (host == _HOST and pid.isdigit() and not _process_alive(int(pid))) or entry.stat(follow_symlinks=False).st_mtime < time.time() - older_than_seconds
            if abandoned:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _process_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # no cheap, safe check there: such a file goes by age alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but another user's
    return True


class FileLock:
    """An advisory lock on ``path`` (created if missing): ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows.

    Only processes that take the same lock are held back; the lock goes with the process if it dies.
    Use it as a context manager (waits for the lock), or call ``acquire(blocking=False)`` to try once.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Takes the lock; with ``blocking=False`` returns False at once when someone else holds it.

        Raises:
            OSError: When the lock file cannot be created or opened.
        """
        if self._descriptor is not None:
            return True
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except PermissionError:
            descriptor = os.open(self.path, os.O_RDONLY)  # a lock file of a colleague: reading is enough to lock it
        try:
            taken = _lock(descriptor, blocking)
        except BaseException:
            os.close(descriptor)
            raise
        if not taken:
            os.close(descriptor)
            return False
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing the file drops the lock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exception) -> None:
        self.release()


def _lock(descriptor: int, blocking: bool) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        while True:
            try:
                msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                time.sleep(0.05)
    import fcntl

    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _sync_file(path: str) -> None:
    if os.path.isdir(path):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: str | os.PathLike) -> None:
    """Makes a rename in ``folder`` durable (not possible, and not needed, on Windows)."""
    if os.name == "nt":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems (network shares) cannot sync a folder; the rename itself has happened
    finally:
        os.close(descriptor)


def default_cache_dir() -> Path:
    """``$TL_CORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/tl_core``, else ``~/.cache/tl_core``."""
    if os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE):
        return Path(os.environ[CACHE_DIR_ENVIRONMENT_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tl_core"


def cache_key(*parts: object) -> str:
    """A short stable hash of the given parts."""
    return hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()[:20]
