"""Small-image copies of a dataset, for measuring what the advice does with images far below the network's size.

Two ways to make them, each written into a folder the caller owns (``python -m benchmarks.quality DATA --tiles 64``
or ``--shrink 64``):

- ``shrunk_copy``: every image shrunk to a square of ``side`` pixels: the same images and splits, each with less
  detail (a 64 px copy of the aerial scenes: 2,100 blurred scenes).
- ``tiled_copy``: every image cut into squares of ``side`` pixels at its own resolution: many more images, each a
  part of a scene (the aerial scenes in 64 px tiles: 33,600 tiles, as a satellite set of tens of thousands of small
  tiles is). The tiles of one image share its content, so they all go to the same split (``train/``, ``val/`` or
  ``test/``, 70/15/15 per class, seeded; given split folders are not kept): a tile of a training scene in the
  held-out split would flatter every recipe.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image

from tl_core.data.scan import scan_dataset

TRAIN_SHARE, VAL_SHARE = 0.70, 0.15  # the rest of each class is the held-out test split


def class_images(data: Path) -> dict[str, list[Path]]:
    """The readable images of each class of ``data``, as the product's scanner finds them, sorted by path."""
    classes: dict[str, list[Path]] = {}
    for record in scan_dataset(data).records:
        classes.setdefault(record.class_name, []).append(Path(record.path))
    return {name: sorted(paths) for name, paths in sorted(classes.items())}


def split_of(index: int, count: int) -> str:
    """The split of the ``index``-th of ``count`` shuffled images of a class: 70 % train, 15 % val, the rest test (each rounded up from a half)."""
    train = math.floor(TRAIN_SHARE * count + 0.5)
    val = math.floor(VAL_SHARE * count + 0.5)
    return "train" if index < train else "val" if index < train + val else "test"


def shrunk_copy(data: Path, target: Path, side: int) -> int:
    """Writes every image of ``data`` shrunk to ``side`` x ``side`` px (Lanczos) under ``target``, at the same relative path
    (so given ``train/``/``val/`` folders stay as they are); returns the count."""
    records = scan_dataset(data).records
    for record in records:
        path = (target / record.relative_path).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(record.path) as image:
            image.convert("RGB").resize((side, side), Image.LANCZOS).save(path)
    return len(records)


def tiled_copy(data: Path, target: Path, side: int, seed: int = 0) -> int:
    """Cuts every image of ``data`` into ``side`` px squares under ``target/{train,val,test}/CLASS``; returns the tiles written.

    Each image is first brought to the nearest multiple of ``side`` on each axis (so every pixel lands in a tile at
    about the image's own resolution); its tiles share its split.
    """
    written = 0
    generator = random.Random(seed)
    for name, images in class_images(data).items():
        order = list(images)
        generator.shuffle(order)
        for index, path in enumerate(order):
            folder = target / split_of(index, len(order)) / name
            folder.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                image = image.convert("RGB")
                columns, rows = max(1, round(image.width / side)), max(1, round(image.height / side))
                image = image.resize((columns * side, rows * side), Image.LANCZOS)
                for row in range(rows):
                    for column in range(columns):
                        box = (column * side, row * side, (column + 1) * side, (row + 1) * side)
                        image.crop(box).save(folder / f"{path.stem}_{row}_{column}.png")
                        written += 1
    return written
