"""What a scanned dataset is: its images, the files it passed over, and the checks on them.

``Dataset`` is the one object the rest of the package receives from a scan
(``tl_core.data.scan.scan_dataset``): every usable image as an
``ImageRecord`` with its class and split, every file not used as a
``SkippedFile`` with the reason, and groups of identical files. It is
frozen; changes (files that failed to decode, the user's label decisions, an
earlier run's splits) make a new copy.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tl_core.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "$recycle.bin"})
DUPLICATE_SAME_CLASS = "same class"
DUPLICATE_LABEL_CONFLICT = "label conflict"
DUPLICATE_SPLIT_LEAKAGE = "split leakage"


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
            ``tl_core.data.decisions``): images relabelled, excluded, kept, and stale
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
        check_classes_not_empty(dataset)
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

    def relative(self, path: str) -> str:
        """``path`` inside the dataset folder, with ``/`` separators (the path as it is, when it lies elsewhere)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

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


def check_classes_not_empty(dataset: Dataset) -> None:
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
