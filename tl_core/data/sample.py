"""A built-in sample dataset that needs no download.

scikit-learn ships the UCI handwritten digits (8x8 grey images, 16 levels)
inside its package. ``write_sample_dataset`` writes a few classes of them as
upscaled PNG files in the usual one-folder-per-class layout, so a first-time
user can walk the whole path in about a minute. Handwritten strokes are quite
unlike ImageNet photos, which makes it a good case for the scenario page too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_NAME = "digits"
SAMPLE_DESCRIPTION = (
    "Handwritten digits 0-3 from scikit-learn's bundled UCI digits set: 4 classes x 60 grey 8x8 scans, "
    "upscaled to 64x64 PNG. Needs no download."
)
SAMPLE_CLASSES = ("0", "1", "2", "3")


def write_sample_dataset(folder: Path, images_per_class: int = 60, size: int = 64) -> Path:
    """Writes the sample dataset into ``folder`` (created if needed) and returns the folder.

    Args:
        folder: Where the class folders go.
        images_per_class: Images of each digit (the bundled set has about 180).
        size: Side of the written PNG images.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    for label, name in enumerate(SAMPLE_CLASSES):
        class_folder = folder / name
        class_folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(digits.target == label)[:images_per_class]
        for number, index in enumerate(indices):
            # The scans hold 0 (paper) to 16 (ink): draw dark ink on white paper, as a photo would show it.
            grey = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
            Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC).save(class_folder / f"digit{name}_{number:03d}.png")
    return folder
