"""A backbone's layers grouped into blocks, for "freeze up to block N" choices.

Blocks are found from the layers' names alone (``BackboneSpec.block_pattern``),
so a user interface can draw them after building the network once without
weights. The default fine-tuning depth (the first two thirds of the blocks
frozen) is decided here too.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tl_core.models.backbones import BackboneSpec

if TYPE_CHECKING:
    import keras

@dataclass(frozen=True)
class Block:
    """A run of consecutive layers of a backbone that is frozen or trained together.

    Attributes:
        name: Short readable name, e.g. ``"stem"``, ``"block_3"``, ``"mixed5"`` or ``"top"``.
        start: Index into ``backbone.layers`` of the block's first layer
            (index 0 is the input layer).
        end: Index one past the block's last layer.
    """

    name: str
    start: int
    end: int


def _block_label(spec: BackboneSpec, pattern: re.Pattern[str], layer_name: str) -> str | None:
    """The label of the block a layer name marks, if it marks one.

    Args:
        spec: The backbone, for its display names of group values.
        pattern: The compiled ``spec.block_pattern``.
        layer_name: Name of one layer.

    Returns:
        The block's display name, or None when the name does not match.
    """
    match = pattern.match(layer_name)
    if match is None or match.group(1) is None:
        return None
    value = match.group(1)
    return spec.block_labels.get(value, value)


def _leading_block_name(layer_count: int) -> str:
    """Name of the block of layers that come before the first matching layer.

    Args:
        layer_count: How many layers that block holds.

    Returns:
        ``"input"`` when it holds the input layer alone, otherwise ``"stem"``.
    """
    return "input" if layer_count == 1 else "stem"


def _blocks_by_starts(labels: list[str | None]) -> list[Block]:
    """Groups layers where each matching layer belongs to the block its label names.

    Args:
        labels: One label per layer; None for layers that match nothing.

    Returns:
        The blocks, covering every layer in order.
    """
    names: list[str] = []
    starts: list[int] = []
    for index, label in enumerate(labels):
        if label is None or (names and names[-1] == label):
            continue
        if index > 0 and not starts:
            names.append(_leading_block_name(index))
            starts.append(0)
        names.append(label)
        starts.append(index)
    if not starts:
        return [Block(_leading_block_name(len(labels)), 0, len(labels))]
    ends = starts[1:] + [len(labels)]
    return [Block(name, start, end) for name, start, end in zip(names, starts, ends, strict=False)]


def _blocks_by_ends(labels: list[str | None]) -> list[Block]:
    """Groups layers where each matching layer is the last layer of its block.

    Consecutive matching layers with the same label end one block together.
    Layers after the last matching layer join the last block.

    Args:
        labels: One label per layer; None for layers that match nothing.

    Returns:
        The blocks, covering every layer in order.
    """
    blocks: list[Block] = []
    start = 0
    for index, label in enumerate(labels):
        if label is None:
            continue
        if blocks and blocks[-1].name == label and blocks[-1].end == index:
            blocks[-1] = Block(label, blocks[-1].start, index + 1)
        else:
            blocks.append(Block(label, start, index + 1))
        start = index + 1
    if not blocks:
        return [Block(_leading_block_name(len(labels)), 0, len(labels))]
    if start < len(labels):
        blocks[-1] = Block(blocks[-1].name, blocks[-1].start, len(labels))
    return blocks


def blocks_from_layer_names(spec: BackboneSpec, layer_names: list[str]) -> list[Block]:
    """Groups a backbone's layers into blocks, using only the layers' names.

    Layers that match ``spec.block_pattern`` mark blocks as ``spec.block_boundary``
    says. Layers that match nothing (the input, generic ``add`` or padding
    layers, ...) join the block of the layer before them; in ``"start"`` mode
    the layers before the first match form their own block, named ``"input"``
    when that is the input layer alone and ``"stem"`` otherwise. The blocks
    cover all layers without gaps: the first starts at 0, each starts where
    the one before ends, and the last ends at ``len(layer_names)``.

    Args:
        spec: The backbone whose naming scheme to apply.
        layer_names: The names of ``backbone.layers``, in order.

    Returns:
        The blocks in layer order; an empty list when there are no layers.

    Raises:
        ValueError: When the spec's pattern has no capturing group.
    """
    pattern = re.compile(spec.block_pattern)
    if pattern.groups < 1:
        raise ValueError(f"The block pattern of backbone '{spec.name}' has no capturing group to name its blocks.")
    if not layer_names:
        return []
    labels = [_block_label(spec, pattern, layer_name) for layer_name in layer_names]
    if spec.block_boundary == "end":
        return _blocks_by_ends(labels)
    return _blocks_by_starts(labels)


def _build_without_weights(spec: BackboneSpec) -> keras.Model:
    """Builds a backbone with random weights, as the engine builds it but without a download.

    Args:
        spec: The backbone to build.

    Returns:
        The ``keras.Model`` without its classifier top.
    """
    import keras

    if spec.members:
        from tl_core.models.build import build_backbone

        return build_backbone(spec, "none")
    constructor = getattr(keras.applications, spec.constructor)
    return constructor(
        include_top=False,
        weights=None,
        input_shape=(None, None, 3),
        **dict(spec.constructor_kwargs),
    )


@functools.lru_cache(maxsize=4)
def build_backbone_for_inspection(spec: BackboneSpec) -> keras.Model:
    """Builds a backbone with random weights, to look at its layers.

    The network is built as the engine builds it (``include_top=False``,
    ``input_shape=(None, None, 3)``) but without pretrained weights, so no
    download happens. The last four models asked for are kept, so treat the
    returned model as read-only; ``build_backbone_for_inspection.cache_clear()``
    releases them.

    Args:
        spec: The backbone to build.

    Returns:
        The ``keras.Model`` without its classifier top.
    """
    return _build_without_weights(spec)


@functools.cache
def layer_names(spec: BackboneSpec) -> tuple[str, ...]:
    """The names of a backbone's layers, in order (remembered per spec).

    The model built to read them is not kept, so a training process that
    asks for blocks does not hold a second copy of the backbone.

    Args:
        spec: The backbone.

    Returns:
        One name per entry of ``model.layers``.
    """
    model = _build_without_weights(spec)
    return tuple(layer.name for layer in model.layers)


def default_freeze_layers(spec: BackboneSpec, layer_names: list[str]) -> int:
    """The default fine-tuning depth: freeze the first two thirds of the backbone's blocks."""
    blocks = blocks_from_layer_names(spec, layer_names)
    return blocks[min(len(blocks) - 1, round(len(blocks) * 2 / 3))].start


def block_starts(spec: BackboneSpec) -> list[Block]:
    """The blocks of a backbone, found by building it once with random weights.

    The layer names are remembered per spec, so later calls do not build again.

    Args:
        spec: The backbone.

    Returns:
        The blocks of ``blocks_from_layer_names`` for the built model's layers.
    """
    return blocks_from_layer_names(spec, list(layer_names(spec)))


def freeze_wording(blocks: list[Block], frozen_layers: int) -> str:
    """How deep a backbone is frozen, in the one wording the advice, the Setup page, the freeze map and the command line use.

    ``the first 107 of 154 layers frozen (stem to block_11); block_12 to top retrain``, or, when the
    depth falls inside a block, ``... frozen (stem to block_11 and part of block_12); the rest of
    block_12 to top retrain``.

    Args:
        blocks: The backbone's blocks (``blocks_from_layer_names``), covering every layer.
        frozen_layers: Layers kept frozen, from the input.
    """
    if not blocks:
        return f"the first {frozen_layers} layers frozen"
    total, first, last = blocks[-1].end, blocks[0].name, blocks[-1].name
    if frozen_layers <= 0:
        return f"no layer frozen: all {total} layers retrain ({first} to {last})"
    if frozen_layers >= total:
        return f"all {total} layers frozen ({first} to {last}); only the new head trains"
    split = next(block for block in blocks if block.start <= frozen_layers < block.end)
    whole = [block for block in blocks if block.end <= frozen_layers]
    frozen_names = f"{first} to {whole[-1].name}" if len(whole) > 1 else (whole[0].name if whole else "")
    if split.start == frozen_layers:
        retrain = f"{split.name} to {last} retrain" if split is not blocks[-1] else f"{last} retrains"
    else:
        frozen_names = f"{frozen_names} and part of {split.name}" if frozen_names else f"part of {split.name}"
        retrain = f"the rest of {split.name} to {last} retrain" if split is not blocks[-1] else f"the rest of {last} retrains"
    return f"the first {frozen_layers} of {total} layers frozen ({frozen_names}); {retrain}"
