"""The table of pretrained backbones the engine can start from.

Each row (a ``BackboneSpec``) holds what the rest of the package needs to
know about one ``keras.applications`` network without building it: how to
construct it, how its input must be scaled, which ImageNet weights file Keras
will ask for, how big it is, and how its layer names mark blocks (read by
``tl_core.models.blocks``).

Every number in the table was measured on Keras 3 by building the network
with ``include_top=False, weights=None, input_shape=(None, None, 3)``, and
``tests/models/test_backbones.py`` checks them again.

This module does not import TensorFlow or Keras when it is imported, so a
user interface can list the backbones quickly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from tl_core.errors import ConfigError

PreprocessingMode = Literal["tf", "caffe", "torch", "none"]
BlockBoundary = Literal["start", "end"]

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def _no_labels() -> Mapping[str, str]:
    """The default of ``BackboneSpec.block_labels``: no display names.

    Returns:
        An empty read-only mapping.
    """
    return _NO_LABELS


@dataclass(frozen=True)
class BackboneSpec:
    """One pretrained network of ``keras.applications``, used without its classifier top.

    The two mapping fields are read-only ``MappingProxyType`` objects. They
    take part in equality but not in the hash (a mapping cannot be hashed),
    so a spec can still be a dictionary key or a cache key.

    Attributes:
        name: Lower-case name used on the command line, e.g. ``"mobilenet_v2"``.
        display_name: Name shown to people, e.g. ``"MobileNetV2"``.
        constructor: Attribute of ``keras.applications`` that builds the network.
        constructor_kwargs: Extra keyword arguments for the constructor, e.g. ``{"alpha": 0.75}``.
        preprocessing: How 0-255 RGB pixels must be changed before the network:
            ``"tf"`` scales to -1..1 (``x / 127.5 - 1``); ``"caffe"`` turns RGB
            into BGR and subtracts the ImageNet BGR mean; ``"torch"`` scales to
            0..1 and standardises each channel with the ImageNet mean and
            standard deviation; ``"none"`` means the network holds its own
            preprocessing layers and takes 0-255 RGB as it is.
        default_size: Side of the square images the ImageNet weights were trained on.
        min_size: Smallest square side Keras accepts for this network without its top.
        parameters: Total parameter count of the network without its top.
        feature_dim: Length of the pooled feature vector: the channels of the
            last output, plus those of ``feature_layers``.
        weights_file: File name Keras asks ``get_file`` for (and looks for in
            ``$KERAS_HOME/models/``) when the network is built with
            ``weights="imagenet", include_top=False, input_shape=(None, None, 3)``.
        block_pattern: Regular expression matched at the start of each layer
            name; its first capturing group names the block the layer marks.
        block_boundary: ``"start"`` when a matching layer belongs to the block
            its group names, a new block starting wherever that name changes;
            ``"end"`` when a matching layer is the last layer of its block.
        description: One plain sentence for a user interface.
        block_labels: Display names for some group values, e.g.
            ``{"expanded_conv": "block_0"}``; values not listed are shown as
            captured. Layers whose labels are equal belong to the same block.
        feature_layers: Earlier layers whose pooled outputs join the last
            output's in the feature vector, with their channels, in order
            (``tl_core.models.build.pooled_features``). Empty: the last output alone.
        members: For a joined backbone, the names of the networks whose features it
            joins, in order (``tl_core.models.build.build_backbone``); its own
            ``constructor`` and ``weights_file`` are empty. Empty: one network.
    """

    name: str
    display_name: str
    constructor: str
    constructor_kwargs: Mapping[str, object] = field(hash=False)
    preprocessing: PreprocessingMode
    default_size: int
    min_size: int
    parameters: int
    feature_dim: int
    weights_file: str
    block_pattern: str
    block_boundary: BlockBoundary
    description: str
    block_labels: Mapping[str, str] = field(default_factory=_no_labels, hash=False)
    feature_layers: Mapping[str, int] = field(default_factory=_no_labels, hash=False)
    members: tuple[str, ...] = ()

    @property
    def joined(self) -> bool:
        """Whether this backbone joins the features of several networks (then it can only extract features)."""
        return bool(self.members)

    @property
    def member_specs(self) -> tuple[BackboneSpec, ...]:
        """The networks a joined backbone runs side by side; the spec itself for one network."""
        return tuple(BACKBONES_BY_NAME[name] for name in self.members) if self.members else (self,)

    @property
    def map_channels(self) -> tuple[int, ...]:
        """Channels of each feature map pooled into the feature vector, in order (earlier layers first, network by network)."""
        if self.members:
            return tuple(width for member in self.member_specs for width in member.map_channels)
        return (*self.feature_layers.values(), self.last_channels)

    @property
    def member_dims(self) -> tuple[int, ...]:
        """Each network's part of the feature vector, in order (one part for one network)."""
        return tuple(member.feature_dim for member in self.member_specs)

    @property
    def weights_files(self) -> tuple[str, ...]:
        """The ImageNet weights files this backbone loads (one per network)."""
        return tuple(member.weights_file for member in self.member_specs)

    @property
    def last_channels(self) -> int:
        """Channels of the backbone's last output."""
        return self.feature_dim - sum(self.feature_layers.values())

    @property
    def identity(self) -> tuple:
        """What makes this network's features what they are, for cache keys (the same as before for a single output)."""
        if self.members:
            return (self.name, tuple(member.identity for member in self.member_specs))
        parts: tuple = (self.name, sorted(self.constructor_kwargs.items()))
        return parts + ((("feature_layers", tuple(self.feature_layers)),) if self.feature_layers else ())


def _numbered_labels(label_prefix: str, count: int) -> Mapping[str, str]:
    """Display names for blocks whose group values are the numbers ``1`` to ``count``.

    Args:
        label_prefix: Text put before the number in the display name.
        count: Highest number.

    Returns:
        A read-only mapping such as ``{"1": "block_1", "2": "block_2", ...}``.
    """
    return MappingProxyType({str(number): f"{label_prefix}{number}" for number in range(1, count + 1)})

_EFFICIENTNET_PATTERN = r"(block\d+|top)[a-z]?_"

BACKBONES: tuple[BackboneSpec, ...] = (
    BackboneSpec(
        name="mobilenet_v2",
        display_name="MobileNetV2",
        constructor="MobileNetV2",
        constructor_kwargs=MappingProxyType({"alpha": 1.0}),
        preprocessing="tf",
        default_size=224,
        min_size=32,
        parameters=2_257_984,
        feature_dim=1280 + 144 + 192 + 576,
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        block_pattern=r"(expanded_conv|block_\d+|Conv_1|out_relu)(?:_|$)",
        block_boundary="start",
        description=(
            "MobileNetV2 (2.3 million parameters) is small and fast, "
            "a good default on a CPU with solid accuracy."
        ),
        block_labels=MappingProxyType({"expanded_conv": "block_0", "Conv_1": "top", "out_relu": "top"}),
        # The last activation at each of the 56, 28 and 14 pixel resolutions (at 224 px), before the stride that halves it.
        feature_layers=MappingProxyType({"block_3_expand_relu": 144, "block_6_expand_relu": 192, "block_13_expand_relu": 576}),
    ),
    BackboneSpec(
        name="mobilenet",
        display_name="MobileNet",
        constructor="MobileNet",
        constructor_kwargs=MappingProxyType({"alpha": 1.0}),
        preprocessing="tf",
        default_size=224,
        min_size=32,
        parameters=3_228_864,
        feature_dim=1024,
        weights_file="mobilenet_1_0_224_tf_no_top.h5",
        block_pattern=r"conv_(?:pad|dw|pw)_(\d+)(?:_|$)",
        block_boundary="start",
        description=(
            "MobileNet version 1 at full width (3.2 million parameters) is a fast, simple network "
            "that is a little less accurate than MobileNetV2."
        ),
        block_labels=_numbered_labels("block_", 13),
    ),
    BackboneSpec(
        name="mobilenet_0.75",
        display_name="MobileNet (0.75 width)",
        constructor="MobileNet",
        constructor_kwargs=MappingProxyType({"alpha": 0.75}),
        preprocessing="tf",
        default_size=224,
        min_size=32,
        parameters=1_832_976,
        feature_dim=768,
        weights_file="mobilenet_7_5_224_tf_no_top.h5",
        block_pattern=r"conv_(?:pad|dw|pw)_(\d+)(?:_|$)",
        block_boundary="start",
        description=(
            "MobileNet version 1 at three quarters width (1.8 million parameters) is the smallest "
            "and fastest choice, giving up some accuracy for speed."
        ),
        block_labels=_numbered_labels("block_", 13),
    ),
    BackboneSpec(
        name="mobilenet_v2+mobilenet_0.75",
        display_name="MobileNetV2 + MobileNet (0.75 width), joined",
        constructor="",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="tf",
        default_size=224,
        min_size=32,
        parameters=2_257_984 + 1_832_976,
        feature_dim=1280 + 144 + 192 + 576 + 768,
        weights_file="",
        # One block per network (the joined model's layers are the two networks); they only extract features.
        block_pattern=r"(mobilenetv2|mobilenet_0\.75)_",
        block_boundary="start",
        description=(
            "Both small networks side by side, each with a head of its own and their answers averaged (4.1 million parameters, about 1.7x "
            "MobileNetV2's time), for feature extraction only: on cat breeds and aerial scenes it made 12-15 % fewer errors than MobileNetV2 alone, on ants and bees more."
        ),
        block_labels=MappingProxyType({"mobilenetv2": "MobileNetV2", "mobilenet_0.75": "MobileNet 0.75"}),
        members=("mobilenet_v2", "mobilenet_0.75"),
    ),
    BackboneSpec(
        name="efficientnet_b0",
        display_name="EfficientNetB0",
        constructor="EfficientNetB0",
        constructor_kwargs=MappingProxyType({}),
        # The network starts with its own Rescaling and Normalization layers.
        preprocessing="none",
        default_size=224,
        min_size=32,
        parameters=4_049_571,
        feature_dim=1280,
        weights_file="efficientnetb0_notop.h5",
        block_pattern=_EFFICIENTNET_PATTERN,
        block_boundary="start",
        description=(
            "EfficientNetB0 (4.0 million parameters) is more accurate than the MobileNets "
            "for a moderate cost in speed."
        ),
    ),
    BackboneSpec(
        name="efficientnet_v2_b0",
        display_name="EfficientNetV2B0",
        constructor="EfficientNetV2B0",
        constructor_kwargs=MappingProxyType({}),
        # The network starts with its own Rescaling and Normalization layers.
        preprocessing="none",
        default_size=224,
        min_size=32,
        parameters=5_919_312,
        feature_dim=1280,
        weights_file="efficientnetv2-b0_notop.h5",
        block_pattern=_EFFICIENTNET_PATTERN,
        block_boundary="start",
        description=(
            "EfficientNetV2B0 (5.9 million parameters) is about as accurate as EfficientNetB0 "
            "and trains faster on a GPU."
        ),
    ),
    BackboneSpec(
        name="resnet50",
        display_name="ResNet50",
        constructor="ResNet50",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="caffe",
        default_size=224,
        min_size=32,
        parameters=23_587_712,
        feature_dim=2048,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        block_pattern=r"(conv\d_block\d+)_",
        block_boundary="start",
        description=(
            "ResNet50 (23.6 million parameters) is a classic, dependable network that is accurate "
            "but several times slower than the mobile ones."
        ),
    ),
    BackboneSpec(
        name="vgg16",
        display_name="VGG16",
        constructor="VGG16",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="caffe",
        default_size=224,
        min_size=32,
        parameters=14_714_688,
        feature_dim=512,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        block_pattern=r"(block\d+)_",
        block_boundary="start",
        description=(
            "VGG16 (14.7 million parameters) is an old plain stack of convolutions that costs a lot "
            "of computation and is usually less accurate than newer networks."
        ),
    ),
    BackboneSpec(
        name="inception_v3",
        display_name="InceptionV3",
        constructor="InceptionV3",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="tf",
        default_size=299,
        min_size=75,
        parameters=21_802_784,
        feature_dim=2048,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        # Only the concatenations that close a module are named ("mixed0" to
        # "mixed10"); every other layer has a generic numbered name, so the
        # stem cannot be told apart and is part of the "mixed0" block.
        block_pattern=r"(mixed\d+)$",
        block_boundary="end",
        description=(
            "InceptionV3 (21.8 million parameters) is an accurate mid-size network trained on "
            "299-pixel images and slower than the mobile ones."
        ),
    ),
    BackboneSpec(
        name="xception",
        display_name="Xception",
        constructor="Xception",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="tf",
        default_size=299,
        min_size=71,
        parameters=20_861_480,
        feature_dim=2048,
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        block_pattern=r"(block\d+)_",
        block_boundary="start",
        description=(
            "Xception (20.9 million parameters) is an accurate network of separable convolutions "
            "trained on 299-pixel images and slow on a CPU."
        ),
    ),
    BackboneSpec(
        name="densenet121",
        display_name="DenseNet121",
        constructor="DenseNet121",
        constructor_kwargs=MappingProxyType({}),
        preprocessing="torch",
        default_size=224,
        min_size=32,
        parameters=7_037_504,
        feature_dim=1024,
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        # A dense block's transition layers ("pool2_bn" ... "pool2_pool") match
        # nothing and so stay in the dense block before them.
        block_pattern=r"(conv\d)_block",
        block_boundary="start",
        description=(
            "DenseNet121 (7.0 million parameters) matches ResNet50's accuracy with fewer weights "
            "but is slower than its size suggests."
        ),
    ),
)

BACKBONES_BY_NAME: Mapping[str, BackboneSpec] = MappingProxyType({spec.name: spec for spec in BACKBONES})


def feature_wording(spec: BackboneSpec) -> str:
    """The length of a backbone's feature vector and where it comes from, e.g. ``2,192 features (1,280 from the last layer, 912 from 3 earlier ones)``."""
    if spec.members:
        parts = " and ".join(f"{member.feature_dim:,} from {member.display_name}" for member in spec.member_specs)
        return f"{spec.feature_dim:,} features ({parts})"
    if not spec.feature_layers:
        return f"{spec.feature_dim:,} features"
    earlier = sum(spec.feature_layers.values())
    return f"{spec.feature_dim:,} features ({spec.last_channels:,} from the last layer, {earlier:,} from {len(spec.feature_layers)} earlier ones)"


def joined_backbone(spec: BackboneSpec) -> BackboneSpec | None:
    """The joined backbone whose first network is ``spec`` (what feature extraction may run beside it), or None."""
    return next((other for other in BACKBONES if other.members and other.members[0] == spec.name), None)


def list_backbones() -> list[BackboneSpec]:
    """Lists every backbone of the table.

    Returns:
        A new list of the specs, in table order.
    """
    return list(BACKBONES)


def _normalise_name(name: str) -> str:
    """Turns a name as a user may type it into the table's spelling.

    Args:
        name: E.g. ``"MobileNet-V2"``.

    Returns:
        The lower-case name with ``-`` replaced by ``_``, e.g. ``"mobilenet_v2"``.
    """
    return name.strip().lower().replace("-", "_")


def get_backbone(name: str) -> BackboneSpec:
    """Finds a backbone by its name, ignoring case and accepting ``-`` for ``_``.

    Args:
        name: The backbone's name, e.g. ``"resnet50"`` or ``"MobileNet-V2"``.

    Returns:
        The backbone's spec.

    Raises:
        ConfigError: When no backbone has that name.
    """
    spec = BACKBONES_BY_NAME.get(_normalise_name(name))
    if spec is None:
        choices = ", ".join(sorted(BACKBONES_BY_NAME))
        raise ConfigError(
            f"Unknown backbone '{name}'. Choose one of: {choices} "
            "(python -m tl_core backbones lists them)."
        )
    return spec
