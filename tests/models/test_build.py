"""Building the classifier: the mirror layers and the test-time flip model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_the_mirror_layers_mirror_exactly_and_the_flip_model_averages_both_answers(tmp_path: Path) -> None:
    import keras

    from tl_core.models.build import inner_classifier, mirror_layers, with_test_time_flip

    size = 12
    inputs = keras.Input((size, size, 3))
    # A model that is not symmetric: it looks at the left half only.
    left_half = keras.layers.Cropping2D(((0, 0), (0, size // 2)))(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=1))(keras.layers.Flatten()(left_half))
    classifier = keras.Model(inputs, outputs)
    # Small values, so the softmax does not saturate at 0 and 1 whichever half it sees.
    images = np.random.default_rng(1).uniform(0, 1, (4, size, size, 3)).astype("float32")

    mirrored = images
    for layer in mirror_layers(size):
        mirrored = layer(mirrored)
    np.testing.assert_array_equal(np.asarray(mirrored), images[:, :, ::-1])

    flip_model = with_test_time_flip(classifier, size)
    assert inner_classifier(flip_model) is classifier and inner_classifier(classifier) is classifier
    expected = (np.asarray(classifier(images)) + np.asarray(classifier(images[:, :, ::-1].copy()))) / 2
    np.testing.assert_allclose(np.asarray(flip_model(images)), expected, atol=1e-6)
    assert not np.allclose(expected, np.asarray(classifier(images)))  # the mirror image really changed the answer
    flip_model.save(tmp_path / "flip.h5")
    reloaded = keras.models.load_model(tmp_path / "flip.h5", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-6)
    # The reversed identity is the layer's weight, not its initializer's values written into the model's description.
    reverse = next(layer for layer in flip_model.layers if layer.name == "mirror_reverse_width")
    assert reverse.get_config()["kernel_initializer"]["class_name"] == "Zeros"
    np.testing.assert_array_equal(np.asarray(reverse.kernel), np.eye(size)[::-1])
    flip_model.save(tmp_path / "flip.keras")
    again = keras.models.load_model(tmp_path / "flip.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(images)), expected, atol=1e-6)


def test_the_features_pool_the_earlier_layers_too_and_the_saved_model_loads_without_this_package(tmp_path: Path) -> None:
    """MobileNetV2's feature vector joins its feature layers' pooled maps to the last one's; the files keep that."""
    import keras

    from tl_core.insight.explain import explain
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_classifier, build_head, feature_maps, freeze_layers

    spec = get_backbone("mobilenet_v2")
    assert spec.feature_layers, "MobileNetV2 is the backbone whose earlier layers were measured to help"
    size = 64
    backbone = build_backbone(spec, "none")
    classifier, feature_model = build_classifier(spec, backbone, build_head(spec.feature_dim, 3), size)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    features = np.asarray(feature_model(images))
    assert features.shape == (2, spec.feature_dim)
    # Each layer's part has unit length before the common scale: every part has the same length, and the
    # whole vector's mean square is 1.
    bounds = np.cumsum([0, *spec.feature_layers.values(), spec.last_channels])
    lengths = [np.linalg.norm(features[:, start:end], axis=1) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    np.testing.assert_allclose(lengths, np.full_like(np.asarray(lengths), lengths[0][0]), rtol=1e-4)
    np.testing.assert_allclose(np.mean(features**2, axis=1), 1.0, rtol=1e-4)
    # The last part is the last output, pooled: what the backbone alone gives, brought to the same length.
    last = np.asarray(keras.ops.mean(backbone(images / 127.5 - 1, training=False), axis=(1, 2)))
    np.testing.assert_allclose(features[:, bounds[-2]:] / lengths[-1][:, None], last / np.linalg.norm(last, axis=1, keepdims=True), atol=1e-4)
    # Freezing acts through the model that taps the earlier layers: it shares the backbone's layers.
    freeze_layers(backbone, 10)
    assert [layer.trainable for layer in feature_maps(spec, backbone).layers[:10]] == [layer.trainable for layer in backbone.layers[:10]]
    # Saved as .h5 and loaded by plain Keras in safe mode: the same answers.
    expected = np.asarray(classifier(images))
    classifier.save(tmp_path / "model.h5")
    reloaded = keras.models.load_model(tmp_path / "model.h5", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-5)
    # Grad-CAM explains the last map, with the earlier maps held, on the loaded file.
    explanation = explain(reloaded, images[0])
    np.testing.assert_allclose(explanation.probabilities, expected[0], atol=1e-5)
    assert explanation.grid == (16, 16)  # the finest map pooled: block 3's, at a quarter of the image's side
    # At 32 px the last map has one position: the normalisation of the pooled maps must not cancel the explanation
    # (its gradient alone would, always, at every level).
    small = build_classifier(spec, backbone, build_head(spec.feature_dim, 3), 32)[0]
    picture = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype("float32")
    peaks = [float(explain(small, picture, class_index=index).heatmap.max()) for index in range(3)]
    assert explain(small, picture).grid == (8, 8) and max(peaks) == 1.0


def test_the_joined_backbone_runs_both_networks_on_one_image_and_its_files_load_without_this_package(tmp_path: Path, imagenet_weights: Path) -> None:
    """MobileNetV2 and MobileNet 0.75 side by side, with their real weights: every map of each pooled, both files load in plain Keras, Grad-CAM reads both."""
    import keras

    from tl_core.insight.explain import explain
    from tl_core.models.backbones import get_backbone
    from tl_core.models.blocks import blocks_from_layer_names
    from tl_core.models.build import build_backbone, build_classifier, build_head, freeze_layers

    spec = get_backbone("mobilenet_v2+mobilenet_0.75")
    size = 64
    if not all((imagenet_weights.parent / name).is_file() for name in spec.weights_files):
        pytest.skip(f"skipped: the real weights {', '.join(spec.weights_files)} are not all in {imagenet_weights.parent}")
    backbone = build_backbone(spec, "imagenet")
    assert [int(output.shape[-1]) for output in backbone.outputs] == list(spec.map_channels)
    # Its layers are the two networks: one block each on the Setup page's map.
    assert [block.name for block in blocks_from_layer_names(spec, [layer.name for layer in backbone.layers])] == ["input", "MobileNetV2", "MobileNet 0.75"]
    freeze_layers(backbone, len(backbone.layers))  # feature extraction: nothing in either network trains
    assert not backbone.trainable_weights
    classifier, feature_model = build_classifier(spec, backbone, build_head(spec.feature_dim, 3), size)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    features = np.asarray(feature_model(images))
    assert features.shape == (2, 2960) and spec.feature_dim == 2960
    # Every map's part at the same length, so neither network outweighs the other.
    bounds = np.cumsum([0, *spec.map_channels])
    lengths = np.array([np.linalg.norm(features[:, start:end], axis=1) for start, end in zip(bounds[:-1], bounds[1:], strict=True)])
    np.testing.assert_allclose(lengths, lengths.max(), rtol=1e-4)
    expected = np.asarray(classifier(images))
    for name in ("model.h5", "model.keras"):
        classifier.save(tmp_path / name)
        reloaded = keras.models.load_model(tmp_path / name, safe_mode=True)
        np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-5)
    explanation = explain(reloaded, images[0])
    np.testing.assert_allclose(explanation.probabilities, expected[0], atol=1e-5)
    assert explanation.grid == (16, 16) and explanation.heatmap.max() == 1.0


def test_every_view_layer_chain_shows_the_image_as_the_feature_pass_does_and_the_eight_view_model_saves(tmp_path: Path) -> None:
    """The file's test-time views and the cached features' views must be the same eight images, pixel for pixel."""
    import keras

    from tl_core.features import VIEW_TRANSFORMS, view_of
    from tl_core.models.build import inner_classifier, view_layers, with_test_time_flip

    size = 10
    images = np.random.default_rng(2).uniform(0, 1, (3, size, size, 3)).astype("float32")
    shown = {}
    for view in VIEW_TRANSFORMS:
        pixels = images
        for layer in view_layers(view, size):
            pixels = layer(pixels)
        shown[view] = np.asarray(pixels)
        np.testing.assert_array_equal(shown[view], view_of(images, view))
    assert len({array.tobytes() for array in shown.values()}) == 8  # eight different views of a random image
    np.testing.assert_array_equal(view_of(images, "turned_90"), np.rot90(images, 1, axes=(1, 2)))

    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=3))(keras.layers.Flatten()(inputs))
    classifier = keras.Model(inputs, outputs)
    model = with_test_time_flip(classifier, size, list(VIEW_TRANSFORMS))
    assert inner_classifier(model) is classifier
    expected = np.mean([np.asarray(classifier(view_of(images, view))) for view in VIEW_TRANSFORMS], axis=0)
    np.testing.assert_allclose(np.asarray(model(images)), expected, atol=1e-6)
    model.save(tmp_path / "views.h5")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "views.h5", safe_mode=True)(images)), expected, atol=1e-6)


def test_the_centre_crop_model_takes_the_larger_frame_and_answers_for_its_middle(tmp_path: Path) -> None:
    import keras

    from tl_core.models.build import inner_classifier, with_centre_crop, with_test_time_flip

    size = 16
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=2))(keras.layers.Flatten()(inputs))
    classifier = keras.Model(inputs, outputs)
    flipped = with_test_time_flip(classifier, size)
    model = with_centre_crop(flipped, size)
    assert model.input_shape == (None, 20, 20, 3)
    images = np.random.default_rng(3).uniform(0, 1, (4, 20, 20, 3)).astype("float32")
    expected = np.asarray(flipped(images[:, 2:18, 2:18].copy()))
    np.testing.assert_allclose(np.asarray(model(images)), expected, atol=1e-6)
    assert inner_classifier(model) is classifier
    model.save(tmp_path / "middle.h5")
    reloaded = keras.models.load_model(tmp_path / "middle.h5", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-6)


def test_a_joined_head_answers_with_the_mean_of_one_head_per_network_and_loads_in_safe_mode(tmp_path: Path) -> None:
    import keras

    from tl_core.models.build import build_head

    head = build_head(7, 3, parts=(4, 3), seed=5)
    features = np.random.default_rng(0).normal(size=(6, 7)).astype("float32")
    first, second = (head.get_layer(f"part_{index}_predictions") for index in (0, 1))
    assert first.kernel.shape == (4, 3) and second.kernel.shape == (3, 3)  # each head reads its own network's part only
    expected = (keras.ops.softmax(features[:, :4] @ first.kernel + first.bias) + keras.ops.softmax(features[:, 4:] @ second.kernel + second.bias)) / 2
    np.testing.assert_allclose(np.asarray(head(features)), np.asarray(expected), atol=1e-6)
    changed = features.copy()
    changed[:, 4:] += 3.0  # the second network's part moves: only the second head's answer changes
    np.testing.assert_allclose(np.asarray(head(changed)) - np.asarray(head(features)), np.asarray(keras.ops.softmax(changed[:, 4:] @ second.kernel + second.bias) - keras.ops.softmax(features[:, 4:] @ second.kernel + second.bias)) / 2, atol=1e-6)
    for name in ("head.keras", "head.h5"):
        head.save(tmp_path / name)
        np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / name, safe_mode=True)(features)), np.asarray(head(features)), atol=1e-6)
    assert [layer.name for layer in build_head(7, 3).layers] == ["head_dropout", "predictions"]  # one network: the plain head
