"""Splitting a dataset into train, validation and test, and every other seeded sample of it.

Split folders (``train/``, ``val/`` or ``validation/``, ``test/``) are used as
given; what is missing is generated here, stratified by class and seeded. The
samples other parts of the package draw (a subsample of the training split, a
sample for the advice's probes, half of a sample) are drawn here too, so every
seeded draw follows one set of rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from tl_core.data.records import Dataset, ImageRecord
from tl_core.errors import DataError

SPLIT_FOLDER_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
# A class in train/ needs this many images before some can be set aside to choose the epoch (see _hold_out_given_val).
MIN_TRAIN_IMAGES_TO_CARVE = 10


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction is {val_fraction} while it must be between 0 and 1 (exclusive). Use e.g. 0.15.")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"test_fraction is {test_fraction} (with val_fraction {val_fraction}) while it must be at least 0 "
            "and leave images for training. Use e.g. 0.15, or 0 to evaluate on the validation split."
        )


def assign_splits(dataset: Dataset, given_splits: set[str], val_fraction: float, test_fraction: float) -> Dataset:
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


def subsample_training_split(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """Keeps at most ``per_class`` training images of each class (seeded); validation and test stay whole."""
    rng = np.random.default_rng(seed)
    kept = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.split == "train" and record.class_name == name]
        kept.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    others = [record for record in dataset.records if record.split != "train"]
    return replace(dataset, records=sorted(kept + others, key=lambda record: record.relative_path))


def stratified_sample(dataset: Dataset, sample_size: int, seed: int) -> list:
    """Up to ``sample_size`` images, as many of each class, drawn from outside the test split where the class has enough there."""
    rng = np.random.default_rng(seed)
    per_class = max(2, sample_size // dataset.num_classes)
    chosen = []
    for name in dataset.class_names:
        members = [record for record in dataset.records if record.class_name == name]
        outside_test = [record for record in members if record.split != "test"]
        members = outside_test if len(outside_test) >= 2 else members
        chosen.extend(members[index] for index in sorted(rng.permutation(len(members))[:per_class]))
    return sorted(chosen, key=lambda record: record.relative_path)


def stratified_half(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of a seeded half of each class."""
    rng = np.random.default_rng(seed + 1)
    chosen = [np.sort(rng.permutation(np.flatnonzero(labels == label))[: max(2, int(np.sum(labels == label)) // 2)]) for label in np.unique(labels)]
    return np.sort(np.concatenate(chosen))
