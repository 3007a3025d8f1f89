"""Decoded-image cache: every image is decoded and resized once per image size.

Decoded pixels are kept as one ``uint8`` array per (file list, image size) in
``<cache dir>/images/``. A later epoch, run or process reads that array
instead of decoding JPEGs again: fully into memory when it fits the memory
budget, otherwise memory-mapped from disk so a large dataset never has to
fit in RAM. Files are written under a temporary name and renamed, so an
interrupted run never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl_core.data.images import DEEP_COLOUR_MODES, load_image
from tl_core.data.records import ImageRecord, SkippedFile, files_fingerprint
from tl_core.events import Interrupted, StopRequest
from tl_core.files import atomic_write, cache_key, default_cache_dir

DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class DecodedImages:
    """Pixels of a list of images, row ``i`` for ``records[i]``.

    Attributes:
        pixels: ``uint8`` array ``(n, size, size, 3)``, in memory or memory-mapped.
        row_of: Row index of each image path.
        failed: Images that could not be decoded (their rows are zeros; drop them).
        from_cache: True when nothing had to be decoded.
        in_memory: True when the pixels are held in RAM rather than memory-mapped.
        key: The cache key (also keys the feature cache).
    """

    pixels: np.ndarray
    row_of: dict[str, int]
    failed: list[SkippedFile]
    from_cache: bool
    in_memory: bool
    key: str

    def rows(self, records: Sequence[ImageRecord]) -> np.ndarray:
        """Row indices of ``records`` in ``pixels``."""
        return np.array([self.row_of[record.path] for record in records], dtype=np.int64)


def decode_images(
    records: Sequence[ImageRecord],
    size: int,
    cache_dir: Path | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    on_progress: Callable[[int, int], None] | None = None,
    stop: StopRequest | None = None,
    workers: int | None = None,
    on_chunk: Callable[[int, int, np.ndarray], None] | None = None,
    chunk_rows: int = 64,
    centre_crop: bool = False,
) -> DecodedImages:
    """Decodes and resizes every image once, reusing the on-disk cache when it is current.

    Args:
        records: The images, in a fixed order (a dataset's ``records``).
        size: Side of the square images in pixels.
        cache_dir: Root of the cache; ``default_cache_dir()`` when None.
        memory_budget_bytes: Pixels up to this size are loaded into RAM; larger
            arrays are memory-mapped from disk.
        on_progress: Called with (images done, total) while decoding.
        stop: Checked between images; when set, decoding ends with ``Interrupted``.
        workers: Decoding threads (Pillow releases the GIL while decoding).
        on_chunk: Called in row order with ``(start, stop, pixels)`` as soon as rows
            ``start:stop`` (``chunk_rows`` at a time) are decoded, while the threads go
            on decoding later rows: a caller can run a model on the first images
            while the rest are still being read. Not called on a cache hit.
        chunk_rows: Rows per ``on_chunk`` call.
        centre_crop: Keep the middle of each picture (``load_image``'s ``centre_crop``); cached apart.

    Returns:
        The pixels and the list of files that failed to decode.
    """
    key = decoded_images_key(records, size, centre_crop)
    folder, array_path, meta_path = _image_cache_paths(cache_dir, key)
    row_of = {record.path: index for index, record in enumerate(records)}
    total = len(records)
    _wait_for_writing(array_path)
    if array_path.exists() and meta_path.exists():
        failed = [SkippedFile(**item) for item in json.loads(meta_path.read_text())["failed"]]
        pixels, in_memory = _open_array(array_path, memory_budget_bytes)
        if on_progress:
            on_progress(total, total)
        return DecodedImages(pixels, row_of, failed, from_cache=True, in_memory=in_memory, key=key)

    folder.mkdir(parents=True, exist_ok=True)
    shape = (total, size, size, 3)
    if math.prod(shape) <= memory_budget_bytes:
        # Decoded into memory and used from there; the cache file is written by a thread meanwhile.
        pixels = np.zeros(shape, dtype=np.uint8)
        failed = _decode_into(pixels, records, size, on_progress, stop, workers, on_chunk, chunk_rows, centre_crop)
        pixels.flags.writeable = False
        _write_in_background(array_path, lambda: _save_cache_entry(pixels, failed, array_path, meta_path))
        return DecodedImages(pixels, row_of, failed, from_cache=False, in_memory=True, key=key)
    # Larger than the budget: decoded straight into a memory-mapped file, which becomes the cache entry.
    failures: list[SkippedFile] = []

    def decode_to_file(temporary: str) -> None:
        target = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        failures.extend(_decode_into(target, records, size, on_progress, stop, workers, on_chunk, chunk_rows, centre_crop))
        target.flush()
        del target

    atomic_write(array_path, decode_to_file)
    _write_meta(meta_path, size, total, failures)
    pixels, in_memory = _open_array(array_path, memory_budget_bytes)
    return DecodedImages(pixels, row_of, failures, from_cache=False, in_memory=in_memory, key=key)


def store_decoded_images(
    records: Sequence[ImageRecord], size: int, pixels: np.ndarray, failed: list[SkippedFile], cache_dir: Path | None = None, centre_crop: bool = False
) -> DecodedImages:
    """Decoded pixels assembled elsewhere (partly from an earlier run's entry) as the cache entry of ``records``.

    The entry is written by a thread, as a first decode's is; the returned images are used from memory meanwhile.
    """
    key = decoded_images_key(records, size, centre_crop)
    folder, array_path, meta_path = _image_cache_paths(cache_dir, key)
    folder.mkdir(parents=True, exist_ok=True)
    pixels.flags.writeable = False
    if not array_path.exists():
        _write_in_background(array_path, lambda: _save_cache_entry(pixels, failed, array_path, meta_path))
    row_of = {record.path: index for index, record in enumerate(records)}
    return DecodedImages(pixels, row_of, list(failed), from_cache=False, in_memory=True, key=key)


def decoded_images_path(key: str, cache_dir: Path | None = None) -> Path:
    """The array file of the decoded-image cache entry ``key`` (it may not exist)."""
    _, array_path, _ = _image_cache_paths(cache_dir, key)
    _wait_for_writing(array_path)
    return array_path


_writing: dict[Path, threading.Thread] = {}
_writing_lock = threading.Lock()


def _write_in_background(array_path: Path, write: Callable[[], None]) -> None:
    """Runs ``write`` in a thread; Python waits for it before exiting, and ``decode_images`` before reading the entry."""
    thread = threading.Thread(target=write, name=f"tl_core cache {array_path.name}", daemon=False)
    with _writing_lock:
        _writing[array_path] = thread
    thread.start()


def _wait_for_writing(array_path: Path) -> None:
    with _writing_lock:
        thread = _writing.pop(array_path, None)
    if thread is not None:
        thread.join()


def _save_cache_entry(pixels: np.ndarray, failed: list[SkippedFile], array_path: Path, meta_path: Path) -> None:
    """Writes the array, then its description; a failure (a full disk) only loses the cache entry."""
    try:
        atomic_write(array_path, lambda temporary: np.save(temporary, pixels))
        _write_meta(meta_path, pixels.shape[1], len(pixels), failed)
    except OSError:
        return


def _write_meta(meta_path: Path, size: int, count: int, failed: list[SkippedFile]) -> None:
    atomic_write(meta_path, json.dumps({"size": size, "count": count, "failed": [vars(item) for item in failed], "created": time.time()}))


def decoded_images_key(records: Sequence[ImageRecord], size: int, centre_crop: bool = False) -> str:
    """The cache key of these images decoded at this size, whole or their middles (it also keys their features); labels play no part."""
    framing = ("centre",) if centre_crop else ()  # whole images keep the keys they had before centre crops
    # Sets with 16-bit colour were read at 8 bits before ``deep_colour``; the others keep their keys.
    depth = ("colour16",) if any(record.mode in DEEP_COLOUR_MODES for record in records) else ()
    return cache_key("images-v4", size, *framing, *depth, files_fingerprint(records, with_labels=False))  # v3: JPEGs reduced while decoding keep a margin; v4: deep images stretched


def decoded_images_cached(records: Sequence[ImageRecord], size: int, cache_dir: Path | None = None, centre_crop: bool = False) -> bool:
    """True when ``decode_images`` would read these images from the cache instead of decoding them."""
    _, array_path, meta_path = _image_cache_paths(cache_dir, decoded_images_key(records, size, centre_crop))
    _wait_for_writing(array_path)
    return array_path.exists() and meta_path.exists()


def _image_cache_paths(cache_dir: Path | None, key: str) -> tuple[Path, Path, Path]:
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "images"
    return folder, folder / f"{key}.npy", folder / f"{key}.json"


def _decode_into(
    target: np.ndarray,
    records: Sequence[ImageRecord],
    size: int,
    on_progress: Callable[[int, int], None] | None,
    stop: StopRequest | None,
    workers: int | None,
    on_chunk: Callable[[int, int, np.ndarray], None] | None = None,
    chunk_rows: int = 64,
    centre_crop: bool = False,
) -> list[SkippedFile]:
    """Fills ``target`` row by row using a pool of threads; returns the files that failed."""
    abandoned = threading.Event()  # set when the caller's loop ends early, so queued images are not decoded for nothing

    def decode(index: int) -> SkippedFile | None:
        if abandoned.is_set() or (stop is not None and stop.requested):
            return None
        record = records[index]
        try:
            target[index] = load_image(record.path, size, centre_crop=centre_crop)
        except Exception as error:  # noqa: BLE001 - any decoder failure is reported per file
            return SkippedFile(record.path, f"could not be decoded: {type(error).__name__}: {error}")
        return None

    failed: list[SkippedFile] = []
    total = len(records)
    report_every = max(1, total // 100)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    chunk_start = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            # ``map`` hands results back in row order, so rows up to ``done`` are all written.
            for done, result in enumerate(pool.map(decode, range(total)), start=1):
                if result is not None:
                    failed.append(result)
                if on_progress and (done % report_every == 0 or done == total):
                    on_progress(done, total)
                if on_chunk and (done - chunk_start == chunk_rows or done == total) and not (stop is not None and stop.requested):
                    on_chunk(chunk_start, done, target[chunk_start:done])
                    chunk_start = done
        finally:
            abandoned.set()
    if stop is not None and stop.requested:
        raise Interrupted(stop.reason)
    return failed


def _open_array(path: Path, memory_budget_bytes: int) -> tuple[np.ndarray, bool]:
    mapped = np.load(path, mmap_mode="r")
    if mapped.nbytes > memory_budget_bytes:
        return mapped, False
    del mapped
    # Read, not copied out of the mapping: a copy would hold the file's pages and the copy in memory at once.
    return np.load(path), True
