"""The decoded-image cache: decoded once per size, held in memory or memory-mapped, written without blocking, never half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_core.data.decoded import decode_images, decoded_images_cached
from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset


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


def test_the_middles_are_cached_apart_from_the_whole_images_whose_key_is_unchanged(tmp_path: Path, tiny_dataset: Path) -> None:
    from tl_core.data.decoded import decoded_images_key
    from tl_core.data.records import files_fingerprint
    from tl_core.files import cache_key

    records = scan_dataset(tiny_dataset).records
    assert decoded_images_key(records, 32) == cache_key("images-v4", 32, files_fingerprint(records, with_labels=False))  # earlier caches stay valid
    whole = decode_images(records, 32, cache_dir=tmp_path)
    assert not decoded_images_cached(records, 32, tmp_path, centre_crop=True)
    middles = decode_images(records, 32, cache_dir=tmp_path, centre_crop=True)
    assert middles.key != whole.key and not middles.from_cache and decoded_images_cached(records, 32, tmp_path, centre_crop=True)
    np.testing.assert_array_equal(middles.pixels[3], load_image(records[3].path, 32, centre_crop=True))
    assert not np.array_equal(middles.pixels, whole.pixels)


def test_images_with_sixteen_bits_per_colour_get_keys_of_their_own(tmp_path: Path) -> None:
    """Such sets were decoded at 8 bits before; their old cache entries must not be reused, and no other set's key moves."""
    from dataclasses import replace

    from tl_core.data.decoded import decoded_images_key

    from conftest import make_class_folders, sixteen_bit_colour_png

    root = make_class_folders(tmp_path / "slides", {"a": 3, "b": 3})
    records = scan_dataset(root).records
    plain = decoded_images_key(records, 32)
    sixteen_bit_colour_png(Path(records[0].path).with_name("deep.png"), np.full((8, 8, 3), 4000, dtype=np.uint16))
    deep = scan_dataset(root).records
    assert any(record.mode == "RGB;16" for record in deep)
    as_before = [replace(record, mode="RGB") if record.mode == "RGB;16" else record for record in deep]  # the same files as an older scan saw them
    assert decoded_images_key(deep, 32) != decoded_images_key(as_before, 32) and decoded_images_key(records, 32) == plain
