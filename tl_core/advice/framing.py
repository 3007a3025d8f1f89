"""Whole images or their middles: which one feature extraction reads better, measured on the advice's sample.

Pets, plants and products are mostly photographed in the middle of the frame. Read from the
middle of the photo (``tl_core.data.images.CENTRE_SHARE`` of each side), they fill more of the
network's input, at the size ImageNet's training crops showed such objects. Scenes and surfaces
carry their classes to the edges, and lose them. A cross-validated probe over every image read
the middles 1.9 points better on ants and bees, 0.6 better on cat breeds and 1.1 worse on aerial
scenes (docs/benchmarks.md), so the advice reads both on its sample, with the same images and
folds, and takes the middles only where their gain stands out from the paired difference's noise.
A run costs the same either way: the middles are decoded instead of the whole images.
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_core.data.records import Dataset
from tl_core.features import ORIGINAL, cached_features, view_keys
from tl_core.models.backbones import get_backbone

# The most of feature extraction's errors reading the middles is taken to remove (about half on ants and bees): where even
# that stays under half a point, the probe cannot change the advice and is skipped.
CENTRE_BEST_ERROR_CUT = 1 / 2
WORTH_A_PROBE_POINTS = 0.005


@dataclass(frozen=True)
class CropProbe:
    """Feature extraction's probe on the middles of the advice's sample against the same probe on the whole images.

    Attributes:
        probe_accuracy: The probe on the images' middles.
        baseline_accuracy: The same probe on the whole images: the same images and folds.
        difference_error: The standard error of the paired difference, image by image.
        images: The images the probes learned from.
    """

    probe_accuracy: float
    baseline_accuracy: float
    difference_error: float
    images: int

    @property
    def credited_difference(self) -> float:
        """The middles' gain over the whole images, less one standard error: what counts of a gain that may be chance."""
        return self.probe_accuracy - self.baseline_accuracy - self.difference_error

    @property
    def pays(self) -> bool:
        """The middles read better than the whole images by more than the probe's noise."""
        return self.credited_difference > 0

    def words(self) -> str:
        """``91.0% against 89.5% (+1.5 ± 0.8 points)``."""
        gain = 100 * (self.probe_accuracy - self.baseline_accuracy)
        return f"{self.probe_accuracy:.1%} against {self.baseline_accuracy:.1%} ({gain:+.1f} ± {100 * self.difference_error:.1f} points)"


def worth_probing(expected_accuracy: float) -> bool:
    """Whether the middles could add half a point to feature extraction expected at ``expected_accuracy``."""
    return (1.0 - expected_accuracy) * CENTRE_BEST_ERROR_CUT - WORTH_A_PROBE_POINTS > 1e-9  # 99.0 % exactly is not worth it


def probe_centre_crop(dataset: Dataset, backbone: str, sample_size: int, cache_dir: str | None = None, seed: int = 0, images_to_come: int = 0) -> CropProbe | None:
    """The advice's probe read on the middles of its sample and on the whole images (None where the two samples differ).

    The whole images' features come from the cache, where the similarity measurement left them; the middles' are
    computed and cached under the sample's keys, which are training's keys where the sample is the whole dataset.
    The probe reads the images alone, without their mirror images: these would double its passes of the backbone
    (19 s with them on 397 images, 10 s without, 2 cores), and mirroring helps both framings alike.
    """
    from tl_core.advice.similarity import decoded_sample, paired_error, probe_right
    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_runner

    spec = get_backbone(backbone)
    size, weights = spec.default_size, weights_identity(spec, "imagenet")
    samples = [decoded_sample(dataset, size, sample_size, cache_dir, seed, centre_crop=crop) for crop in (False, True)]
    if not all(sample[1].all() for sample in samples):  # an image failed to decode: the features' cache keys would not fit
        return None
    runner = []

    def forward_of(view: str):
        if not runner:
            model = build_feature_model(spec, build_backbone(spec, "imagenet"), size)
            runner.append(backbone_runner(model, spec, weights, size, max(len(samples[0][2]), images_to_come), cache_dir=cache_dir))
        return runner[0].forward(view)

    rights = []
    for decoded, _, pixels, labels, labelled in samples:
        features, _ = cached_features(forward_of, pixels, view_keys(spec, weights, size, decoded.key), [ORIGINAL], cache_dir)
        rights.append(probe_right(features[ORIGINAL][labelled], labels[labelled], seed))
    whole, middle = rights
    return CropProbe(float(middle.mean()), float(whole.mean()), paired_error(middle, whole), len(whole))
