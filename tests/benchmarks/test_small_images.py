"""The small-image copies the accuracy benchmark can run on: tiles keep each image's tiles in one split, shrinking keeps the splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image

from benchmarks.small_images import shrunk_copy, split_of, tiled_copy


def test_split_of_gives_seventy_fifteen_fifteen_per_class() -> None:
    assert Counter(split_of(index, 20) for index in range(20)) == {"train": 14, "val": 3, "test": 3}
    assert Counter(split_of(index, 100) for index in range(100)) == {"train": 70, "val": 15, "test": 15}


def test_tiles_are_the_side_asked_for_and_each_image_stays_in_one_split(tiny_dataset: Path, tmp_path: Path) -> None:
    written = tiled_copy(tiny_dataset, tmp_path / "tiles", 16, seed=3)
    tiles = sorted((tmp_path / "tiles").rglob("*.png"))
    assert written == len(tiles) == 30 * 9  # 48 px images: 3 x 3 tiles each
    assert {Image.open(path).size for path in tiles} == {(16, 16)}
    split_of_source: dict[str, set[str]] = {}
    for path in tiles:
        split, class_name = path.relative_to(tmp_path / "tiles").parts[:2]
        split_of_source.setdefault(f"{class_name}/{path.stem.rsplit('_', 2)[0]}", set()).add(split)
    assert len(split_of_source) == 30 and all(len(splits) == 1 for splits in split_of_source.values())
    per_split = Counter(next(iter(splits)) for splits in split_of_source.values())
    assert per_split == {"train": 21, "val": 6, "test": 3}  # 10 images per class: 7 / 2 / 1 (70/15/15 rounded)
    # Another seed puts other images in the held-out splits.
    tiled_copy(tiny_dataset, tmp_path / "other", 16, seed=4)
    assert sorted(p.name for p in (tmp_path / "other" / "test").rglob("*.png")) != sorted(p.name for p in (tmp_path / "tiles" / "test").rglob("*.png"))


def test_shrunk_copy_keeps_relative_paths_and_shrinks(tiny_dataset: Path, tmp_path: Path) -> None:
    assert shrunk_copy(tiny_dataset, tmp_path / "small", 20) == 30
    copies = sorted((tmp_path / "small").rglob("*.png"))
    assert {path.parent.name for path in copies} == {"circles", "squares", "stripes"}
    assert {Image.open(path).size for path in copies} == {(20, 20)}
