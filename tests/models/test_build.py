"""Building the classifier: the mirror layers and the test-time flip model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_the_mirror_layers_mirror_exactly_and_the_flip_model_averages_both_answers(tmp_path: Path) -> None:
    import keras

    from tl_core.models.build import mirror_layers, unwrap_test_time_flip, with_test_time_flip

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
    assert unwrap_test_time_flip(flip_model) is classifier and unwrap_test_time_flip(classifier) is classifier
    expected = (np.asarray(classifier(images)) + np.asarray(classifier(images[:, :, ::-1].copy()))) / 2
    np.testing.assert_allclose(np.asarray(flip_model(images)), expected, atol=1e-6)
    assert not np.allclose(expected, np.asarray(classifier(images)))  # the mirror image really changed the answer
    flip_model.save(tmp_path / "flip.h5")
    reloaded = keras.models.load_model(tmp_path / "flip.h5", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), expected, atol=1e-6)
