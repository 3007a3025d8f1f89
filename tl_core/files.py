"""Files on disk: the one way this package writes a file, and where its cache lives.

Every file the package writes (model files, reports, caches, the label
decisions) goes through ``atomic_write``: the bytes go to a temporary file in
the same folder, are flushed to the disk (``fsync``), and only then is the
file renamed into place, after which the folder itself is synced so the
rename survives a power cut. A reader therefore sees the old file or the new
one, never half of one; a failure (disk full, a killed process) leaves the
previous file as it was and no partial file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_DIR_ENVIRONMENT_VARIABLE = "TL_CORE_CACHE_DIR"
FILE_MODE = 0o644  # ordinary files: the owner writes, everyone who can see the folder reads


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
    with _temporary_beside(target) as temporary:
        if callable(data):
            data(temporary)
        else:
            with open(temporary, "wb") as stream:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        _sync_file(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    _sync_folder(target.parent)
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
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-partial-", suffix=target.suffix)
    os.close(handle)
    os.unlink(temporary)  # writers such as keras.Model.save want to create the file themselves
    try:
        yield temporary
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _sync_file(path: str) -> None:
    if os.path.isdir(path):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
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
