"""RandomAffine: the geometric augmentation done in one resampling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tl_core.config import AugmentConfig
from tl_core.models.augment import RandomAffine, build_augmenter

SIZE = 48


def _disk(radius: float, centre: tuple[float, float] = ((SIZE - 1) / 2, (SIZE - 1) / 2)) -> np.ndarray:
    """A bright disk on a dark background, as a float32 image."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE]
    inside = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2
    image = np.full((SIZE, SIZE, 3), 20.0, dtype=np.float32)
    image[inside] = 230.0
    return image


def _apply(layer: keras.layers.Layer, image: np.ndarray, copies: int = 16) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(np.repeat(image[None], copies, axis=0), training=True))


def test_flips_are_exact_mirrors_and_both_outcomes_occur() -> None:
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    outputs = _apply(RandomAffine("horizontal", seed=3), image)
    kinds = ["same" if np.array_equal(out, image) else "mirror" if np.array_equal(out, image[:, ::-1]) else "other" for out in outputs]
    assert "other" not in kinds and {"same", "mirror"} == set(kinds)
    vertical = _apply(RandomAffine("vertical", seed=3), image)
    assert all(np.array_equal(out, image) or np.array_equal(out, image[::-1]) for out in vertical)


def test_turns_are_exact_quarter_turns_and_all_four_occur() -> None:
    image = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    outputs = _apply(RandomAffine("none", seed=5, turns=True), image, copies=32)
    turned = [np.rot90(image, turns) for turns in range(4)]
    kinds = [next((turns for turns, view in enumerate(turned) if np.allclose(out, view, atol=0.01)), None) for out in outputs]
    assert None not in kinds and set(kinds) == {0, 1, 2, 3}
    assert build_augmenter(AugmentConfig(flip="none", rotation=0, zoom=0, translation=0, contrast=0, turns=True)).layers[0].turns


def test_rotation_and_zoom_turn_about_the_centre() -> None:
    # A small disk at the centre stays there whatever the angle and zoom; a wrong centre would move it away.
    image = _disk(radius=5)
    outputs = _apply(RandomAffine("none", rotation=0.5, zoom=0.2, seed=1), image)
    middle = SIZE // 2
    assert (outputs[:, middle - 1 : middle + 1, middle - 1 : middle + 1, 0] > 200).all()
    areas = (outputs[..., 0] > 125).sum(axis=(1, 2))
    disk_area = (image[..., 0] > 125).sum()
    assert areas.min() >= disk_area / 1.2**2 * 0.85 and areas.max() <= disk_area / 0.8**2 * 1.15  # zoomed by 80-120%
    assert areas.max() - areas.min() > 0.15 * disk_area  # and not all by the same amount


def test_translation_moves_the_picture_by_at_most_the_fraction() -> None:
    image = _disk(radius=4)
    outputs = _apply(RandomAffine("none", translation=0.2, seed=2), image, copies=32)
    shifts = []
    for out in outputs:
        rows, columns = np.nonzero(out[..., 0] > 125)
        shifts.append((rows.mean() - (SIZE - 1) / 2, columns.mean() - (SIZE - 1) / 2))
    shifts = np.abs(np.array(shifts))
    assert shifts.max() <= 0.2 * SIZE + 1 and shifts.max() > 0.1 * SIZE
    assert (shifts[:, 0] != shifts[:, 1]).any()  # rows and columns are shifted independently


def test_seeded_inference_mode_and_settings_round_trip() -> None:
    image = _disk(radius=10, centre=(12, 30))
    first = _apply(RandomAffine("horizontal", 0.1, 0.2, 0.1, seed=5), image)
    again = _apply(RandomAffine("horizontal", 0.1, 0.2, 0.1, seed=5), image)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, _apply(RandomAffine("horizontal", 0.1, 0.2, 0.1, seed=6), image))
    layer = RandomAffine("horizontal", 0.1, 0.2, 0.1, seed=5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(image[None], training=False)), image[None])
    assert RandomAffine.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize(("config", "names"), [(AugmentConfig(), ["RandomAffine", "RandomContrast"]), (AugmentConfig(flip="none", rotation=0, zoom=0, translation=0), ["RandomContrast"])])
def test_augmenter_resamples_once(config: AugmentConfig, names: list[str]) -> None:
    assert [type(layer).__name__ for layer in build_augmenter(config).layers] == names
