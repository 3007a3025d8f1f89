"""Scanning, checking and splitting datasets; reading pixels of every kind of image."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tl_core.data.decoded import decode_images
from tl_core.data.scan import scan_dataset
from tl_core.errors import DataError

from conftest import make_class_folders, pattern_image, write_image


def test_ants_bees_is_read_as_published(ants_bees: Path) -> None:
    dataset = scan_dataset(ants_bees)
    summary = dataset.summary()
    assert summary["class_names"] == ["ants", "bees"]
    # val/ is held out for the report; 15 % of train/ chooses the epoch.
    assert summary["counts"] == {"train": {"ants": 105, "bees": 103}, "val": {"ants": 19, "bees": 18}, "test": {"ants": 70, "bees": 83}}
    assert summary["evaluation_split"] == "test"
    assert all(record.relative_path.startswith("val/") for record in dataset.split("test"))
    assert all(record.relative_path.startswith("train/") for record in dataset.split("val"))
    assert summary["formats"]["GIF"] == 1  # the placeholder GIF is an image Pillow reads, so it is used
    assert summary["ignored_system_files"] == 2  # the two .DS_Store files
    assert summary["skipped"] == []
    assert summary["files_seen"] == 398
    assert summary["imbalance_ratio"] == pytest.approx(204 / 194, abs=1e-3)
    assert summary["image_size"]["max_width"] >= summary["image_size"]["min_width"] > 0
    assert summary["suspicious"] == [] and summary["duplicates"] == []


def test_lone_top_folder_is_descended_into(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "unzipped" / "my_photos", {"a": 3, "b": 3})
    (tmp_path / "unzipped" / ".DS_Store").write_bytes(b"junk")
    dataset = scan_dataset(tmp_path / "unzipped")
    assert dataset.root == (tmp_path / "unzipped" / "my_photos").resolve()
    assert dataset.class_names == ["a", "b"]


def test_unusable_files_are_listed_with_reasons_and_counts_add_up(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "Thumbs.db").write_bytes(b"x")
    (root / "b" / ".hidden.png").write_bytes(b"x")
    (root / "stray.jpg").write_bytes(b"x")
    write_image(root / "b" / "png_named.jpg", pattern_image(1, 9))  # extension lies: content decides
    write_image(root / "b" / "nested" / "deeper.png", pattern_image(1, 10))  # nested folders count for the class
    dataset = scan_dataset(root)
    reasons = {Path(item.path).name: item.reason for item in dataset.skipped}
    assert reasons == {
        "notes.txt": "not an image Pillow can read (unknown or unsupported format)",
        "empty.jpg": "empty file (0 bytes)",
        "stray.jpg": "file directly in the dataset folder, not inside a class folder; move it into the folder of its class",
    }
    assert Counter(record.class_name for record in dataset.records) == {"a": 4, "b": 6}
    assert dataset.ignored_system_files == 2
    assert dataset.summary()["files_seen"] == 4 + 6 + 3


def test_files_that_fail_to_decode_are_reported_not_dropped(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    buffer = io.BytesIO()
    Image.fromarray(pattern_image(0, 0, 200)).save(buffer, format="JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    dataset = scan_dataset(root)  # the header is fine, so the scan keeps it
    decoded = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache")
    assert [Path(item.path).name for item in decoded.failed] == ["truncated.jpg"]
    assert decoded.failed[0].reason.startswith("could not be decoded: OSError")
    cleaned = dataset.without(decoded.failed)
    assert len(cleaned.records) == len(dataset.records) - 1
    assert any(item.path.endswith("truncated.jpg") for item in cleaned.skipped)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: None, "Dataset folder '{root}/missing' does not exist. Check the path, or pass the folder that holds one sub-folder per class."),
        (lambda root: make_class_folders(root / "data", {"only": 3}), "Found 1 class ('only') in '{root}/data' while at least 2 are required. Add a second sub-folder with images of another class."),
        (
            lambda root: (root / "data").mkdir(),
            "Found no class folders in '{root}/data' while at least 2 are required. Put each class's images in its own sub-folder, e.g. '{root}/data/cats/1.jpg' and '{root}/data/dogs/2.jpg'.",
        ),
        (
            lambda root: (make_class_folders(root / "data", {"a": 3, "b": 3}), (root / "data" / "c").mkdir()),
            "Class 'c' in '{root}/data' has no usable images. Add images to the 'c' folder or remove the folder.",
        ),
        (
            lambda root: make_class_folders(root / "data", {"a": 5, "b": 2}),
            "Class 'b' has 2 images in the whole dataset; at least 3 are needed to split it into train, validation and test. Add images to 'b', or provide your own train/ and val/ folders.",
        ),
        (
            lambda root: (make_class_folders(root / "data" / "train", {"a": 3, "b": 3}), make_class_folders(root / "data" / "val", {"a": 1, "b": 1, "wasp": 1})),
            "Class 'wasp' has images in val/ but none in train/, so no model can learn it. Add training images to train/wasp/ or remove the class from the other splits.",
        ),
    ],
    ids=["missing", "one-class", "no-class", "empty-class", "too-small", "class-only-in-val"],
)
def test_dataset_errors_name_the_problem_and_the_fix(tmp_path: Path, build, message: str) -> None:
    build(tmp_path)
    target = tmp_path / ("missing" if "missing" in message else "data")
    with pytest.raises(DataError, match=re.escape(message.format(root=tmp_path.resolve() if "missing" not in message else tmp_path))):
        scan_dataset(target)


def test_empty_class_message_counts_its_skipped_files(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "broken.jpg").write_bytes(b"not really")
    with pytest.raises(DataError, match=re.escape("Class 'c' in '" + str(root.resolve()) + "' has no usable images (1 of its files were skipped; see the skipped list for why).")):
        scan_dataset(root)


def test_only_files_that_share_a_size_are_hashed(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    (root / "b" / "copy.png").write_bytes((root / "a" / "a_000.png").read_bytes())
    dataset = scan_dataset(root)
    hashed = sorted(Path(record.path).name for record in dataset.records if record.content_hash)
    sizes = Counter(record.file_size for record in dataset.records)
    assert hashed == sorted(Path(record.path).name for record in dataset.records if sizes[record.file_size] > 1)
    assert {"a_000.png", "copy.png"} <= set(hashed)
    assert [group.kind for group in dataset.duplicate_groups()] == ["label conflict"]


def test_a_label_conflict_across_splits_is_reported_as_a_label_conflict(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 3, "b": 3})
    make_class_folders(tmp_path / "data" / "val", {"a": 1, "b": 1}, size=40)  # another size: not copies of train/
    root = (tmp_path / "data").resolve()
    (root / "val" / "b" / "same_as_train_a.png").write_bytes((root / "train" / "a" / "a_001.png").read_bytes())
    summary = scan_dataset(root).summary()
    assert summary["duplicates"] == [
        {"kind": "label conflict", "paths": [str(root / "train" / "a" / "a_001.png"), str(root / "val" / "b" / "same_as_train_a.png")], "classes": ["a", "b"], "splits": ["train", "val"]}
    ]


def test_dropped_files_leave_the_duplicate_and_suspicious_lists(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    buffer = io.BytesIO()
    Image.fromarray(pattern_image(0, 50, 64)).save(buffer, format="PNG")
    cut = buffer.getvalue()[: len(buffer.getvalue()) - 40]  # header intact, pixel data and IEND cut off
    (root / "a" / "cut.png").write_bytes(cut)
    (root / "a" / "cut copy.png").write_bytes(cut)
    dataset = scan_dataset(root, make_splits=False)  # the scan reads headers only, so both are used for now
    note = "the PNG data stops before its end marker, so the file looks truncated; it is kept for now and dropped with a notice if it fails to decode when training starts"
    assert [(Path(item.path).name, item.reason) for item in dataset.suspicious] == [("cut copy.png", note), ("cut.png", note)]
    assert [(group.kind, group.splits) for group in dataset.duplicate_groups()] == [("same class", ["test"])]
    decoded = decode_images(dataset.records, 16, cache_dir=tmp_path / "cache")
    cleaned = dataset.without(decoded.failed)
    assert sorted(Path(item.path).name for item in decoded.failed) == ["cut copy.png", "cut.png"]
    assert cleaned.suspicious == [] and cleaned.duplicate_groups() == []
    assert cleaned.summary()["files_seen"] == dataset.summary()["files_seen"] == 10


class _RecordingPool:
    """Stands in for the scan's thread pool: runs ``map`` in this thread and counts the files handed to it."""

    def __init__(self) -> None:
        self.mapped = 0

    def map(self, function, items):
        items = list(items)
        self.mapped += len(items)
        return [function(item) for item in items]


@pytest.mark.parametrize(("seconds_per_header", "in_threads"), [(0.0001, False), (0.005, True)])
def test_headers_go_to_threads_only_when_they_wait_for_the_disk(tmp_path: Path, monkeypatch, seconds_per_header: float, in_threads: bool) -> None:
    """From the page cache, threads only contend for the interpreter; from a slow disk they overlap the waits."""
    import tl_core.data.scan as scan
    from tl_core.data.images import probe_image

    from conftest import make_class_folders

    paths = sorted(make_class_folders(tmp_path / "data", {"a": 50, "b": 50}, size=16).rglob("*.png"))
    clock = {"now": 0.0}

    def timed_probe(path, pixel_limit):  # each header read costs seconds_per_header on a fake clock
        clock["now"] += seconds_per_header
        return probe_image(path, pixel_limit)

    monkeypatch.setattr(scan, "probe_image", timed_probe)
    pool = _RecordingPool()
    probes = scan.probe_headers(paths, 10**8, pool, timer=lambda: clock["now"])
    assert probes == [probe_image(path, 10**8) for path in paths]  # the same facts, in order, either way
    assert pool.mapped == ((len(paths) - scan.TIMED_HEADERS) if in_threads else 0)
