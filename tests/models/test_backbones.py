"""Tests of the backbone table against the networks Keras really builds.

Every network is built once for the whole module, with random weights, so
nothing is downloaded. The ImageNet file names are checked by replacing
Keras' ``get_file`` with a function that raises before any download.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from types import MappingProxyType

import numpy as np
import pytest

from tl_core.errors import ConfigError
from tl_core.models.backbones import BACKBONES, BACKBONES_BY_NAME, BackboneSpec, get_backbone, list_backbones
from tl_core.models.blocks import Block, block_starts, blocks_from_layer_names, build_backbone_for_inspection

from conftest import REPO

REPOSITORY_ROOT = REPO
ALL_NAMES = [spec.name for spec in BACKBONES]
SINGLE = [spec for spec in BACKBONES if not spec.joined]  # one keras.applications network each
SPEC_NAMES = [spec.name for spec in SINGLE]

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])


@dataclasses.dataclass(frozen=True)
class BuiltBackbone:
    """A backbone built for the tests, its layer names and its blocks."""

    model: object
    layer_names: list[str]
    blocks: list[Block]


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, BuiltBackbone]]:
    """Builds every backbone of the table once for this module."""
    import keras

    keras.backend.clear_session()
    result = {}
    for spec in SINGLE:
        model = build_backbone_for_inspection(spec)
        layer_names = [layer.name for layer in model.layers]
        result[spec.name] = BuiltBackbone(model, layer_names, blocks_from_layer_names(spec, layer_names))
    yield result
    build_backbone_for_inspection.cache_clear()
    result.clear()
    keras.backend.clear_session()


def _spec_with_pattern(pattern: str, boundary: str, labels: dict[str, str] | None = None) -> BackboneSpec:
    """A made-up spec whose only meaningful fields are the block fields."""
    return dataclasses.replace(
        BACKBONES[0],
        name="made_up",
        block_pattern=pattern,
        block_boundary=boundary,
        block_labels=MappingProxyType(labels or {}),
    )


def _as_tuples(blocks: list[Block]) -> list[tuple[str, int, int]]:
    """The blocks as plain tuples, for short comparisons."""
    return [(block.name, block.start, block.end) for block in blocks]


# --- the table itself ------------------------------------------------------


def test_module_import_does_not_load_tensorflow_or_keras() -> None:
    code = (
        "import sys, tl_core.models.backbones\n"
        "loaded = [name for name in ('keras', 'tensorflow') if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr


def test_table_has_the_required_backbones_with_unique_lower_case_names() -> None:
    required = {
        "mobilenet_v2",
        "mobilenet",
        "mobilenet_0.75",
        "efficientnet_b0",
        "efficientnet_v2_b0",
        "resnet50",
        "vgg16",
        "inception_v3",
        "xception",
        "densenet121",
    }
    assert required <= set(SPEC_NAMES)
    assert len(ALL_NAMES) == len(set(ALL_NAMES))
    assert all(name == name.lower() for name in ALL_NAMES)
    assert [spec.name for spec in list_backbones()] == ALL_NAMES
    assert set(BACKBONES_BY_NAME) == set(ALL_NAMES)


def test_a_joined_backbone_is_made_of_single_networks_with_the_same_input() -> None:
    joined = [spec for spec in BACKBONES if spec.joined]
    assert joined, "the table has a joined backbone (MobileNetV2 + MobileNet 0.75)"
    for spec in joined:
        members = spec.member_specs
        assert len(members) >= 2 and not any(member.joined for member in members)
        assert {member.preprocessing for member in members} == {spec.preprocessing}  # one preprocessing serves both
        assert spec.feature_dim == sum(member.feature_dim for member in members) == sum(spec.map_channels)
        assert spec.parameters == sum(member.parameters for member in members)
        assert spec.weights_files == tuple(member.weights_file for member in members)
        assert spec.identity != members[0].identity
        hash(spec)  # a cache key: hashable like every spec


def test_list_backbones_returns_a_new_list() -> None:
    listed = list_backbones()
    listed.clear()
    assert len(list_backbones()) == len(BACKBONES)


@pytest.mark.parametrize("spec", SINGLE, ids=SPEC_NAMES)
def test_spec_is_frozen_and_hashable(spec: BackboneSpec) -> None:
    assert {spec: 1}[spec] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.constructor_kwargs["alpha"] = 2.0  # type: ignore[index]


@pytest.mark.parametrize("spec", BACKBONES, ids=ALL_NAMES)
def test_description_is_one_sentence(spec: BackboneSpec) -> None:
    assert spec.description.endswith(".")
    assert ". " not in spec.description
    assert spec.display_name


# --- get_backbone ----------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("mobilenet_v2", "mobilenet_v2"),
        ("MobileNet-V2", "mobilenet_v2"),
        (" ResNet50 ", "resnet50"),
        ("MOBILENET-0.75", "mobilenet_0.75"),
        ("efficientnet-v2-b0", "efficientnet_v2_b0"),
    ],
)
def test_get_backbone_accepts_any_case_and_dashes(typed: str, expected: str) -> None:
    assert get_backbone(typed).name == expected


def test_get_backbone_names_the_choices_for_an_unknown_name() -> None:
    choices = ", ".join(sorted(ALL_NAMES))
    message = f"Unknown backbone 'resnet51'. Choose one of: {choices} (python -m tl_core backbones lists them)."
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_backbone("resnet51")


# --- facts measured on the built networks ----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_parameter_count_and_feature_dim(built: dict[str, BuiltBackbone], name: str) -> None:
    spec = get_backbone(name)
    model = built[name].model
    assert model.count_params() == spec.parameters
    assert model.output_shape[-1] == spec.last_channels
    # The earlier layers pooled into the features exist, come before the last output, and have the channels the table says.
    names = [layer.name for layer in model.layers]
    for layer_name, channels in spec.feature_layers.items():
        assert model.get_layer(layer_name).output.shape[-1] == channels
    assert [names.index(layer_name) for layer_name in spec.feature_layers] == sorted(names.index(layer_name) for layer_name in spec.feature_layers)
    assert spec.feature_dim == spec.last_channels + sum(spec.feature_layers.values())
    assert tuple(model.input_shape) == (None, None, None, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_min_size_is_the_smallest_size_keras_accepts(built: dict[str, BuiltBackbone], name: str) -> None:
    import keras

    spec = get_backbone(name)
    constructor = getattr(keras.applications, spec.constructor)
    too_small = (spec.min_size - 1, spec.min_size - 1, 3)
    with pytest.raises(ValueError, match=f"at least {spec.min_size}x{spec.min_size}"):
        constructor(include_top=False, weights=None, input_shape=too_small, **dict(spec.constructor_kwargs))
    images = np.zeros((1, spec.min_size, spec.min_size, 3), dtype="float32")
    features = keras.ops.convert_to_numpy(built[name].model(images, training=False))
    assert features.shape[1] >= 1 and features.shape[2] >= 1
    assert features.shape[-1] == spec.last_channels
    assert spec.min_size <= spec.default_size


# --- preprocessing ---------------------------------------------------------


def _reference_preprocessing(mode: str, images: np.ndarray) -> np.ndarray:
    """The documented formula of each preprocessing mode, written with numpy."""
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "caffe":
        return images[..., ::-1] - CAFFE_BGR_MEAN
    if mode == "torch":
        return (images / 255.0 - TORCH_MEAN) / TORCH_STD
    return images


def _keras_preprocess_input(spec: BackboneSpec) -> Callable[..., object]:
    """The public ``keras.applications.<module>.preprocess_input`` of the spec's constructor."""
    import keras

    module_name = getattr(keras.applications, spec.constructor).__module__.rsplit(".", 1)[-1]
    return getattr(keras.applications, module_name).preprocess_input


@pytest.mark.parametrize("spec", SINGLE, ids=SPEC_NAMES)
def test_preprocessing_matches_keras(spec: BackboneSpec) -> None:
    images = np.random.default_rng(7).uniform(0.0, 255.0, size=(2, 9, 11, 3)).astype("float32")
    # preprocess_input may change a numpy array in place, so it gets a copy.
    expected = np.asarray(_keras_preprocess_input(spec)(images.copy()))
    actual = _reference_preprocessing(spec.preprocessing, images.astype("float64"))
    np.testing.assert_allclose(actual, expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [spec for spec in SINGLE if spec.preprocessing == "none"], ids=lambda spec: spec.name)
def test_networks_without_preprocessing_scale_pixels_themselves(
    built: dict[str, BuiltBackbone], spec: BackboneSpec
) -> None:
    import keras

    layer_types = [type(layer) for layer in built[spec.name].model.layers[:4]]
    assert keras.layers.Rescaling in layer_types


# --- ImageNet weights file names -------------------------------------------


class _WeightsFileRequested(Exception):
    """Raised by the stand-in for get_file, carrying the file name Keras asked for."""

    def __init__(self, file_name: str) -> None:
        super().__init__(file_name)
        self.file_name = file_name


def _refuse_download(fname: str | None = None, origin: str | None = None, *args: object, **kwargs: object) -> str:
    """Stands in for ``get_file``: reports the requested name instead of downloading."""
    raise _WeightsFileRequested(str(fname))


@pytest.mark.slow
@pytest.mark.parametrize("spec", SINGLE, ids=SPEC_NAMES)
def test_weights_file_is_the_one_keras_asks_for(monkeypatch: pytest.MonkeyPatch, spec: BackboneSpec) -> None:
    import keras
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", _refuse_download)
    constructor = getattr(keras.applications, spec.constructor)
    with warnings.catch_warnings(), pytest.raises(_WeightsFileRequested) as requested:
        # MobileNet warns that it falls back to the 224-pixel weights.
        warnings.simplefilter("ignore")
        constructor(include_top=False, weights="imagenet", input_shape=(None, None, 3), **dict(spec.constructor_kwargs))
    keras.backend.clear_session()
    assert requested.value.file_name == spec.weights_file


# --- blocks of the real networks -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_blocks_cover_all_layers_in_order(built: dict[str, BuiltBackbone], name: str) -> None:
    blocks = built[name].blocks
    layer_count = len(built[name].layer_names)
    assert len(blocks) >= 5
    assert blocks[0].start == 0
    assert blocks[-1].end == layer_count
    for before, after in itertools.pairwise(blocks):
        assert before.end == after.start
    assert all(block.start < block.end for block in blocks)
    names = [block.name for block in blocks]
    assert len(names) == len(set(names)), names


@pytest.mark.slow
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_block_starts_agrees_with_the_built_model(built: dict[str, BuiltBackbone], name: str) -> None:
    assert block_starts(get_backbone(name)) == built[name].blocks


@pytest.mark.slow
def test_build_backbone_for_inspection_reuses_recent_models() -> None:
    spec = get_backbone("mobilenet_0.75")
    assert build_backbone_for_inspection(spec) is build_backbone_for_inspection(spec)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "block_name", "first_layer"),
    [
        ("mobilenet_v2", "stem", "input_layer"),
        ("mobilenet_v2", "block_0", "expanded_conv_depthwise"),
        ("mobilenet_v2", "block_5", "block_5_expand"),
        ("mobilenet_v2", "block_16", "block_16_expand"),
        ("mobilenet_v2", "top", "Conv_1"),
        ("mobilenet", "block_1", "conv_dw_1"),
        ("mobilenet", "block_2", "conv_pad_2"),
        ("mobilenet", "block_13", "conv_dw_13"),
        ("mobilenet_0.75", "block_6", "conv_pad_6"),
        ("efficientnet_b0", "block1", "block1a_dwconv"),
        ("efficientnet_b0", "block2", "block2a_expand_conv"),
        ("efficientnet_b0", "top", "top_conv"),
        ("efficientnet_v2_b0", "block4", "block4a_expand_conv"),
        ("efficientnet_v2_b0", "top", "top_conv"),
        ("resnet50", "conv2_block1", "conv2_block1_1_conv"),
        ("resnet50", "conv3_block4", "conv3_block4_1_conv"),
        ("resnet50", "conv5_block3", "conv5_block3_1_conv"),
        ("vgg16", "block1", "block1_conv1"),
        ("vgg16", "block3", "block3_conv1"),
        ("xception", "block1", "block1_conv1"),
        ("xception", "block3", "block3_sepconv1_act"),
        ("xception", "block14", "block14_sepconv1"),
        ("densenet121", "conv2", "conv2_block1_0_bn"),
        ("densenet121", "conv5", "conv5_block1_0_bn"),
    ],
)
def test_block_starts_at_the_expected_layer(
    built: dict[str, BuiltBackbone], name: str, block_name: str, first_layer: str
) -> None:
    layer_names = built[name].layer_names
    block = {block.name: block for block in built[name].blocks}[block_name]
    actual = layer_names[block.start]
    if first_layer == "input_layer":
        actual = re.sub(r"_\d+$", "", actual)  # Keras numbers auto-named layers once another model was built (input_layer_15)
    assert actual == first_layer


@pytest.mark.slow
def test_mobilenet_v2_block_names(built: dict[str, BuiltBackbone]) -> None:
    expected = ["stem"] + [f"block_{number}" for number in range(17)] + ["top"]
    assert [block.name for block in built["mobilenet_v2"].blocks] == expected
    top = built["mobilenet_v2"].blocks[-1]
    assert built["mobilenet_v2"].layer_names[top.start : top.end] == ["Conv_1", "Conv_1_bn", "out_relu"]


@pytest.mark.slow
def test_vgg16_block_names(built: dict[str, BuiltBackbone]) -> None:
    assert _as_tuples(built["vgg16"].blocks) == [
        ("input", 0, 1),
        ("block1", 1, 4),
        ("block2", 4, 7),
        ("block3", 7, 11),
        ("block4", 11, 15),
        ("block5", 15, 19),
    ]


@pytest.mark.slow
def test_densenet_transition_layers_stay_with_their_dense_block(built: dict[str, BuiltBackbone]) -> None:
    layer_names = built["densenet121"].layer_names
    blocks = {block.name: block for block in built["densenet121"].blocks}
    assert layer_names[blocks["conv2"].end - 1] == "pool2_pool"
    assert layer_names[blocks["conv4"].end - 1] == "pool4_pool"
    assert layer_names[blocks["conv5"].end - 1] == "relu"
    assert layer_names[blocks["stem"].end - 1] == "pool1"


def test_inception_v3_blocks_end_at_each_mixed_module(built: dict[str, BuiltBackbone]) -> None:
    layer_names = built["inception_v3"].layer_names
    blocks = built["inception_v3"].blocks
    assert [block.name for block in blocks] == [f"mixed{number}" for number in range(11)]
    for block in blocks:
        assert layer_names[block.end - 1] == block.name
    after_mixed3 = layer_names.index("mixed3") + 1
    assert after_mixed3 in [block.start for block in blocks]
    # The inner concatenations of mixed9 and mixed10 do not end a block.
    assert "mixed9_0" in layer_names
    assert all(layer_names[block.end - 1] != "mixed9_0" for block in blocks)


# --- blocks_from_layer_names on made-up names ------------------------------


def test_start_mode_with_stem_unmatched_layers_and_top() -> None:
    spec = _spec_with_pattern(r"(unit\d+|head)_", "start", {"head": "top"})
    names = ["input", "pad", "conv", "unit1_a", "add", "unit1_b", "unit2_a", "relu", "head_conv", "head_act"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [
        ("stem", 0, 3),
        ("unit1", 3, 6),
        ("unit2", 6, 8),
        ("top", 8, 10),
    ]


def test_start_mode_names_a_lone_input_layer_input() -> None:
    spec = _spec_with_pattern(r"(block\d+)_", "start")
    names = ["input_layer", "block1_conv", "block2_conv", "flatten"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [
        ("input", 0, 1),
        ("block1", 1, 2),
        ("block2", 2, 4),
    ]


def test_start_mode_without_leading_layers_has_no_stem() -> None:
    spec = _spec_with_pattern(r"(block\d+)_", "start")
    names = ["block1_conv", "block1_bn", "block2_conv"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [("block1", 0, 2), ("block2", 2, 3)]


def test_labels_that_are_equal_merge_consecutive_layers() -> None:
    spec = _spec_with_pattern(r"(last_conv|out_act)(?:_|$)", "start", {"last_conv": "top", "out_act": "top"})
    names = ["input", "conv", "last_conv", "last_conv_bn", "out_act"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [("stem", 0, 2), ("top", 2, 5)]


def test_end_mode_joins_trailing_layers_to_the_last_block() -> None:
    spec = _spec_with_pattern(r"(mix\d+)$", "end")
    names = ["input", "conv", "mix0", "conv_1", "mix1_inner", "mix1", "pool", "dropout"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [("mix0", 0, 3), ("mix1", 3, 8)]


def test_end_mode_consecutive_matches_with_one_label_end_one_block() -> None:
    spec = _spec_with_pattern(r"(mix\d+)", "end")
    names = ["input", "mix0", "mix0_extra", "conv", "mix1"]
    assert _as_tuples(blocks_from_layer_names(spec, names)) == [("mix0", 0, 3), ("mix1", 3, 5)]


@pytest.mark.parametrize("boundary", ["start", "end"])
def test_names_that_match_nothing_form_one_block(boundary: str) -> None:
    spec = _spec_with_pattern(r"(nothing\d+)_", boundary)
    assert _as_tuples(blocks_from_layer_names(spec, ["input", "conv", "relu"])) == [("stem", 0, 3)]


@pytest.mark.parametrize("boundary", ["start", "end"])
def test_no_layers_give_no_blocks(boundary: str) -> None:
    assert blocks_from_layer_names(_spec_with_pattern(r"(block\d+)", boundary), []) == []


def test_pattern_without_a_group_is_refused() -> None:
    with pytest.raises(ValueError, match="no capturing group"):
        blocks_from_layer_names(_spec_with_pattern(r"block\d+", "start"), ["block1"])
