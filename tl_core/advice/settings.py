"""The settings a run starts from where the user has not chosen: one rule for the Setup page and the command line.

For a strategy (and its quick variant) on a dataset: the recipe's epochs, or
the advice's when it fitted them to the time budget; the freeze depth measured
by the advice, or the usual depth; no left-right flips where the advice found
that mirror images look like another class; class weights on for imbalanced
data; the input size the advice measured as best for the strategy. ``--strategy auto`` (``tl_core.advice.auto``) and the Setup page both
start from ``suggested_settings``, so the same choices give the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_core.advice.candidates import best_candidate
from tl_core.config import STRATEGY_NAMES, class_weights_default, recipe_defaults
from tl_core.data.records import Dataset
from tl_core.models.backbones import get_backbone


@dataclass(frozen=True)
class SuggestedSettings:
    """What a run of ``strategy`` starts from on this dataset, and why.

    Attributes:
        strategy: The strategy.
        quick: Whether these are its quick variant's.
        epochs: Epochs of the main phase.
        warmup_epochs: At most this many head-only epochs first (strategies with a warm-up; else 0).
        early_stopping_patience: Epochs without a better validation loss before stopping.
        learning_rate_schedule: ``cosine`` or ``constant``.
        test_time_flip: Whether predictions average the image and its mirror image.
        flip: The augmentation's flips (``none`` where mirror images look like another class).
        class_weights: Whether the loss weights classes by inverse frequency.
        freeze_layers: For fine-tuning, the backbone layers kept frozen; None otherwise.
        freeze_block: For fine-tuning, the first block that trains.
        freeze_reason: Where that depth comes from, in words.
        epochs_reason: Where the epochs come from, in words.
        image_size: The input size the advice measured as best for this strategy (None: the backbone's own).
        image_size_reason: Why, in words.
        turns: Turned images show the same class (the advice measured it): feature extraction learns from the eight turned and mirrored views.
        centre_crop: The images' middles read better than the whole images (the advice measured it, ``tl_core.advice.framing``).
    """

    strategy: str
    quick: bool
    epochs: int
    warmup_epochs: int
    early_stopping_patience: int
    learning_rate_schedule: str
    test_time_flip: bool
    flip: str
    class_weights: bool
    freeze_layers: int | None = None
    freeze_block: str = ""
    freeze_reason: str = ""
    epochs_reason: str = ""
    image_size: int | None = None
    image_size_reason: str = ""
    turns: bool = False
    centre_crop: bool = False


def suggested_settings(dataset: Dataset, backbone: str, strategy: str, quick: bool = False, advice=None, layer_names: list[str] | None = None) -> SuggestedSettings:
    """The starting settings of ``strategy`` on ``dataset`` (see the module docstring).

    Args:
        dataset: The scanned dataset (its imbalance decides the class weights).
        backbone: The backbone's name (the freeze depth is counted in its layers).
        strategy: A concrete strategy.
        quick: The quick variant of the recipe.
        advice: The measured advice for this dataset (``tl_core.advice.advise.Advice``), or None.
        layer_names: The backbone's layer names, when the caller has them (else the backbone is built once, without weights).
    """
    recipe = recipe_defaults(strategy, quick)
    name = get_backbone(backbone).name
    measured = advice if advice is not None and name in (advice.backbone, advice.chosen_backbone) else None
    epochs, epochs_reason = int(recipe["epochs"]), "the recipe's"
    if measured is not None and measured.epochs and measured.recommendation.strategy == strategy and not quick and measured.epochs != epochs:
        epochs, epochs_reason = int(measured.epochs), f"fitted by the advice to its time budget of {measured.time_budget_minutes:g} min"
    image_size, image_size_reason = None, ""
    sized = [row for row in (measured.candidates if measured is not None else []) if row.strategy == strategy and (row.backbone or measured.backbone) == name]
    if any(row.image_size for row in sized):
        image_size = best_candidate(sized).image_size
        image_size_reason = measured.image_size_reason if strategy == measured.recommendation.strategy else (
            f"Image size {image_size or get_backbone(backbone).default_size} px: of the sizes the advice weighed for {STRATEGY_NAMES[strategy]} "
            f"({', '.join(str(row.image_size or get_backbone(backbone).default_size) + ' px' for row in sized)}), the one expected to do best in the time budget."
        )
    freeze_layers, freeze_block, freeze_reason = None, "", ""
    if strategy == "fine_tune":
        freeze_layers, freeze_block, freeze_reason = _freeze_depth(backbone, measured, layer_names)
    return SuggestedSettings(
        strategy=strategy,
        quick=quick,
        epochs=epochs,
        warmup_epochs=int(recipe["warmup_epochs"]),
        early_stopping_patience=int(recipe["early_stopping_patience"]),
        learning_rate_schedule=str(recipe["learning_rate_schedule"]),
        test_time_flip=bool(recipe["test_time_flip"]),
        flip=advice.flip if advice is not None else "horizontal",
        class_weights=class_weights_default(dataset.imbalance_ratio()),
        freeze_layers=freeze_layers,
        freeze_block=freeze_block,
        freeze_reason=freeze_reason,
        epochs_reason=epochs_reason,
        image_size=image_size,
        image_size_reason=image_size_reason,
        turns=bool(advice is not None and advice.turns),
        centre_crop=bool(advice is not None and advice.centre_crop),
    )


def _freeze_depth(backbone: str, advice, names: list[str] | None) -> tuple[int, str, str]:
    """The measured depth for fine-tuning when the advice has one, else the usual depth (the first two thirds of the blocks): layers, first block that trains, why."""
    from tl_core.models.blocks import blocks_from_layer_names, default_freeze_layers, layer_names

    spec = get_backbone(backbone)
    if advice is not None and advice.fine_tune_freeze_layers:
        why = f"measured: {advice.fine_tune_freeze_reason}" if advice.fine_tune_freeze_reason else "measured where your images move the network's statistics"
        return advice.fine_tune_freeze_layers, advice.fine_tune_freeze_block, why
    names = names if names is not None else list(layer_names(spec))
    frozen = default_freeze_layers(spec, names)
    block = next((block.name for block in blocks_from_layer_names(spec, names) if block.start == frozen), "")
    return frozen, block, "the usual depth: the first two thirds of the blocks stay frozen"
