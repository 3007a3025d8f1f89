"""Scan a folder of labelled images, check it, split it, and read its images.

The layout is the one every image tool agrees on: one sub-folder per class.
Split folders (``train/``, ``val/`` or ``validation/``, ``test/``) are used as
given; without them a stratified, seeded split is made here.

Nothing is dropped silently: every file that is not used is either a known
system file (``.DS_Store``, ``__MACOSX/``, ``Thumbs.db``), counted in
``ignored_system_files``, or listed in ``skipped`` with its path and reason.
This module never imports TensorFlow, so the app can scan folders quickly.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tl_core.errors import DataError

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
# EXIF orientations 5-8 rotate the picture by 90 degrees, so width and height swap.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112


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


@dataclass(frozen=True)
class SkippedFile:
    """A file that was found in the dataset but is not used, and why."""

    path: str
    reason: str


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
    """

    root: Path
    class_names: list[str]
    records: list[ImageRecord]
    skipped: list[SkippedFile]
    split_source: str
    split_fractions: dict[str, float]
    seed: int
    ignored_system_files: int = 0

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
        dataset = replace(self, records=kept, skipped=self.skipped + dropped)
        _check_classes_not_empty(dataset)
        return dataset

    def summary(self) -> dict:
        """A JSON-ready description of the dataset, as ``python -m tl_core inspect`` prints it."""
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
            "fingerprint": self.fingerprint(),
        }


def files_fingerprint(records: Iterable[ImageRecord], extra: Iterable[str] = ()) -> str:
    """Hashes the identity of a list of files (relative path, size, mtime, class) in order."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(f"extra:{item}\n".encode())
    for record in records:
        digest.update(
            f"{record.relative_path}|{record.file_size}|{record.modified_ns}|{record.class_name}\n".encode()
        )
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

    Returns:
        The dataset, its split and everything that was skipped.

    Raises:
        DataError: When the folder is missing, has fewer than two classes, has an
            empty class, or a class too small to split.
    """
    _check_fractions(val_fraction, test_fraction)
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
    records, unreadable = _read_headers(root, candidates, class_names)
    skipped = scan.skipped + unreadable
    records.sort(key=lambda record: record.relative_path)
    dataset = Dataset(
        root=root,
        class_names=class_names,
        records=records,
        skipped=sorted(skipped, key=lambda item: item.path),
        split_source="",
        split_fractions={},
        seed=seed,
        ignored_system_files=scan.ignored,
    )
    _check_classes_not_empty(dataset)
    if not make_splits and not split_folders:
        records = [replace(record, split="test") for record in dataset.records]
        return replace(dataset, records=records, split_source="not split: every image is used for evaluation")
    return _assign_splits(dataset, given_splits=set(split_folders), val_fraction=val_fraction, test_fraction=test_fraction)


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


def _read_headers(root: Path, candidates: list[_Candidate], class_names: list[str]) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Opens each candidate's header with Pillow (in threads: this is file I/O)."""
    label_of = {name: index for index, name in enumerate(class_names)}
    workers = min(16, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_probe_image, [candidate.path for candidate in candidates]))
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    for candidate, result in zip(candidates, results, strict=False):
        if isinstance(result, str):
            skipped.append(SkippedFile(str(candidate.path), result))
            continue
        width, height, image_format, mode, file_size, modified_ns = result
        records.append(
            ImageRecord(
                path=str(candidate.path),
                relative_path=candidate.path.relative_to(root).as_posix(),
                class_name=candidate.class_name,
                label=label_of[candidate.class_name],
                split=candidate.split,
                width=width,
                height=height,
                image_format=image_format,
                mode=mode,
                file_size=file_size,
                modified_ns=modified_ns,
            )
        )
    return records, skipped


def _probe_image(path: Path) -> tuple[int, int, str, str, int, int] | str:
    """Reads an image's header. Returns its facts, or the reason it cannot be used."""
    try:
        stat = path.stat()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if stat.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
            if orientation in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            return width, height, image.format or "unknown", image.mode, stat.st_size, stat.st_mtime_ns
    except Image.DecompressionBombError as error:
        return f"image too large to open safely ({error})"
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read (unknown or unsupported format)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image: {error}"


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
    if "val" in given_splits:
        return replace(dataset, split_source=f"given: {', '.join(sorted(split + '/' for split in given_splits))} folders used as they are", split_fractions={})
    train = [record for record in dataset.records if record.split == "train"]
    others = [record for record in dataset.records if record.split != "train"]
    carved = _stratified_split(dataset, train, {"val": val_fraction}, rng, "train/")
    source = f"given: {', '.join(sorted(split + '/' for split in given_splits))}; no val/ folder, so {round(val_fraction * 100)} % of each class in train/ was set aside for validation (seed {dataset.seed})"
    records = sorted(carved + others, key=lambda record: record.relative_path)
    return replace(dataset, records=records, split_source=source, split_fractions={"train": 1 - val_fraction, "val": val_fraction, "test": 0.0})


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


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Reads an image as an RGB uint8 array of shape (size, size, 3).

    The picture is turned upright by its EXIF orientation, converted to RGB
    (transparent areas become white, 16-bit values are scaled to 8 bits) and
    resized to a square with bilinear filtering (the aspect ratio is not kept,
    so nothing is cropped away). Training, evaluation and prediction all read
    pixels through this one function, so they see identical inputs.

    Args:
        path: The image file; its format is found from its content, not its name.
        size: Side of the square output in pixels.

    Returns:
        The pixels, ``uint8``, shape ``(size, size, 3)``.

    Raises:
        OSError, ValueError, Image.DecompressionBombError: When the file cannot be decoded.
    """
    with Image.open(path) as image:
        if image.format == "JPEG":
            # Let the JPEG decoder scale down by 2, 4 or 8 while decoding: much faster,
            # and the result stays at least ``size`` pixels on each side.
            image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
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
