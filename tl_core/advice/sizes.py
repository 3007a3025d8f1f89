"""The input size as part of the advice: which sizes are worth weighing for the user's images.

A network pretrained at 224 px is usually run at 224 px, but small images (64 px satellite
tiles, 96 px microscope crops) upsampled to it cost every forward pass the square of the
factor, and may or may not gain from the network seeing them at the scale it learnt. The
candidates are the backbone's own size, the images' typical size (rounded to a multiple of
32, never far above their pixels) and one in between; each is then measured like a strategy
(``tl_core.advice.advise``): a probe at that size on the advice's sample, compared with the
probe at the network's size on the same images, for the expected accuracy, and its own
forward pass for the time. On a 64 px copy of aerial, 224 px won (0.943 against 0.889 at
128 px and 0.860 at 64 px), so a smaller size has to measure at least as well to be chosen.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tl_core.data.records import Dataset
from tl_core.models.backbones import BackboneSpec

STEP = 32  # sizes are multiples of this (every keras.applications backbone accepts them)
MAX_UPSAMPLING = 1.25  # the images' own candidate is at most this many times their typical short side
LARGE_ENOUGH = 0.875  # images at least this share of the backbone's size are run at its size only


@dataclass(frozen=True)
class SizeProbe:
    """Feature extraction measured at one input size on the advice's sample.

    Attributes:
        image_size: The square side the images were resized to.
        probe_accuracy: The cross-validated probe on the sample, as ``Measurement.probe_for_feature_extraction`` at the network's size.
        images_per_second: The backbone's forward pass at this size, measured here (None where not measured).
        backbone: The backbone probed, where it is not the advised one (a joined backbone: its candidate extracts features only).
        baseline_accuracy: For a joined backbone, the same probe on its first network's part of the features (same images, same folds).
        difference_error: The standard error of the paired difference between the two (image by image).
    """

    image_size: int
    probe_accuracy: float
    images_per_second: float | None
    backbone: str | None = None
    baseline_accuracy: float | None = None
    difference_error: float = 0.0

    @property
    def credited_difference(self) -> float | None:
        """The joined probe's gain over its first network's, less one standard error (None for a probe of one network).

        On a few hundred images a gain of a point or two can be chance: on ants_bees the joined probe read 0.8 points
        above MobileNetV2's and the run then scored 3 points under it. Only what is left beyond the paired difference's
        standard error counts, so the second network's cost is paid where the measurement stands out from its noise.
        """
        if self.baseline_accuracy is None:
            return None
        return self.probe_accuracy - self.baseline_accuracy - self.difference_error

    def expected_accuracy(self, measurement) -> float:
        """Feature extraction's expected accuracy at this size: the network's size's, moved by the probes' difference.

        Both probes ran on the same images and folds, so their difference is measured image for image;
        extending each probe's own learning curve would add the noise of two extrapolations.
        """
        credited = self.credited_difference
        difference = credited if credited is not None else self.probe_accuracy - measurement.probe_for_feature_extraction
        return min(max(measurement.feature_extraction_accuracy + difference, 0.0), 1.0)


def typical_side(dataset: Dataset) -> int:
    """The median short side of the images, in pixels (what resizing to a square keeps of each)."""
    return int(statistics.median(min(record.width, record.height) for record in dataset.records))


def candidate_sizes(typical: int, spec: BackboneSpec) -> list[int]:
    """The input sizes worth weighing for images whose short side is ``typical`` pixels, smallest first.

    Always the backbone's own size (``spec.default_size``). Where the images are smaller, also
    their own size, rounded down to a multiple of ``STEP`` that upsamples them at most
    ``MAX_UPSAMPLING`` times (never below what the backbone accepts), and the multiple of
    ``STEP`` nearest to the geometric middle of the two.
    """
    default = spec.default_size
    if typical >= LARGE_ENOUGH * default:
        return [default]
    smallest = STEP * math.ceil(spec.min_size / STEP)
    own = max(smallest, STEP * math.floor(typical * MAX_UPSAMPLING / STEP))
    if own >= default:
        return [default]
    middle = STEP * round(math.sqrt(own * default) / STEP)
    return sorted({own, middle, default})


def size_reason(chosen, rows, sizes: list[int], typical: int, default: int) -> str:
    """Why the advice runs the network at the recommended candidate's size (``chosen``, one of ``rows``), in one sentence."""
    from tl_core.training.estimate import duration_text

    size = chosen.image_size or default
    if len(sizes) == 1:
        return f"Image size {default} px, the network's own: your images' short side is typically {typical} px, so nothing is upsampled far."

    def expected(row) -> str:
        accuracy = f"~{row.expected_accuracy:.1%}" if row.expected_accuracy is not None else "accuracy unknown"
        return f"{accuracy} in about {duration_text(row.seconds)}"

    others = [row for row in rows if row.strategy == chosen.strategy and row is not chosen]
    compared = "; ".join(f"at {row.image_size or default} px {expected(row)}" for row in others)
    weighed = ", ".join(f"{value} px" for value in sizes)
    start = f"Image size {size} px" + (", the network's own" if size == default else "")
    against = f" ({chosen.title}: {expected(chosen)}; {compared})" if compared else ""
    upsampling = (
        f" At {default} px each image would be upsampled {default / typical:.1f}x, for {(default / size) ** 2:.0f}x the forward pass's time." if size != default else ""
    )
    return f"{start}: your images are typically {typical} px; of the sizes weighed ({weighed}), the recommended candidate runs at this one{against}.{upsampling}"
