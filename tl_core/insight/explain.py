"""Why the model decides as it does: class activation maps from gradients (Grad-CAM).

For one image and one class, Grad-CAM weighs each channel of the backbone's
last convolutional feature map by how much the class's probability rises
with it (the gradient, averaged over the map), sums the weighted channels and
keeps the positive part: the regions that speak for the class. Every
backbone in the table is built without its classifier top, so its output *is*
its last convolutional block (MobileNetV2's ``out_relu``, ResNet50's
``conv5_block3_out``, ...), the map the pooling layer averages; that map is
what is explained here, for every backbone alike.

Where the features also pool earlier layers' maps (MobileNetV2), each map's
channels are weighed by the head's gradient at their part of the features, and
the maps, brought to the image's size, are added: the finer earlier maps sharpen
the coarse last one (``_level_maps``).

The map is computed on the image as given (a model with the test-time flip
inside is explained through its classifier, without the mirror image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl_core.errors import ConfigError, RunError


@dataclass(frozen=True)
class Explanation:
    """A class activation map of one image.

    Attributes:
        heatmap: ``(size, size)`` values in 0..1, the image's size; 1 where the class's evidence is strongest.
        class_index: The class explained.
        probabilities: The classifier's probabilities for the image (without the test-time flip).
        grid: Height and width of the feature map the heatmap was upsampled from.
    """

    heatmap: np.ndarray
    class_index: int
    probabilities: np.ndarray
    grid: tuple[int, int]


def classifier_parts(model):
    """The layers before the backbone, the backbone, and the layers after it (pooling and head) of a run's model.

    Raises:
        RunError: When the model is not shaped like the classifiers this package builds.
    """
    import keras

    from tl_core.models.build import inner_classifier

    classifier = inner_classifier(model)
    layers = [layer for layer in classifier.layers if not isinstance(layer, keras.layers.InputLayer)]
    # The backbone: the nested model whose (last) output is a feature map. It has several outputs when earlier layers' maps
    # are pooled into the features too (``tl_core.models.build.feature_maps``).
    nested = [index for index, layer in enumerate(layers) if isinstance(layer, keras.Model) and len(layer.outputs[-1].shape) == 4]
    if not nested:
        raise RunError(f"The model '{classifier.name}' has no backbone with a convolutional feature map to explain.")
    position = nested[0]
    return layers[:position], layers[position], layers[position + 1 :]


def explain(model, pixels: np.ndarray, class_index: int | None = None) -> Explanation:
    """The Grad-CAM map of ``pixels`` (RGB 0-255, the model's size) for ``class_index`` (None: the predicted class).

    Written with ``keras.ops``; the gradient comes from ``tl_core.backend.value_and_gradients``, so the
    map is computed the same way on TensorFlow, JAX and PyTorch.
    """
    from keras import ops

    from tl_core.backend import value_and_gradients

    before, backbone, after = classifier_parts(model)
    x = ops.convert_to_tensor(np.asarray(pixels, dtype=np.float32)[None])
    for layer in before:
        x = layer(x)
    maps = backbone(x, training=False)
    levels = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    if len(levels) > 1:  # the features pool earlier layers' maps too (``tl_core.models.build.pooled_features``)
        start, head = after[0](levels, training=False), after[1:]
    else:
        start, head = levels[0], after

    def probabilities_from(tensors):
        y = tensors[0]
        for layer in head:
            y = layer(y, training=False)
        return ops.cast(y, "float32")[0]

    probabilities = ops.convert_to_numpy(probabilities_from([start])).astype(np.float64)
    chosen = int(np.argmax(probabilities)) if class_index is None else int(class_index)
    if not 0 <= chosen < len(probabilities):
        raise ConfigError(f"Class index {chosen} is out of range: the model has {len(probabilities)} classes.")
    _, _, (gradients,) = value_and_gradients(lambda tensors: (probabilities_from(tensors)[chosen], None), [start])
    gradients = ops.cast(gradients, "float32")[0]
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    if len(levels) == 1:
        weights = ops.mean(gradients, axis=(0, 1))
        cams = [ops.sum(ops.cast(levels[0], "float32")[0] * weights, axis=-1)]
    else:
        cams = _level_maps(ops, [ops.cast(level, "float32")[0] for level in levels], gradients)
    heatmap = sum(ops.convert_to_numpy(ops.image.resize(cam[..., None], size, interpolation="bilinear"))[..., 0] for cam in cams)
    heatmap = np.maximum(heatmap, 0.0)
    grid = (int(cams[0].shape[0]), int(cams[0].shape[1]))
    peak = float(heatmap.max())
    heatmap = heatmap / peak if peak > 0 else np.zeros_like(heatmap)
    return Explanation(heatmap.astype(np.float32), chosen, probabilities, grid)


def _level_maps(ops, levels: list, gradients) -> list:
    """Each level's signed class map, where the features join several maps' pooled parts, each at unit length.

    The head's gradient at a level's part of the features, divided by that part's length before normalising, weighs
    its channels; the normalisation's own projection is left out: it would cancel every map's mean, and a map of one
    position would always read zero. Each map's share of the class score is then spread over its positions, so the
    maps add up, finest first (that map's grid is the explanation's).
    """
    maps, offset = [], 0
    for level in levels:
        channels = int(level.shape[-1])
        pooled = ops.mean(level, axis=(0, 1))
        length = ops.maximum(ops.sqrt(ops.sum(pooled * pooled)), 1e-12)
        maps.append(ops.sum(level * (gradients[offset : offset + channels] / length), axis=-1))
        offset += channels
    return maps


def overlay(pixels: np.ndarray, heatmap: np.ndarray, strength: float = 0.55) -> np.ndarray:
    """The image with the heatmap laid over it (blue = none, through yellow, to red = strongest), ``uint8`` RGB."""
    heat = np.clip(heatmap, 0.0, 1.0)[..., None]
    # A small colour ramp: dark blue -> cyan -> yellow -> red, interpolated.
    stops = np.array([[20, 40, 140], [0, 200, 220], [250, 230, 40], [220, 30, 30]], dtype=np.float32)
    position = heat[..., 0] * (len(stops) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(stops) - 2)
    fraction = (position - low)[..., None]
    colours = stops[low] * (1 - fraction) + stops[low + 1] * fraction
    alpha = strength * (0.25 + 0.75 * heat)
    blended = np.asarray(pixels, dtype=np.float32) * (1 - alpha) + colours * alpha
    return np.clip(blended, 0, 255).astype(np.uint8)


def explain_file(run, path: str | os.PathLike, class_name: str | None = None) -> tuple[Explanation, np.ndarray]:
    """The map of one image file for a loaded run (``tl_core.runs.folder.TrainedRun``), and the image as the model saw it.

    Raises:
        ConfigError: For a class name the run does not have.
        DataError: When the image cannot be read.
    """
    from tl_core.data.images import load_image
    from tl_core.models.build import inner_classifier

    class_index = None
    if class_name is not None:
        if class_name not in run.class_names:
            raise ConfigError(f"'{class_name}' is not a class of this run. Its classes: {', '.join(run.class_names)}.")
        class_index = run.class_names.index(class_name)
    inner = inner_classifier(run.model).input_shape[1]  # a model with a centre crop explains the middle it keeps
    pixels = load_image(Path(path), inner, centre_crop=inner != run.image_size)
    return explain(run.model, pixels, class_index), pixels
