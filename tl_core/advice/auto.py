"""``--strategy auto``: measure the data, then train with the advised strategy.

``run_training`` is what the command line and the app call to train: a config
whose strategy is ``auto`` is first measured with ``tl_core.advice.advise`` and
given the advised strategy, freeze depth, flips and epochs; any other config
goes straight to ``tl_core.training.run.train``. TensorFlow is imported only
inside the functions that train, so the app's pages can import this module.
"""

from __future__ import annotations

from dataclasses import replace

from tl_core.advice.settings import suggested_settings
from tl_core.config import AUTO_STRATEGY, TrainConfig
from tl_core.data.scan import scan_dataset
from tl_core.errors import TLError
from tl_core.events import EventHandler, PhaseStarted, StopRequest, TrainingFailed, ignore_event
from tl_core.models.backbones import get_backbone


def run_training(config: TrainConfig, on_event: EventHandler = ignore_event, stop: StopRequest | None = None, created_by: str = ""):
    """Trains as ``config`` says; the strategy ``auto`` measures the data first and follows the advice.

    ``created_by`` names who started the run on a shared app (kept in ``run.json``).

    Returns:
        The ``tl_core.training.RunResult``.

    Raises:
        TLError: For problems the user can fix; a ``TrainingFailed`` event carries the same message.
    """
    from tl_core.training.run import train

    notes: list[str] = []
    if config.strategy.strip().lower() == AUTO_STRATEGY:
        try:
            config, notes = resolve_auto(config.validated(), on_event)
        except TLError as error:
            on_event(TrainingFailed(str(error), type(error).__name__))
            raise
    return train(config, on_event=on_event, stop=stop, notes=notes, created_by=created_by)


def resolve_auto(config: TrainConfig, on_event: EventHandler = ignore_event) -> tuple[TrainConfig, list[str]]:
    """``--strategy auto``: measures the data, then gives the config the advised strategy and freeze depth.

    A freeze depth the user gave is kept for fine-tuning (and said to be unused otherwise).

    Returns:
        The config to train with, and notes on how it was chosen (the run shows and keeps them).
    """
    from tl_core.advice.advise import advise

    dataset = scan_dataset(config.data_dir, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    on_event(PhaseStarted("advise", "Measuring how similar the images are to ImageNet, and timing the candidates, to choose the strategy"))
    advice = advise(dataset, backbone=config.backbone, cache_dir=config.cache_dir, seed=config.seed, time_budget_minutes=config.time_budget_minutes)
    strategy = advice.recommendation.strategy
    backbone = advice.chosen_backbone or advice.backbone
    suggested = suggested_settings(dataset, backbone, strategy, config.quick, advice)
    notes = [f"Advice: {reason}" for reason in advice.reasons]
    changes: dict[str, object] = {}
    if backbone != get_backbone(config.backbone).name:
        changes["backbone"] = backbone
        notes.append(f"Backbone: {get_backbone(backbone).display_name} (you chose {get_backbone(config.backbone).display_name}): {_backbone_reason(advice)}")
    if config.epochs is None and not config.quick:
        changes["epochs"] = suggested.epochs  # the recipe's epochs, or fewer to fit the time budget
    if suggested.image_size and config.image_size is None:
        changes["image_size"] = suggested.image_size
    elif suggested.image_size and config.image_size != suggested.image_size:
        notes.append(f"Your image size of {config.image_size} px is kept (the advice suggested {suggested.image_size} px).")
    if suggested.flip == "none" and config.augmentation.flip != "none":
        flip = "vertical" if config.augmentation.flip == "horizontal_and_vertical" else "none"
        changes["augmentation"] = replace(config.augmentation, flip=flip)
        notes.append(f"Left-right flips turned off ({config.augmentation.flip} -> {flip}): mirror images look like another class in this data.")
    if suggested.turns and config.augmentation.turns is None:
        changes["augmentation"] = replace(changes.get("augmentation", config.augmentation), turns=True)
        notes.append("Turned views on: turned images show the same class in this data, so the model learns from, and answers over, each image's eight turned and mirrored views.")
    if suggested.centre_crop and config.centre_crop is None:
        changes["centre_crop"] = True
        notes.append(
            "Centre crop on: the middles of your images read better than the whole images, so the model learns from, and answers from, "
            "the middle 80 % of each side (the saved model takes images a quarter larger and crops them itself)."
        )
    given = config.freeze_layers
    if strategy != "fine_tune":
        freeze = None
        if given is not None:
            notes.append(f"Your freeze depth ({given} layers) is not used: the advice chose {strategy}, which does not freeze a chosen number of layers.")
    elif given is not None:
        freeze = given
        notes.append(f"Fine-tuning keeps your freeze depth of {given} layers (the advice suggested {suggested.freeze_layers}).")
    else:
        freeze = suggested.freeze_layers
    return replace(config, strategy=strategy, freeze_layers=freeze, **changes).validated(), notes


def _backbone_reason(advice) -> str:
    """Why the advice runs another backbone than the one asked for, from its candidates."""
    chosen = next(row for row in advice.candidates if row.recommended)
    alone = [row for row in advice.candidates if row.backbone is None and row.strategy == chosen.strategy and row.image_size == chosen.image_size]
    if chosen.backbone and alone and chosen.expected_accuracy is not None and alone[0].expected_accuracy is not None:
        return f"measured on your images, its features are expected to reach {chosen.expected_accuracy:.1%} against {alone[0].expected_accuracy:.1%} with one network."
    if chosen.backbone:
        return "its features measured better on your images."
    return f"the advice measured {get_backbone(advice.backbone).display_name} and weighed the strategies with it."
