"""Scanning, checking and splitting datasets; reading pixels of every kind of image."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data.decoded import decode_images, decoded_images_cached
from tl_core.data.images import load_image
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


def test_generated_split_is_stratified_seeded_and_stated(tiny_dataset: Path) -> None:
    first = scan_dataset(tiny_dataset, seed=1)
    again = scan_dataset(tiny_dataset, seed=1)
    other = scan_dataset(tiny_dataset, seed=2)
    counts = first.counts()
    for name in first.class_names:
        assert (counts["train"][name], counts["val"][name], counts["test"][name]) == (7, 2, 1) or sum(
            counts[split][name] for split in counts
        ) == 10
        assert counts["val"][name] >= 1 and counts["test"][name] >= 1
    assert [record.split for record in first.records] == [record.split for record in again.records]
    assert [record.split for record in first.records] != [record.split for record in other.records]
    assert first.split_fractions == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert "70/15/15" in first.split_source and "seed 1" in first.split_source
    assert first.evaluation_split == "test"


def test_given_val_folder_is_kept_for_the_report_and_the_epoch_is_chosen_on_part_of_train(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 20, "b": 20})
    make_class_folders(tmp_path / "data" / "val", {"a": 4, "b": 5})
    dataset = scan_dataset(tmp_path / "data", val_fraction=0.2, seed=3)
    counts = dataset.counts()
    assert counts == {"train": {"a": 16, "b": 16}, "val": {"a": 4, "b": 4}, "test": {"a": 4, "b": 5}}
    assert {record.relative_path.split("/")[0] for record in dataset.split("test")} == {"val"}
    assert {record.relative_path.split("/")[0] for record in dataset.split("val")} == {"train"}
    assert dataset.evaluation_split == "test"
    assert "kept apart for the final report" in dataset.split_source and "seed 3" in dataset.split_source
    assert [record.split for record in scan_dataset(tmp_path / "data", val_fraction=0.2, seed=3).records] == [record.split for record in dataset.records]


def test_given_val_folder_does_both_jobs_when_train_is_too_small_to_spare_images(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 20, "b": 9})
    make_class_folders(tmp_path / "data" / "val", {"a": 4, "b": 4})
    dataset = scan_dataset(tmp_path / "data")
    assert dataset.counts() == {"train": {"a": 20, "b": 9}, "val": {"a": 4, "b": 4}}
    assert dataset.evaluation_split == "val"
    assert "val/ both chooses the best epoch and reports the accuracy" in dataset.split_source
    assert "only 9 images" in dataset.split_source


def test_lone_top_folder_is_descended_into(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "unzipped" / "my_photos", {"a": 3, "b": 3})
    (tmp_path / "unzipped" / ".DS_Store").write_bytes(b"junk")
    dataset = scan_dataset(tmp_path / "unzipped")
    assert dataset.root == (tmp_path / "unzipped" / "my_photos").resolve()
    assert dataset.class_names == ["a", "b"]


def test_train_folder_without_val_gets_a_validation_split(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 10, "b": 10})
    make_class_folders(tmp_path / "data" / "test", {"a": 2, "b": 2})
    dataset = scan_dataset(tmp_path / "data", val_fraction=0.2)
    counts = dataset.counts()
    assert counts["val"] == {"a": 2, "b": 2}
    assert counts["train"] == {"a": 8, "b": 8}
    assert counts["test"] == {"a": 2, "b": 2}
    assert "no val/ folder" in dataset.split_source


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


def _save(image: Image.Image, path: Path, image_format: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=image_format, **options)
    return path


def test_every_mode_becomes_rgb_of_the_requested_size(tmp_path: Path) -> None:
    red = np.zeros((20, 30, 3), dtype=np.uint8)
    red[..., 0] = 255
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 15:, 3] = 255  # left half transparent: must become white, not black
    palette = Image.fromarray(red).convert("P")
    palette.info["transparency"] = 0
    cases = {
        "rgb.jpg": _save(Image.fromarray(red), tmp_path / "rgb.jpg", "JPEG"),
        "gray.png": _save(Image.fromarray(red).convert("L"), tmp_path / "gray.png", "PNG"),
        "bw.bmp": _save(Image.fromarray(red).convert("1"), tmp_path / "bw.bmp", "BMP"),
        "rgba.png": _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG"),
        "palette.gif": _save(Image.fromarray(red).convert("P"), tmp_path / "palette.gif", "GIF"),
        "cmyk.jpg": _save(Image.fromarray(red).convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG"),
        "deep.png": _save(Image.fromarray((np.ones((20, 30)) * 65535).astype(np.uint16)), tmp_path / "deep.png", "PNG"),
        "webp_no_extension": _save(Image.fromarray(red), tmp_path / "webp_no_extension", "WEBP"),
    }
    for name, path in cases.items():
        pixels = load_image(path, 16)
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8, name
    assert load_image(cases["rgba.png"], 16)[8, 0].tolist() == [255, 255, 255]
    assert load_image(cases["rgba.png"], 16)[8, 15].tolist() == [255, 0, 0]
    assert load_image(cases["deep.png"], 16)[0, 0].tolist() == [255, 255, 255]
    assert load_image(cases["rgb.jpg"], 16)[8, 8, 0] > 240


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    picture = np.zeros((20, 40, 3), dtype=np.uint8)  # wide, left half white
    picture[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(picture).save(path, exif=exif.tobytes(), quality=95)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270).resize((16, 16), Image.Resampling.BILINEAR))
    pixels = load_image(path, 16)
    assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 10
    assert pixels[0, :, 0].mean() > 200 and pixels[-1, :, 0].mean() < 50  # white ends up on top

    dataset_root = tmp_path / "data"
    for name in ("a", "b"):
        for index in range(3):
            target = dataset_root / name / f"{index}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    record = scan_dataset(dataset_root).records[0]
    assert (record.width, record.height) == (20, 40)


def test_decoded_images_are_cached_and_memory_mapped_over_budget(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = scan_dataset(tiny_dataset)
    first = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache")
    second = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache", memory_budget_bytes=0)
    assert not first.from_cache and first.in_memory
    assert second.from_cache and not second.in_memory
    np.testing.assert_array_equal(first.pixels, second.pixels)
    np.testing.assert_array_equal(first.pixels[first.row_of[dataset.records[3].path]], load_image(dataset.records[3].path, 32))
    assert decode_images(dataset.records, 40, cache_dir=tmp_path / "cache").from_cache is False  # another size decodes again


def test_decoding_hands_over_chunks_in_order_while_it_goes_on(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = scan_dataset(tiny_dataset)
    chunks = []
    decoded = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache", on_chunk=lambda start, stop, pixels: chunks.append((start, stop, np.array(pixels))), chunk_rows=8)
    assert [(start, stop) for start, stop, _ in chunks] == [(0, 8), (8, 16), (16, 24), (24, 30)]
    np.testing.assert_array_equal(np.concatenate([pixels for _, _, pixels in chunks]), decoded.pixels)
    hit = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache", on_chunk=lambda *chunk: pytest.fail("a cache hit decodes nothing"))
    assert hit.from_cache


def test_a_failing_chunk_consumer_leaves_no_cache_entry(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = scan_dataset(tiny_dataset)

    def consume(start: int, stop: int, pixels: np.ndarray) -> None:
        if start:
            raise MemoryError("out of memory in the model")

    with pytest.raises(MemoryError):
        decode_images(dataset.records, 32, cache_dir=tmp_path / "cache", on_chunk=consume, chunk_rows=8)
    assert list((tmp_path / "cache" / "images").iterdir()) == []
    assert not decode_images(dataset.records, 32, cache_dir=tmp_path / "cache").from_cache


def test_images_that_fit_are_used_from_memory_while_their_cache_file_is_written(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = scan_dataset(tiny_dataset)
    decoded = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache")
    assert decoded.in_memory and not decoded.from_cache and not decoded.pixels.flags.writeable
    assert decoded_images_cached(dataset.records, 32, tmp_path / "cache")  # waits for the writing thread
    (written,) = (tmp_path / "cache" / "images").glob("*.npy")
    np.testing.assert_array_equal(np.load(written), decoded.pixels)


def test_a_cache_file_that_cannot_be_written_costs_only_the_cache(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    dataset = scan_dataset(tiny_dataset)
    decoded = decode_images(dataset.records, 32, cache_dir=tmp_path / "cache")
    assert decoded.pixels.shape == (30, 32, 32, 3) and decoded.pixels.any()
    assert not decoded_images_cached(dataset.records, 32, tmp_path / "cache")
    assert list((tmp_path / "cache" / "images").iterdir()) == []  # no half-written file left behind


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
