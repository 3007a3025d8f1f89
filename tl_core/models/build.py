"""Building blocks of a classifier: backbone with its weights, preprocessing, head, augmentation.

Every model this package builds has the same shape, so the file a user
downloads is the same kind of object whatever strategy trained it::

    image (RGB, 0-255, size x size)
      -> preprocessing (standard layers: Rescaling, or a fixed per-channel Dense)
      -> backbone (keras.applications, no top)
      -> global average pooling        ("bottleneck features"; for a backbone with
                                        ``feature_layers``, of earlier layers too, see ``pooled_features``)
      -> head (dropout, optional hidden layer, softmax)

No Lambda layers and no custom classes are used, so ``keras.models.load_model``
opens the exported files in any Python with Keras, without this package.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from tl_core.data.images import framed_size
from tl_core.errors import ConfigError
from tl_core.features import MIRRORED, ORIGINAL, VIEW_TRANSFORMS
from tl_core.models.backbones import BackboneSpec
from tl_core.models.weights import weights_error

# The per-channel constants keras.applications' preprocess_input functions use.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def build_backbone(spec: BackboneSpec, weights: str) -> keras.Model:
    """Builds a backbone without its classifier top, with the requested starting weights.

    The backbone takes images of any size (``input_shape=(None, None, 3)``),
    so one weights file serves every image size; for the MobileNets this
    means Keras uses its 224-pixel ImageNet weights whatever size is trained.

    Args:
        spec: The backbone's row in the table.
        weights: ``"imagenet"`` (Keras' download-and-cache), ``"none"`` (random
            initialisation) or the path of a weights file.

    Returns:
        The backbone model.

    Raises:
        WeightsError: When the ImageNet weights cannot be downloaded or a file does not fit.
    """
    if spec.members:
        return _joined_backbone(spec, weights)
    constructor = getattr(keras.applications, spec.constructor)
    keras_weights = None if weights == "none" else weights
    try:
        with warnings.catch_warnings():
            # Expected: with no fixed input size Keras loads the default-size weights, which is what we want.
            warnings.filterwarnings("ignore", message=".*Weights for input shape.*will be loaded as the default")
            return constructor(include_top=False, weights=keras_weights, input_shape=(None, None, 3), **dict(spec.constructor_kwargs))
    except Exception as error:  # noqa: BLE001 - translated into a message that says what to do
        raise weights_error(spec, weights, error) from error


def _joined_backbone(spec: BackboneSpec, weights: str) -> keras.Model:
    """A joined backbone: its networks side by side on the same (preprocessed) images, every feature map of each an output.

    Only ImageNet or random weights: a weights file fits one network, not the pair.
    """
    if weights not in ("imagenet", "none"):
        raise ConfigError(
            f"{spec.display_name} joins two networks, so one weights file cannot start it. "
            "Use --weights imagenet (or none), or choose one of the networks as the backbone."
        )
    inputs = keras.Input(shape=(None, None, 3), name="joined_input")
    maps = []
    for member in spec.member_specs:
        outputs = feature_maps(member, build_backbone(member, weights))(inputs)
        maps += list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return keras.Model(inputs, maps, name=_model_name(spec))


def _model_name(spec: BackboneSpec) -> str:
    """The spec's name as a Keras model name (no dots or plus signs, which graph scopes refuse)."""
    return spec.name.replace(".", "_").replace("+", "_and_")


def preprocessing_layers(mode: str) -> list[keras.layers.Layer]:
    """Standard Keras layers that turn 0-255 RGB into what a backbone expects.

    Args:
        mode: ``"tf"`` (scale to -1..1), ``"caffe"`` (RGB to BGR, subtract the
            ImageNet mean), ``"torch"`` (scale to 0..1, standardise per channel)
            or ``"none"`` (the backbone preprocesses by itself).

    Returns:
        The layers to apply in order (possibly none). They run in float32.
    """
    if mode == "none":
        return []
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_scale", dtype="float32")]
    if mode == "caffe":
        # A fixed 1x1 linear map over the channel axis: swap R and B, then subtract the mean.
        kernel = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
        bias = -np.array(_CAFFE_BGR_MEAN, dtype=np.float32)
    elif mode == "torch":
        std = np.array(_TORCH_STD, dtype=np.float32)
        kernel = np.diag(1.0 / (255.0 * std)).astype(np.float32)
        bias = -np.array(_TORCH_MEAN, dtype=np.float32) / std
    else:
        raise ValueError(f"Unknown preprocessing mode {mode!r}; expected tf, caffe, torch or none.")
    layer = keras.layers.Dense(
        3,
        name="preprocess_channels",
        trainable=False,
        dtype="float32",
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
    )
    return [layer]


def build_head(feature_dim: int, num_classes: int, hidden_units: int = 0, dropout: float = 0.2, seed: int = 0, parts: Sequence[int] = ()) -> keras.Model:
    """The new classifier that replaces the backbone's top: it reads pooled features.

    Args:
        feature_dim: Length of the pooled feature vector.
        num_classes: Number of output classes (softmax).
        hidden_units: Width of an optional hidden ReLU layer (0 for none).
        dropout: Dropout rate before each dense layer.
        seed: Seed of the initial weights.
        parts: For a joined backbone, the length of each network's part of the features, in
            order (``BackboneSpec.member_dims``): each part then gets a head of its own and
            the model averages their answers (``joined_head``).

    Returns:
        A model named ``head``. Its layers compute in float32 even under a
        mixed-precision policy: the head costs next to nothing, and its own training
        loop (``HeadTrainer``) then needs no loss scaling.
    """
    if len(parts) > 1:
        return joined_head(parts, num_classes, hidden_units, dropout, seed)
    return keras.Sequential([keras.Input(shape=(feature_dim,), name="features"), *_head_layers(num_classes, hidden_units, dropout, seed)], name="head")


def _head_layers(num_classes: int, hidden_units: int, dropout: float, seed: int, prefix: str = "") -> list[keras.layers.Layer]:
    """``build_head``'s layers after its input (``prefix``: before their names, for a second head in one model)."""
    layers: list[keras.layers.Layer] = []
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout, seed=seed, dtype="float32", name=f"{prefix}head_dropout"))
    if hidden_units > 0:
        layers.append(
            keras.layers.Dense(hidden_units, activation="relu", dtype="float32", name=f"{prefix}head_hidden", kernel_initializer=keras.initializers.GlorotUniform(seed))
        )
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, seed=seed + 1, dtype="float32", name=f"{prefix}head_hidden_dropout"))
    initializer = keras.initializers.GlorotUniform(seed + 2)
    layers.append(keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=f"{prefix}predictions", kernel_initializer=initializer))
    return layers


# The layer that averages the joined networks' heads; ``HeadTrainer`` trains each head on its own answers.
MEAN_OVER_NETWORKS = "mean_over_networks"


def joined_head(parts: Sequence[int], num_classes: int, hidden_units: int = 0, dropout: float = 0.2, seed: int = 0) -> keras.Model:
    """One head per network of a joined backbone, each reading its network's part of the features; their answers averaged.

    Each head learns from its own answers (``tl_core.training.loops.HeadTrainer``). Over three
    seeds this made fewer errors than one head on the joined features on cat breeds (0.864
    against 0.855), the same on aerial scenes, and one image per seed more on ants and bees; the
    probe on every image read it ahead on all three (docs/benchmarks.md). Each part is cut out
    with standard layers (``Reshape`` and ``Cropping1D``), so the saved file loads in any Keras,
    in safe mode.
    """
    total = int(sum(parts))
    inputs = keras.Input(shape=(total,), name="features")
    column = keras.layers.Reshape((total, 1), name="features_as_column")(inputs)
    answers, start = [], 0
    for index, length in enumerate(parts):
        cut = keras.layers.Cropping1D((start, total - start - length), name=f"part_{index}_cut")(column)
        part = keras.layers.Reshape((length,), name=f"part_{index}")(cut)
        for layer in _head_layers(num_classes, hidden_units, dropout, seed + 3 * index, prefix=f"part_{index}_"):
            part = layer(part)
        answers.append(part)
        start += length
    outputs = keras.layers.Average(name=MEAN_OVER_NETWORKS, dtype="float32")(answers)
    return keras.Model(inputs, outputs, name="head")


def build_classifier(
    spec: BackboneSpec,
    backbone: keras.Model,
    head: keras.Model,
    image_size: int,
    backbone_in_inference_mode: bool = True,
) -> tuple[keras.Model, keras.Model]:
    """Joins preprocessing, backbone, pooling and head into one model.

    Args:
        spec: The backbone's row in the table (for its preprocessing).
        backbone: The backbone model.
        head: The head model.
        image_size: Side of the square input images.
        backbone_in_inference_mode: Call the backbone with ``training=False`` so its
            BatchNormalization layers keep their ImageNet statistics even when
            layers are unfrozen (the fine-tuning pitfall the articles warn about).
            False only when training from scratch, where there are no statistics yet.

    Returns:
        ``(classifier, feature_model)``: the whole model and the model up to the pooled features.
    """
    feature_model = build_feature_model(spec, backbone, image_size, backbone_in_inference_mode)
    classifier = keras.Model(feature_model.input, head(feature_model.output), name=f"{_model_name(spec)}_classifier")
    return classifier, feature_model


def build_feature_model(spec: BackboneSpec, backbone: keras.Model, image_size: int, backbone_in_inference_mode: bool = True) -> keras.Model:
    """Preprocessing, backbone and pooling: from RGB images 0-255 to the pooled ("bottleneck") features.

    See ``build_classifier`` for ``backbone_in_inference_mode``.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    features = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        features = layer(features)
    maps_model = feature_maps(spec, backbone)
    if backbone_in_inference_mode:
        maps = maps_model(features, training=False)
    else:
        maps = maps_model(features)
    return keras.Model(inputs, pool_maps(spec, maps), name=f"{_model_name(spec)}_features")


def pool_maps(spec: BackboneSpec, maps):
    """The feature vector of ``feature_maps``' outputs: the last map averaged, or, with ``feature_layers``, ``pooled_features``."""
    if len(spec.map_channels) == 1:
        return keras.layers.GlobalAveragePooling2D(name="pooled_features")(maps[0] if isinstance(maps, (list, tuple)) else maps)
    return pooled_features(spec)(maps)


def feature_maps(spec: BackboneSpec, backbone: keras.Model) -> keras.Model:
    """The backbone with an output at each of the spec's ``feature_layers`` and its last output last (the backbone itself when it has none).

    The model shares the backbone's layers, so freezing or training them acts on both. A joined
    backbone (``spec.members``) has every map as an output already.
    """
    if not spec.feature_layers or spec.members:
        return backbone
    outputs = [backbone.get_layer(name).output for name in spec.feature_layers] + [backbone.output]
    return keras.Model(backbone.inputs, outputs, name=backbone.name)


def pooled_features(spec: BackboneSpec) -> keras.Model:
    """From the feature maps of ``feature_maps`` to one feature vector, as a model of standard layers.

    Each map is averaged over its positions and brought to unit length, so a wide
    layer does not outweigh a narrow one; the joined vector is scaled to a mean
    square of 1 per feature, about the size the head's learning rate expects.
    Earlier layers respond to textures and parts rather than whole objects. With
    MobileNetV2's three, feature extraction made 23 % fewer errors on aerial scenes
    and 11 % fewer on cat breeds (three seeds each), the same on cats_dogs, and one
    fewer on ants_bees (docs/benchmarks.md).
    """
    channels = list(spec.map_channels)
    inputs = [keras.Input(shape=(None, None, width), name=f"map_{index}") for index, width in enumerate(channels)]
    units = [
        keras.layers.UnitNormalization(name=f"unit_{index}", dtype="float32")(keras.layers.GlobalAveragePooling2D(name=f"pool_{index}", dtype="float32")(tensor))
        for index, tensor in enumerate(inputs)
    ]
    joined = keras.layers.Concatenate(name="joined", dtype="float32")(units)
    scaled = keras.layers.Rescaling(float(np.sqrt(spec.feature_dim / len(channels))), name="scaled", dtype="float32")(joined)
    return keras.Model(inputs, scaled, name="pooled_features")


def mirror_layers(image_size: int, prefix: str = "") -> list[keras.layers.Layer]:
    """Standard Keras layers that mirror an image left to right, exactly (``prefix``: before their names, to use them more than once in a model).

    Keras has no deterministic flip layer, and a Lambda layer would not load in
    safe mode, so the mirror is written as a fixed linear map: move the width
    axis last, multiply by the reversed identity matrix (a frozen ``Dense``
    without bias: each output pixel is one input pixel times 1), move it back.
    The matrix is the layer's weight, set once the layer is built, and not its
    initializer: an initializer's values go into the file's model description as
    text, where eight views' matrices took 4 MB at 224 px, beside the weights.
    """
    reverse = keras.layers.Dense(image_size, use_bias=False, trainable=False, dtype="float32", kernel_initializer="zeros", name=f"{prefix}mirror_reverse_width")
    reverse.build((None, None, None, image_size))
    reverse.kernel.assign(np.eye(image_size, dtype=np.float32)[::-1])
    return [keras.layers.Permute((1, 3, 2), name=f"{prefix}mirror_width_last"), reverse, keras.layers.Permute((1, 3, 2), name=f"{prefix}mirror_width_back")]


def view_layers(view: str, image_size: int) -> list[keras.layers.Layer]:
    """Standard Keras layers that show a square image as ``view`` does (``tl_core.features.view_of``), exactly.

    A quarter turn counter-clockwise is a mirror image with its rows and columns swapped, so
    every view is made of the mirror's fixed layers and a ``Permute``.
    """
    turns, mirrored = VIEW_TRANSFORMS[view]
    layers = mirror_layers(image_size) if view == MIRRORED else mirror_layers(image_size, f"{view}_0_") if mirrored else []
    for turn in range(1, turns + 1):
        layers += [*mirror_layers(image_size, f"{view}_{turn}_"), keras.layers.Permute((2, 1, 3), name=f"{view}_{turn}_swap_rows_and_columns")]
    return layers


def with_test_time_flip(classifier: keras.Model, image_size: int, views: Sequence[str] = (ORIGINAL, MIRRORED)) -> keras.Model:
    """The classifier averaged over each image and its mirror image (test-time augmentation), as one model; ``views``: over those instead.

    A photo of a dog facing left is still a dog facing right; averaging the two
    predictions removes some of the noise in either. An aerial scene is the same scene
    turned, and there the turned views (``tl_core.features.TURNED_VIEWS``) are averaged too.
    Being one model of standard layers, the saved file gives the same answers in any Keras,
    without this package.
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    answers = []
    for view in views:
        shown = inputs
        for layer in view_layers(view, image_size):
            shown = layer(shown)
        answers.append(classifier(shown))
    name = "mean_over_mirror" if list(views) == [ORIGINAL, MIRRORED] else "mean_over_views"
    outputs = keras.layers.Average(name=name, dtype="float32")(answers)
    return keras.Model(inputs, outputs, name=f"{classifier.name}_with_{'mirror' if name == 'mean_over_mirror' else 'views'}")


def with_centre_crop(model: keras.Model, image_size: int) -> keras.Model:
    """``model`` on the middle ``image_size`` pixels of larger images (``tl_core.data.images.framed_size``), as one model.

    A user resizes the whole picture to the model's input, as for any model; the ``CenterCrop``
    layer (a standard one, which loads in safe mode) keeps the same middle that training read
    (``load_image``'s ``centre_crop``).
    """
    outer = framed_size(image_size)
    inputs = keras.Input(shape=(outer, outer, 3), name="image")
    middle = keras.layers.CenterCrop(image_size, image_size, name="centre_crop", dtype="float32")(inputs)
    return keras.Model(inputs, model(middle), name=f"{model.name}_centre")


def without_centre_crop(model: keras.Model) -> keras.Model:
    """The model inside one made by ``with_centre_crop``, which reads the middles themselves (the model itself when it has no crop)."""
    if any(layer.name == "centre_crop" for layer in model.layers):
        return next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model


def inner_classifier(model: keras.Model) -> keras.Model:
    """The classifier inside the views a saved model adds: the mirror images or turns of ``with_test_time_flip``, the crop of ``with_centre_crop`` (the model itself when it has none)."""
    model = without_centre_crop(model)
    if not any(layer.name in ("mean_over_mirror", "mean_over_views") for layer in model.layers):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def freeze_layers(backbone: keras.Model, frozen: int, train_batchnorm: bool = False) -> None:
    """Freezes the backbone's first ``frozen`` layers and unfreezes the rest.

    BatchNormalization layers stay frozen unless ``train_batchnorm``: their
    statistics were learned on ImageNet, and updating them on a small batch of
    new images is the usual way fine-tuning collapses accuracy.

    Raises:
        ConfigError: When ``frozen`` is outside 0..number of layers.
    """
    count = len(backbone.layers)
    if not 0 <= frozen <= count:
        raise ConfigError(f"freeze_layers is {frozen} but the backbone has {count} layers. Use a number from 0 to {count}.")
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= frozen and (train_batchnorm or not is_batchnorm)


def trainable_parameter_count(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
