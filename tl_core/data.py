"""Scan a folder of labelled images, check it, split it, and read its images.

The layout is the one every image tool agrees on: one sub-folder per class.
Split folders (``train/``, ``val/`` or ``validation/``, ``test/``) are used as
given; without them a stratified, seeded split is made here.

Nothing is dropped silently: every file that is not used is either a known
system file (``.DS_Store``, ``__MACOSX/``, ``Thumbs.db``), counted in
``ignored_system_files``, or listed in ``skipped`` with its path and reason.
Files that are used but deserve a look (an extension that does not match the
content, a JPEG or PNG that looks truncated) are listed in ``suspicious``, and
files with identical bytes are reported as duplicate groups (kept, not dropped).

Every image is opened through ``open_image``, which refuses images with more
pixels than a limit (a guard against "decompression bombs": small files that
decode to gigabytes). The limit is ``DEFAULT_MAX_IMAGE_PIXELS`` unless the
caller passes ``max_pixels`` or the environment variable
``TL_CORE_MAX_IMAGE_PIXELS`` is set (read at every call, not at import).
This module never imports TensorFlow, so the app can scan folders quickly.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tl_core.decisions import DECISIONS_FILE, apply_decisions
from tl_core.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FOLDER_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "$recycle.bin"})
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
# A class in train/ needs this many images before some can be set aside to choose the epoch (see _hold_out_given_val).
MIN_TRAIN_IMAGES_TO_CARVE = 10
# EXIF orientations 5-8 rotate the picture by 90 degrees, so width and height swap.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE = "TL_CORE_MAX_IMAGE_PIXELS"
# Pillow's own refusal threshold at its default settings (twice Image.MAX_IMAGE_PIXELS):
# every image Pillow opened before still opens, and the ones it refused are now refused
# with a message that says how to raise the limit. A 179-megapixel RGB image takes
# about 540 MB of memory once decoded.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

DUPLICATE_SAME_CLASS = "same class"
DUPLICATE_LABEL_CONFLICT = "label conflict"
DUPLICATE_SPLIT_LEAKAGE = "split leakage"
# Formats Pillow names differently from the extension they are saved under.
_FORMAT_FAMILIES = {"MPO": "JPEG", "DIB": "BMP"}
# What a complete file ends with; checked on the last bytes only.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 64


class ImageTooLargeError(DataError):
    """An image has more pixels than the decompression-bomb limit allows.

    Attributes:
        reason: The message without the file name, as the skipped list shows it.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"'{path}': {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ImageRecord:
    """One usable image.

    Attributes:
        path: Absolute path of the file.
        relative_path: Path relative to the dataset root, with ``/`` separators.
        class_name: The class (sub-folder) it belongs to.
        label: Index of ``class_name`` in the dataset's sorted class list.
        split: ``"train"``, ``"val"`` or ``"test"``.
        width: Width in pixels, after EXIF orientation.
        height: Height in pixels, after EXIF orientation.
        image_format: Pillow's name for the format found in the content ("JPEG", "PNG", ...).
        mode: Pillow's colour mode of the file ("RGB", "L", "P", ...).
        file_size: Size of the file in bytes.
        modified_ns: Modification time of the file, in nanoseconds.
        content_hash: BLAKE2b hash of the file's bytes; only computed when another
            file has exactly the same size (the only files that can be identical),
            empty otherwise.
    """

    path: str
    relative_path: str
    class_name: str
    label: int
    split: str
    width: int
    height: int
    image_format: str
    mode: str
    file_size: int
    modified_ns: int
    content_hash: str = ""


@dataclass(frozen=True)
class SkippedFile:
    """A file that was found in the dataset but is not used (or used but suspicious), and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with identical bytes. All of them are used; the group is reported.

    Attributes:
        kind: ``"label conflict"`` when the copies are in different classes,
            else ``"split leakage"`` when they are in different splits, else
            ``"same class"`` (same class and split: the image simply counts twice).
        paths: The files, sorted.
        classes: Their classes, sorted, each once.
        splits: Their splits, in train/val/test order, each once.
    """

    kind: str
    paths: list[str]
    classes: list[str]
    splits: list[str]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "paths": list(self.paths), "classes": list(self.classes), "splits": list(self.splits)}


@dataclass(frozen=True)
class Dataset:
    """A scanned, checked and split dataset.

    Attributes:
        root: The folder the classes were found in (after descending into a lone sub-folder).
        class_names: Sorted class names; a class's label is its index here.
        records: Every usable image, sorted by relative path.
        skipped: Files found but not used, each with its reason.
        split_source: How the splits were made, in words a user can read.
        split_fractions: Fractions of each class that went to each split.
        seed: Seed of the generated part of the split.
        ignored_system_files: Number of known system files (``.DS_Store`` ...) passed over.
        suspicious: Files that are used but deserve a look (extension that does not
            match the content, possibly truncated), each with the reason.
        label_decisions: What the user's label decisions changed (see
            ``tl_core.decisions``): images relabelled, excluded, kept, and stale
            decisions with the reason. Empty when there are none.
    """

    root: Path
    class_names: list[str]
    records: list[ImageRecord]
    skipped: list[SkippedFile]
    split_source: str
    split_fractions: dict[str, float]
    seed: int
    ignored_system_files: int = 0
    suspicious: list[SkippedFile] = field(default_factory=list)
    label_decisions: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[ImageRecord]:
        """Returns the records of one split (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLIT_NAMES}.")
        return [record for record in self.records if record.split == name]

    @property
    def evaluation_split(self) -> str:
        """The split a trained model is judged on: ``test`` when there is one, else ``val``."""
        return "test" if any(record.split == "test" for record in self.records) else "val"

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, every class present in every split (0 when absent)."""
        counts = {split: {name: 0 for name in self.class_names} for split in SPLIT_NAMES}
        for record in self.records:
            counts[record.split][record.class_name] += 1
        return {split: per_class for split, per_class in counts.items() if sum(per_class.values())}

    def fingerprint(self) -> str:
        """A short hash of the files used (paths, sizes, modification times) and their labels."""
        return files_fingerprint(self.records, extra=self.class_names)

    def imbalance_ratio(self) -> float:
        """Images in the largest class divided by images in the smallest (all splits together)."""
        totals = Counter(record.class_name for record in self.records)
        smallest = min(totals[name] for name in self.class_names)
        return round(max(totals.values()) / smallest, 3) if smallest else float("inf")

    def without(self, dropped: Iterable[SkippedFile]) -> Dataset:
        """Returns a copy with some records moved to ``skipped`` (e.g. files that failed to decode)."""
        dropped = list(dropped)
        dropped_paths = {item.path for item in dropped}
        if not dropped_paths:
            return self
        kept = [record for record in self.records if record.path not in dropped_paths]
        still_suspicious = [item for item in self.suspicious if item.path not in dropped_paths]
        dataset = replace(self, records=kept, skipped=self.skipped + dropped, suspicious=still_suspicious)
        _check_classes_not_empty(dataset)
        return dataset

    def with_earlier_splits(self, earlier: dict[str, str]) -> Dataset:
        """A copy where every image an earlier run used keeps the split it had there.

        Training again on a folder with images added must not let the earlier
        held-out images into training (the new model's test figure would then be
        measured on images it trained on). The new images keep the split this
        scan gave them, made by the same seeded, stratified rule.

        Args:
            earlier: Split of each image path in the earlier run.
        """
        records = [replace(record, split=earlier[record.path]) if earlier.get(record.path) in SPLIT_NAMES else record for record in self.records]
        source = f"{self.split_source}; images of the earlier run keep their split from it"
        return replace(self, records=records, split_source=source)

    def duplicate_groups(self) -> list[DuplicateGroup]:
        """Groups of used files with identical bytes, sorted by their first path."""
        by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in self.records:
            if record.content_hash:
                by_hash[record.content_hash].append(record)
        groups = [_duplicate_group(members) for members in by_hash.values() if len(members) > 1]
        return sorted(groups, key=lambda group: group.paths[0])

    def summary(self) -> dict:
        """A JSON-ready description of the dataset, as ``python -m tl_core inspect`` prints it.

        ``files_seen`` is ``num_images`` plus the number of ``skipped`` files
        (system files such as ``.DS_Store`` are counted apart, in
        ``ignored_system_files``). ``suspicious`` files and ``duplicates`` are
        among the used images.
        """
        widths = [record.width for record in self.records]
        heights = [record.height for record in self.records]
        return {
            "root": str(self.root),
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "num_images": len(self.records),
            "counts": self.counts(),
            "class_totals": dict(Counter(record.class_name for record in self.records)),
            "split_source": self.split_source,
            "split_fractions": self.split_fractions,
            "seed": self.seed,
            "evaluation_split": self.evaluation_split,
            "image_size": {
                "min_width": min(widths),
                "max_width": max(widths),
                "min_height": min(heights),
                "max_height": max(heights),
            },
            "formats": dict(Counter(record.image_format for record in self.records)),
            "modes": dict(Counter(record.mode for record in self.records)),
            "imbalance_ratio": self.imbalance_ratio(),
            "files_seen": len(self.records) + len(self.skipped),
            "skipped": [{"path": item.path, "reason": item.reason} for item in self.skipped],
            "ignored_system_files": self.ignored_system_files,
            "suspicious": [{"path": item.path, "reason": item.reason} for item in self.suspicious],
            "duplicates": [group.to_dict() for group in self.duplicate_groups()],
            "label_decisions": dict(self.label_decisions),
            "fingerprint": self.fingerprint(),
        }


def _duplicate_group(members: list[ImageRecord]) -> DuplicateGroup:
    classes = sorted({record.class_name for record in members})
    present = {record.split for record in members}
    splits = [split for split in SPLIT_NAMES if split in present] + sorted(present - set(SPLIT_NAMES))
    if len(classes) > 1:
        kind = DUPLICATE_LABEL_CONFLICT
    elif len(splits) > 1:
        kind = DUPLICATE_SPLIT_LEAKAGE
    else:
        kind = DUPLICATE_SAME_CLASS
    return DuplicateGroup(kind, sorted(record.path for record in members), classes, splits)


def files_fingerprint(records: Iterable[ImageRecord], extra: Iterable[str] = (), with_labels: bool = True) -> str:
    """Hashes the identity of a list of files (relative path, size, mtime and, unless told not to, class) in order.

    Without labels it names the pixels alone: a relabelled image still has them.
    """
    digest = hashlib.sha256()
    for item in extra:
        digest.update(f"extra:{item}\n".encode())
    for record in records:
        label = f"|{record.class_name}" if with_labels else ""
        digest.update(f"{record.relative_path}|{record.file_size}|{record.modified_ns}{label}\n".encode())
    return digest.hexdigest()[:16]


def is_system_file(name: str) -> bool:
    """True for hidden files and folders and the litter operating systems leave behind."""
    return name.startswith(".") or name.lower() in SYSTEM_FILE_NAMES


# --------------------------------------------------------------------------- scanning


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
            (``tl_core.decisions``); False for the labels as the folders give them.

    Returns:
        The dataset, its split, everything that was skipped, the suspicious files
        and (through ``duplicate_groups``) the files with identical bytes.

    Raises:
        DataError: When the folder is missing, has fewer than two classes, has an
            empty class, or a class too small to split.
        ConfigError: When the pixel limit is not a positive whole number.
    """
    _check_fractions(val_fraction, test_fraction)
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
    _check_classes_not_empty(dataset)
    if not make_splits and not split_folders:
        records = [replace(record, split="test") for record in dataset.records]
        dataset = replace(dataset, records=records, split_source="not split: every image is used for evaluation")
    else:
        dataset = _assign_splits(dataset, given_splits=set(split_folders), val_fraction=val_fraction, test_fraction=test_fraction)
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
            if is_system_file(child.name):
                self.ignored += 1
            elif child.name == DECISIONS_FILE:
                continue  # the user's label decisions, applied after the scan
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
            if is_system_file(child.name):
                self.ignored += 1
            elif child.name == DECISIONS_FILE and folder == self.root:
                continue  # the user's label decisions, applied after the scan
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
                elif not _is_inside(file_path.resolve(), self.root):
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


@dataclass(frozen=True)
class _Probe:
    """The facts of one readable image, and a note when something about it looks wrong."""

    width: int
    height: int
    image_format: str
    mode: str
    file_size: int
    modified_ns: int
    note: str


def _read_headers(root: Path, candidates: list[_Candidate], class_names: list[str], pixel_limit: int) -> _Headers:
    """Opens each candidate's header with Pillow, then hashes the files that could be copies.

    Both steps run in threads (they are file I/O). Only files whose size another
    file shares are hashed: files of different sizes cannot be identical, so most
    datasets hash few files.
    """
    label_of = {name: index for index, name in enumerate(class_names)}
    workers = min(16, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        probes = list(pool.map(functools.partial(_probe_image, pixel_limit=pixel_limit), [candidate.path for candidate in candidates]))
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


def _record(root: Path, candidate: _Candidate, probe: _Probe, label: int) -> ImageRecord:
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


def content_hash(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) hash of a file's bytes, hex; empty when the file cannot be read."""
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return ""


def _probe_image(path: Path, pixel_limit: int) -> _Probe | str:
    """Reads an image's header. Returns its facts, or the reason it cannot be used."""
    try:
        stat = path.stat()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if stat.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open_image(path, pixel_limit) as image:
            width, height = image.size
            if _header_orientation(image) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            image_format = image.format or "unknown"
            mode = image.mode
    except ImageTooLargeError as error:
        return error.reason
    except Image.DecompressionBombError as error:
        return f"image too large to open safely ({error})"
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read (unknown or unsupported format)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image: {error}"
    notes = [note for note in (_extension_note(path, image_format), _truncation_note(path, image_format, stat.st_size)) if note]
    return _Probe(width, height, image_format, mode, stat.st_size, stat.st_mtime_ns, "; ".join(notes))


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation, read from the header only.

    Pillow decodes a whole PNG to look for EXIF data stored after the pixels;
    the scan does not (that would decode every PNG, bombs included). Such rare
    files are still turned upright by ``load_image``; only their recorded
    width and height stay as stored.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_EXIF_ORIENTATION_TAG, 1)


@functools.cache
def _extension_formats() -> dict[str, str]:
    """Lower-case extension -> Pillow format, for every format this Pillow can read."""
    return {extension.lower(): name for extension, name in Image.registered_extensions().items()}


def _extension_note(path: Path, image_format: str) -> str:
    """Says when a file's name does not tell its format; the content decides either way."""
    suffix = path.suffix
    if not suffix:
        return f"no file extension; read as {image_format} by its content (tools that go by the extension skip it)"
    named = _extension_formats().get(suffix.lower())
    if named is None:
        return f"extension '{suffix}' is not an image extension; read as {image_format} by its content (tools that go by the extension skip it)"
    if _FORMAT_FAMILIES.get(named, named) != _FORMAT_FAMILIES.get(image_format, image_format):
        return f"named {suffix} but the content is {image_format}; read as {image_format} (tools that trust the extension may fail on it)"
    return ""


def _truncation_note(path: Path, image_format: str, file_size: int) -> str:
    """Says when a JPEG or PNG does not end the way a complete file does (cheap: reads the last bytes)."""
    family = _FORMAT_FAMILIES.get(image_format, image_format)
    if family not in ("JPEG", "PNG"):
        return ""
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, file_size - _TAIL_BYTES))
            tail = stream.read(_TAIL_BYTES)
    except OSError:
        return ""
    complete = tail.rstrip(b"\x00\r\n\t ").endswith(_JPEG_END) if family == "JPEG" else _PNG_END in tail
    if complete:
        return ""
    return f"the {family} data stops before its end marker, so the file looks truncated; it is kept for now and dropped with a notice if it fails to decode when training starts"


# --------------------------------------------------------------------------- the pixel limit


def max_image_pixels(limit: int | None = None) -> int:
    """The pixel limit in force: ``limit`` when given, else ``$TL_CORE_MAX_IMAGE_PIXELS``, else the default.

    The environment variable is read at every call, so it can be changed
    without reimporting anything.

    Args:
        limit: An explicit limit (pixels, width times height), or None.

    Returns:
        The largest number of pixels an image may have.

    Raises:
        ConfigError: When the limit is not a whole number above 0.
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_pixels is {limit!r} while it must be a whole number of pixels above 0. Pass e.g. 300000000 (300 megapixels), or None for the default.")
        return limit
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE} is '{raw}' while it must be a whole number of pixels above 0. "
            f"Set it to e.g. 300000000 (300 megapixels), or unset it for the default of {DEFAULT_MAX_IMAGE_PIXELS}."
        )
    return value


def open_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Opens an image lazily (header only), refusing one with more pixels than the limit.

    Args:
        path: The image file; its format is found from its content.
        max_pixels: The pixel limit; None for ``max_image_pixels()``.

    Returns:
        The opened image; close it (or use it in a ``with`` block).

    Raises:
        ImageTooLargeError: When width times height is over the limit.
        OSError, ValueError, SyntaxError: When the file is not a readable image.
    """
    limit = max_image_pixels(max_pixels)
    _let_pillow_open(limit)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        size = _declared_size(path)
        pixels = size[0] * size[1] if size else _pixels_in_pillow_message(str(error))
        if not pixels or pixels <= limit:
            raise  # refused by a Pillow limit someone else set lower; its own message stands
        raise ImageTooLargeError(path, _too_large_reason(size, pixels, limit)) from error
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageTooLargeError(path, _too_large_reason((width, height), width * height, limit))
    return image


def _let_pillow_open(limit: int) -> None:
    """Raises Pillow's process-wide limit (never lowers it) so Pillow does not refuse what ``limit`` allows.

    Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS``. That only
    changes when a caller asks for a limit above Pillow's own.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < limit:
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)


def _declared_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """Width and height from the file's header, read without Pillow's size check (only to word a refusal)."""
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                verdict = accept(prefix) if accept is not None else True
                if not verdict or isinstance(verdict, str):
                    continue
                stream.seek(0)
                try:
                    return tuple(factory(stream, os.fspath(path)).size)
                except Exception:  # noqa: BLE001 - another plugin may read it; None when none does
                    continue
    except OSError:
        return None
    return None


def _pixels_in_pillow_message(message: str) -> int:
    found = re.search(r"\((\d+) pixels\)", message)
    return int(found.group(1)) if found else 0


def _too_large_reason(size: tuple[int, int] | None, pixels: int, limit: int) -> str:
    found = f"image is {size[0]}×{size[1]} pixels ({pixels / 1e6:,.1f} megapixels)" if size else f"image has {pixels / 1e6:,.1f} megapixels"
    return (
        f"{found}, over the limit of {limit / 1e6:,.1f} megapixels that guards against decompression bombs; "
        f"resize it, or raise the limit with scan_dataset(max_pixels={pixels}) or the environment variable {MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE}={pixels}"
    )


# --------------------------------------------------------------------------- checks


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction is {val_fraction} while it must be between 0 and 1 (exclusive). Use e.g. 0.15.")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"test_fraction is {test_fraction} (with val_fraction {val_fraction}) while it must be at least 0 "
            "and leave images for training. Use e.g. 0.15, or 0 to evaluate on the validation split."
        )


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


def _check_classes_not_empty(dataset: Dataset) -> None:
    per_class = Counter(record.class_name for record in dataset.records)
    for name in dataset.class_names:
        if per_class[name] == 0:
            skipped_here = sum(1 for item in dataset.skipped if f"/{name}/" in item.path.replace(os.sep, "/"))
            detail = f" ({skipped_here} of its files were skipped; see the skipped list for why)" if skipped_here else ""
            raise DataError(
                f"Class '{name}' in '{dataset.root}' has no usable images{detail}. "
                f"Add images to the '{name}' folder or remove the folder."
            )
    train_classes = {record.class_name for record in dataset.records if record.split == "train"}
    given_splits = {record.split for record in dataset.records}
    if "train" in given_splits:
        for name in dataset.class_names:
            if name not in train_classes:
                others = sorted({record.split for record in dataset.records if record.class_name == name})
                raise DataError(
                    f"Class '{name}' has images in {', '.join(split + '/' for split in others)} but none in train/, so no model can learn it. "
                    f"Add training images to train/{name}/ or remove the class from the other splits."
                )


# --------------------------------------------------------------------------- splitting


def _assign_splits(dataset: Dataset, given_splits: set[str], val_fraction: float, test_fraction: float) -> Dataset:
    """Keeps the split folders as given and generates what is missing, stratified by class."""
    rng = np.random.default_rng(dataset.seed)
    if not given_splits:
        fractions = {"train": round(1 - val_fraction - test_fraction, 4), "val": val_fraction, "test": test_fraction}
        records = _stratified_split(dataset, dataset.records, {"val": val_fraction, "test": test_fraction}, rng, "the whole dataset")
        percent = "/".join(f"{round(value * 100)}" for value in fractions.values() if value)
        source = f"generated: stratified split of each class, train/val{'/test' if test_fraction else ''} = {percent} %, seed {dataset.seed}"
        return replace(dataset, records=records, split_source=source, split_fractions=fractions)
    if "train" not in given_splits:
        found = ", ".join(sorted(f"{name}/" for name in given_splits))
        raise DataError(f"Found {found} but no train/ folder in '{dataset.root}'. Add a train/ folder with one sub-folder per class, or remove the split folders.")
    if "val" in given_splits and "test" not in given_splits:
        return _hold_out_given_val(dataset, val_fraction, rng)
    if "val" in given_splits:
        return replace(dataset, split_source=f"given: {', '.join(sorted(split + '/' for split in given_splits))} folders used as they are", split_fractions={})
    train = [record for record in dataset.records if record.split == "train"]
    others = [record for record in dataset.records if record.split != "train"]
    carved = _stratified_split(dataset, train, {"val": val_fraction}, rng, "train/")
    source = f"given: {', '.join(sorted(split + '/' for split in given_splits))}; no val/ folder, so {round(val_fraction * 100)} % of each class in train/ was set aside for validation (seed {dataset.seed})"
    records = sorted(carved + others, key=lambda record: record.relative_path)
    return replace(dataset, records=records, split_source=source, split_fractions={"train": 1 - val_fraction, "val": val_fraction, "test": 0.0})


def _hold_out_given_val(dataset: Dataset, val_fraction: float, rng: np.random.Generator) -> Dataset:
    """train/ and val/ without test/: val/ is kept for the final report, and the epoch is chosen on a part of train/.

    A split that both picks the best epoch and reports the accuracy flatters the
    model a little (the choice was made on those very images). So the given
    val/ images become the ``test`` split, untouched until the end, and a
    seeded, stratified share of each class in train/ becomes ``val``. When a
    class in train/ is too small to spare images, val/ does both jobs and the
    split source says so.
    """
    train = [record for record in dataset.records if record.split == "train"]
    per_class = Counter(record.class_name for record in train)
    smallest = min(per_class.get(name, 0) for name in dataset.class_names)
    if smallest < MIN_TRAIN_IMAGES_TO_CARVE:
        source = (
            f"given: train/, val/ folders used as they are; val/ both chooses the best epoch and reports the accuracy, because a class in train/ has only "
            f"{smallest} images (at least {MIN_TRAIN_IMAGES_TO_CARVE} are needed to set some aside), so the reported accuracy is slightly optimistic"
        )
        return replace(dataset, split_source=source, split_fractions={})
    held_out = [replace(record, split="test") for record in dataset.records if record.split == "val"]
    carved = _stratified_split(dataset, train, {"val": val_fraction}, rng, "train/")
    source = (
        f"given: train/, val/; your val/ folder is kept apart for the final report (shown as test), and {round(val_fraction * 100)} % of each class "
        f"in train/ (seed {dataset.seed}) is the validation split that chooses the best epoch"
    )
    records = sorted(carved + held_out, key=lambda record: record.relative_path)
    return replace(dataset, records=records, split_source=source, split_fractions={"train": round(1 - val_fraction, 4), "val": val_fraction, "test": 0.0})


def _stratified_split(dataset: Dataset, records: list[ImageRecord], fractions: dict[str, float], rng: np.random.Generator, where: str) -> list[ImageRecord]:
    """Shuffles each class with ``rng`` and cuts it so every split gets at least one image."""
    active = {split: fraction for split, fraction in fractions.items() if fraction > 0}
    needed = 1 + len(active)
    result: list[ImageRecord] = []
    for name in dataset.class_names:
        members = [record for record in records if record.class_name == name]
        if len(members) < needed:
            splits = "train, validation and test" if len(active) == 2 else "train and validation"
            raise DataError(
                f"Class '{name}' has {len(members)} image{'s' if len(members) != 1 else ''} in {where}; at least {needed} are needed "
                f"to split it into {splits}. Add images to '{name}', or provide your own train/ and val/ folders."
            )
        order = rng.permutation(len(members))
        start = 0
        for split, count in _split_sizes(len(members), active).items():
            for position in order[start : start + count]:
                result.append(replace(members[position], split=split))
            start += count
        for position in order[start:]:
            result.append(replace(members[position], split="train"))
    return sorted(result, key=lambda record: record.relative_path)


def _split_sizes(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images per held-out split: rounded shares, at least one each, leaving at least one to train on."""
    sizes = {split: max(1, int(round(total * fraction))) for split, fraction in fractions.items()}
    while sum(sizes.values()) > total - 1:
        largest = max(sizes, key=lambda split: sizes[split])
        sizes[largest] -= 1
    return sizes


# --------------------------------------------------------------------------- reading pixels


def load_image(path: str | os.PathLike, size: int, max_pixels: int | None = None) -> np.ndarray:
    """Reads an image as an RGB uint8 array of shape (size, size, 3).

    The picture is turned upright by its EXIF orientation, converted to RGB
    (transparent areas become white, 16-bit values are scaled to 8 bits) and
    resized to a square with bilinear filtering (the aspect ratio is not kept,
    so nothing is cropped away). Training, evaluation and prediction all read
    pixels through this one function, so they see identical inputs.

    Args:
        path: The image file; its format is found from its content, not its name.
        size: Side of the square output in pixels.
        max_pixels: The pixel limit (see ``open_image``); None for ``max_image_pixels()``.

    Returns:
        The pixels, ``uint8``, shape ``(size, size, 3)``.

    Raises:
        ImageTooLargeError: When the image has more pixels than the limit.
        OSError, ValueError: When the file cannot be decoded.
    """
    with open_image(path, max_pixels) as image:
        if image.format == "JPEG":
            # Let the JPEG decoder scale down by 2, 4 or 8 while decoding: much faster,
            # and the result stays at least ``size`` pixels on each side.
            image.draft("RGB", (size, size))
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright picture
        rgb = to_rgb(image)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB; transparency is laid over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        if image.mode == "I" and values.max() <= 255:
            top = 255.0
        scaled = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
