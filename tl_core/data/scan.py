"""Scan a folder of labelled images: find the classes and images, check them, split them.

The layout is the one every image tool agrees on: one sub-folder per class.
Split folders (``train/``, ``val/`` or ``validation/``, ``test/``) are used as
given; without them a stratified, seeded split is made (``tl_core.data.split``).

Nothing is dropped silently: every file that is not used is either a known
system file (``.DS_Store``, ``__MACOSX/``, ``Thumbs.db``), counted in
``ignored_system_files``, or listed in ``skipped`` with its path and reason.
Files that are used but deserve a look (an extension that does not match the
content, a JPEG or PNG that looks truncated) are listed in ``suspicious``, and
files with identical bytes are reported as duplicate groups (kept, not dropped).
This module never imports TensorFlow, so the app can scan folders quickly.
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from tl_core.data.decisions import DECISIONS_FILES, apply_decisions
from tl_core.data.images import ImageProbe, content_hash, max_image_pixels, probe_image
from tl_core.data.records import Dataset, ImageRecord, SkippedFile, check_classes_not_empty, is_system_file
from tl_core.data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SPLIT_FOLDER_ALIASES, assign_splits, check_fractions
from tl_core.errors import DataError


def scan_dataset(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    make_splits: bool = True,
    max_pixels: int | None = None,
    label_decisions: bool = True,
) -> Dataset:
    """Finds the classes and images under ``path``, checks them and splits them.

    Args:
        path: A folder with one sub-folder per class, or with ``train/`` (and
            optionally ``val/``, ``test/``) folders that each hold class folders.
        seed: Seed of the stratified split when the split is generated here.
        val_fraction: Share of each class for validation when there is no ``val/``.
        test_fraction: Share of each class for testing when no split folders exist
            (0 to evaluate on validation).
        make_splits: False to skip generating a split for a folder without split
            folders: every image is then in the ``test`` split (for evaluating a
            trained model on new data, where classes may be tiny).
        max_pixels: Images with more pixels are skipped with a reason (a guard
            against decompression bombs). None: ``$TL_CORE_MAX_IMAGE_PIXELS`` when
            set, else ``DEFAULT_MAX_IMAGE_PIXELS``.
        label_decisions: Apply the user's label decisions saved in the folder
            (``tl_core.data.decisions``); False for the labels as the folders give them.

    Returns:
        The dataset, its split, everything that was skipped, the suspicious files
        and (through ``duplicate_groups``) the files with identical bytes.

    Raises:
        DataError: When the folder is missing, has fewer than two classes, has an
            empty class, or a class too small to split.
        ConfigError: When the pixel limit is not a positive whole number.
    """
    check_fractions(val_fraction, test_fraction)
    pixel_limit = max_image_pixels(max_pixels)
    given = Path(path).expanduser()
    if not given.exists():
        raise DataError(f"Dataset folder '{given}' does not exist. Check the path, or pass the folder that holds one sub-folder per class.")
    if not given.is_dir():
        raise DataError(f"'{given}' is a file, not a folder. Pass the folder that holds one sub-folder per class (unzip archives first).")
    root = _descend_lone_folder(given.resolve())
    scan = _Scan(root)
    split_folders = {SPLIT_FOLDER_ALIASES[child.name.lower()]: child for child in scan.child_dirs(root) if child.name.lower() in SPLIT_FOLDER_ALIASES}
    if split_folders:
        candidates = scan.candidates_in_splits(split_folders)
    else:
        candidates = scan.candidates_in_classes(root)
    class_names = sorted({candidate.class_name for candidate in candidates} | scan.empty_class_names)
    _check_class_count(root, class_names)
    headers = _read_headers(root, candidates, class_names, pixel_limit)
    skipped = scan.skipped + headers.skipped
    dataset = Dataset(
        root=root,
        class_names=class_names,
        records=sorted(headers.records, key=lambda record: record.relative_path),
        skipped=sorted(skipped, key=lambda item: item.path),
        split_source="",
        split_fractions={},
        seed=seed,
        ignored_system_files=scan.ignored,
        suspicious=sorted(headers.suspicious, key=lambda item: item.path),
    )
    check_classes_not_empty(dataset)
    if not make_splits and not split_folders:
        records = [replace(record, split="test") for record in dataset.records]
        dataset = replace(dataset, records=records, split_source="not split: every image is used for evaluation")
    else:
        dataset = assign_splits(dataset, given_splits=set(split_folders), val_fraction=val_fraction, test_fraction=test_fraction)
    return apply_decisions(dataset) if label_decisions else dataset


@dataclass(frozen=True)
class _Candidate:
    path: Path
    class_name: str
    split: str  # "" when the split is generated later


class _Scan:
    """Walks the folder tree, collecting candidate image files and the files it passes over."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: list[SkippedFile] = []
        self.ignored = 0
        self.empty_class_names: set[str] = set()

    def child_dirs(self, folder: Path) -> list[Path]:
        return sorted(child for child in folder.iterdir() if child.is_dir() and not is_system_file(child.name))

    def candidates_in_splits(self, split_folders: dict[str, Path]) -> list[_Candidate]:
        candidates: list[_Candidate] = []
        for child in sorted(self.root.iterdir()):
            if child.name in DECISIONS_FILES:
                continue  # the user's label decisions (and their lock), applied after the scan
            elif is_system_file(child.name):
                self.ignored += 1
            elif child.is_file():
                self.skipped.append(SkippedFile(str(child), "file next to the split folders, not inside a class folder; move it into train/<class>/ to use it"))
            elif child.name.lower() not in SPLIT_FOLDER_ALIASES:
                self.skipped.append(SkippedFile(str(child), "folder next to train/val/test is not a split; its images are not used (move its class folders into train/)"))
        for split, folder in sorted(split_folders.items()):
            candidates.extend(self.candidates_in_classes(folder, split=split))
        return candidates

    def candidates_in_classes(self, folder: Path, split: str = "") -> list[_Candidate]:
        candidates: list[_Candidate] = []
        for child in sorted(folder.iterdir()):
            if child.name in DECISIONS_FILES and folder == self.root:
                continue  # the user's label decisions (and their lock), applied after the scan
            elif is_system_file(child.name):
                self.ignored += 1
            elif child.is_dir():
                found = list(self._files_under(child, class_name=child.name, split=split))
                if not found:
                    self.empty_class_names.add(child.name)
                candidates.extend(found)
            else:
                where = f"{folder.name}/" if split else "the dataset folder"
                self.skipped.append(SkippedFile(str(child), f"file directly in {where}, not inside a class folder; move it into the folder of its class"))
        return candidates

    def _files_under(self, class_folder: Path, class_name: str, split: str) -> Iterable[_Candidate]:
        """Files in a class folder and its nested sub-folders (nested images count for the class)."""
        seen_dirs: set[Path] = set()
        for current, dir_names, file_names in os.walk(class_folder, followlinks=True):
            current_path = Path(current)
            real = current_path.resolve()
            if real in seen_dirs or not _is_inside(real, self.root):
                if not _is_inside(real, self.root):
                    self.skipped.append(SkippedFile(str(current_path), "symbolic link to a folder outside the dataset; not followed"))
                dir_names[:] = []
                continue
            seen_dirs.add(real)
            kept_dirs = []
            for name in sorted(dir_names):
                if is_system_file(name):
                    self.ignored += 1
                else:
                    kept_dirs.append(name)
            dir_names[:] = kept_dirs
            for name in sorted(file_names):
                file_path = current_path / name
                if is_system_file(name):
                    self.ignored += 1
                elif os.path.islink(file_path) and not _is_inside(file_path.resolve(), self.root):  # else it is in ``real``, inside
                    self.skipped.append(SkippedFile(str(file_path), "symbolic link to a file outside the dataset; not followed"))
                else:
                    yield _Candidate(file_path, class_name, split)


def _is_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _descend_lone_folder(folder: Path) -> Path:
    """Steps into a folder's only sub-folder, as a zip usually unpacks (``data.zip`` -> ``data/``)."""
    while True:
        children = [child for child in folder.iterdir() if not is_system_file(child.name)]
        if len(children) != 1 or not children[0].is_dir():
            return folder
        only = children[0]
        if only.name.lower() in SPLIT_FOLDER_ALIASES:
            return folder
        if not any(grandchild.is_dir() and not is_system_file(grandchild.name) for grandchild in only.iterdir()):
            return folder  # a single class folder: let the class count check explain it
        folder = only


@dataclass(frozen=True)
class _Headers:
    """What reading the candidates' headers found."""

    records: list[ImageRecord]
    skipped: list[SkippedFile]
    suspicious: list[SkippedFile]


# Reading a header from the page cache takes about 0.1 ms of Python, which threads only slow down (they contend for
# the interpreter: 3,000 headers took 0.8 s in 8 threads, 0.25 s in one, on 2 cores); from a cold disk or a network
# share each file waits milliseconds for I/O, which threads overlap. The first files are read in one thread and timed.
TIMED_HEADERS = 64
IO_BOUND_SECONDS_PER_HEADER = 0.001


def probe_headers(paths: list[Path], pixel_limit: int, pool: ThreadPoolExecutor, timer=time.perf_counter) -> list[ImageProbe | str]:
    """``probe_image`` of every path, in order: in this thread while headers come fast, in ``pool`` once they wait for the disk."""
    probe = functools.partial(probe_image, pixel_limit=pixel_limit)
    started = timer()
    probes = [probe(path) for path in paths[:TIMED_HEADERS]]
    rest = paths[TIMED_HEADERS:]
    if rest and (timer() - started) / TIMED_HEADERS > IO_BOUND_SECONDS_PER_HEADER:
        return probes + list(pool.map(probe, rest))
    return probes + [probe(path) for path in rest]


def _read_headers(root: Path, candidates: list[_Candidate], class_names: list[str], pixel_limit: int) -> _Headers:
    """Opens each candidate's header with Pillow, then hashes the files that could be copies.

    Headers are read in threads where they wait for the disk (``probe_headers``); hashes
    always are (the hash releases the interpreter). Only files whose size another
    file shares are hashed: files of different sizes cannot be identical, so most
    datasets hash few files.
    """
    label_of = {name: index for index, name in enumerate(class_names)}
    workers = min(16, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        probes = probe_headers([candidate.path for candidate in candidates], pixel_limit, pool)
        records: list[ImageRecord] = []
        skipped: list[SkippedFile] = []
        suspicious: list[SkippedFile] = []
        for candidate, probe in zip(candidates, probes, strict=True):
            if isinstance(probe, str):
                skipped.append(SkippedFile(str(candidate.path), probe))
                continue
            if probe.note:
                suspicious.append(SkippedFile(str(candidate.path), probe.note))
            records.append(_record(root, candidate, probe, label_of[candidate.class_name]))
        records = _with_content_hashes(records, pool)
    return _Headers(records, skipped, suspicious)


def _record(root: Path, candidate: _Candidate, probe: ImageProbe, label: int) -> ImageRecord:
    return ImageRecord(
        path=str(candidate.path),
        relative_path=candidate.path.relative_to(root).as_posix(),
        class_name=candidate.class_name,
        label=label,
        split=candidate.split,
        width=probe.width,
        height=probe.height,
        image_format=probe.image_format,
        mode=probe.mode,
        file_size=probe.file_size,
        modified_ns=probe.modified_ns,
    )


def _with_content_hashes(records: list[ImageRecord], pool: ThreadPoolExecutor) -> list[ImageRecord]:
    """Fills ``content_hash`` for the records whose file size is shared with another record."""
    sizes = Counter(record.file_size for record in records)
    positions = [index for index, record in enumerate(records) if sizes[record.file_size] > 1]
    hashes = list(pool.map(content_hash, [records[index].path for index in positions]))
    hashed = list(records)
    for index, digest in zip(positions, hashes, strict=True):
        hashed[index] = replace(records[index], content_hash=digest)
    return hashed


def _check_class_count(root: Path, class_names: list[str]) -> None:
    if not class_names:
        raise DataError(
            f"Found no class folders in '{root}' while at least 2 are required. "
            f"Put each class's images in its own sub-folder, e.g. '{root}/cats/1.jpg' and '{root}/dogs/2.jpg'."
        )
    if len(class_names) == 1:
        raise DataError(
            f"Found 1 class ('{class_names[0]}') in '{root}' while at least 2 are required. "
            "Add a second sub-folder with images of another class."
        )
