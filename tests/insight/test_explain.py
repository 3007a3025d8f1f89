"""Grad-CAM: the map peaks where the evidence is, works for every backbone, and the `explain` command writes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.insight.explain import classifier_parts, explain, overlay

from conftest import REPO, make_class_folders

pytestmark = pytest.mark.slow  # trains real networks, or runs a benchmark or the browser

SIZE = 32


def square_images(count: int, with_square: bool, seed: int) -> np.ndarray:
    """Dim noise; with a bright 8x8 square near the top-left corner when ``with_square``."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 80, (count, SIZE, SIZE, 3)).astype(np.float32)
    if with_square:
        images[:, 3:11, 3:11, :] = 255
    return images


@pytest.fixture(scope="module")
def corner_model():
    """A small classifier shaped like ours (preprocessing, backbone, pooling, head) that learned: square in the corner = class 1."""
    import keras

    keras.utils.set_random_seed(0)
    backbone_input = keras.Input((SIZE, SIZE, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(backbone_input)
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(hidden)
    backbone = keras.Model(backbone_input, hidden, name="tiny_backbone")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="pooled_features")(backbone(keras.layers.Rescaling(1 / 255)(inputs), training=False))
    head = keras.Sequential([keras.layers.Dense(2, activation="softmax")], name="head")
    model = keras.Model(inputs, head(pooled), name="tiny_classifier")
    x = np.concatenate([square_images(100, False, 1), square_images(100, True, 2)])
    y = np.array([0] * 100 + [1] * 100)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, shuffle=True, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] == 1.0
    return model


def test_the_map_peaks_where_the_evidence_is(corner_model) -> None:
    image = square_images(1, True, 7)[0]
    explanation = explain(corner_model, image, class_index=1)

    assert explanation.heatmap.shape == (SIZE, SIZE) and explanation.grid == (SIZE, SIZE)
    assert explanation.heatmap.min() >= 0 and explanation.heatmap.max() == pytest.approx(1.0)
    row, column = np.unravel_index(np.argmax(explanation.heatmap), explanation.heatmap.shape)
    assert row < 14 and column < 14  # in the corner with the square
    inside = explanation.heatmap[3:11, 3:11].mean()
    outside = explanation.heatmap[16:, 16:].mean()
    assert inside > 3 * outside
    assert explanation.class_index == 1 and explanation.probabilities.argmax() == 1
    assert explain(corner_model, image).class_index == 1  # the predicted class by default


def test_a_model_with_the_test_time_flip_is_explained_through_its_classifier(corner_model) -> None:
    from tl_core.models.build import with_test_time_flip

    image = square_images(1, True, 8)[0]
    wrapped = with_test_time_flip(corner_model, SIZE)
    np.testing.assert_allclose(explain(wrapped, image, 1).heatmap, explain(corner_model, image, 1).heatmap, atol=1e-6)
    with pytest.raises(Exception, match="out of range"):
        explain(corner_model, image, class_index=5)


def test_overlay_keeps_the_image_where_there_is_no_evidence() -> None:
    pixels = np.full((4, 4, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    blended = overlay(pixels, heat)
    assert blended.dtype == np.uint8 and blended.shape == (4, 4, 3)
    assert blended[0, 0, 0] > blended[0, 0, 2]  # strongest: red
    assert np.abs(blended[3, 3].astype(int) - 100).max() < 40  # faint blue tint only


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet", "mobilenet_0.75", "efficientnet_b0", "efficientnet_v2_b0", "resnet50", "vgg16", "inception_v3", "xception", "densenet121"])
def test_every_backbone_in_the_table_can_be_explained(name: str) -> None:
    """Random weights (the map's shape does not depend on them): the backbone's output is its last convolutional block."""
    import keras

    from tl_core.models.backbones import get_backbone, list_backbones
    from tl_core.models.build import build_backbone, build_classifier, build_head

    assert name in [spec.name for spec in list_backbones()]
    spec = get_backbone(name)
    size = max(spec.min_size, 96)
    classifier, _ = build_classifier(spec, build_backbone(spec, "none"), build_head(spec.feature_dim, 3), size)
    _, backbone, after = classifier_parts(classifier)
    # The backbone's last output is its last convolutional block; where earlier layers are pooled too, it has their maps first.
    assert isinstance(backbone, keras.Model) and len(backbone.outputs) == 1 + len(spec.feature_layers) and len(backbone.outputs[-1].shape) == 4
    assert [layer.name for layer in after][0] == "pooled_features"
    explanation = explain(classifier, np.random.default_rng(0).uniform(0, 255, (size, size, 3)), class_index=2)
    assert explanation.heatmap.shape == (size, size) and 0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1.0
    maps = backbone(np.zeros((1, size, size, 3), dtype=np.float32))
    assert explanation.grid == tuple((maps[0] if spec.feature_layers else maps).shape[1:3])  # the finest map explained
    keras.backend.clear_session()


def test_the_explain_command_writes_the_map_and_names_the_classes(tmp_path: Path, imagenet_weights: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.training.run import train

    data = make_class_folders(tmp_path / "data", {"red": 8, "blue": 8}, size=40)
    result = train(TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), image_size=SIZE, epochs=2, cache_dir=str(tmp_path / "cache"), val_fraction=0.25, test_fraction=0.25))
    image = next((data / "blue").glob("*.png"))
    command = [sys.executable, "-m", "tl_core", "explain", str(result.run_dir), str(image), "--class", "blue", "--out", str(tmp_path / "maps" / "blue.png")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)

    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert {line.split("\t")[0] for line in lines[:2]} == {"red", "blue"}
    assert lines[-1].startswith("map of 'blue' (8x8 feature map") and "written to" in lines[-1]
    with Image.open(tmp_path / "maps" / "blue.png") as written:
        assert written.size == (SIZE, SIZE) and written.mode == "RGB"

    wrong = subprocess.run([*command[:6], "--class", "green", "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert wrong.returncode == 2 and "'green' is not a class of this run. Its classes: blue, red." in wrong.stderr
