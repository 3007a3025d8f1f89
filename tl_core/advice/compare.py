"""Strategies compared side by side: each trained briefly on the same split, judged on validation accuracy only.

Where two views of the data disagree (small data unlike ImageNet: freeze the
early layers, or train from scratch?), this is what settles it: the pick
(``best_row``) looks at the validation split only; the held-out split is
reported beside it but chooses nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tl_core.config import AugmentConfig, TrainConfig
from tl_core.data.scan import scan_dataset
from tl_core.errors import TLError

# A lead in validation accuracy below this is never taken as a win in a comparison.
CLOSE_CALL = 0.01


@dataclass(frozen=True)
class ComparisonRow:
    """One strategy's run in a side-by-side comparison.

    Attributes:
        strategy: The strategy.
        val_accuracy: Validation accuracy of the kept epoch (the one with the lowest validation loss).
        val_loss: That epoch's validation loss.
        held_out_accuracy: Accuracy of the kept model on the held-out split (shown, never used to pick).
        seconds: How long the comparison run took.
        epochs: Epochs it ran.
        status: ``"finished"``, ``"stopped"`` or ``"failed"``.
        error: The failure message, when it failed.
        full_run_seconds: Estimated time of a full run of the strategy's recipe on this device.
        val_images: Images in the validation split (how precisely the accuracies can be compared).
    """

    strategy: str
    val_accuracy: float | None
    val_loss: float | None
    held_out_accuracy: float | None
    seconds: float
    epochs: int
    status: str
    error: str = ""
    full_run_seconds: float | None = None
    val_images: int = 0


def comparison_config(
    data_dir: str | Path, strategy: str, out_dir: str | Path, epochs: int, backbone: str = "mobilenet_v2", image_size: int | None = None,
    train_images_per_class: int | None = None, freeze_layers: int | None = None, cache_dir: str | None = None, seed: int = 0, flip: str = "horizontal",
    centre_crop: bool = False,
) -> TrainConfig:
    """The run a comparison makes of one strategy: its recipe, with ``epochs`` epochs wherever epochs cost a pass over the images.

    Feature extraction keeps its whole recipe: on cached features every epoch costs
    next to nothing, so it is compared at its best. Every run has the same split,
    seed, image size and framing (``centre_crop``: the images' middles), so the validation images are the same for all.
    """
    return TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(out_dir),
        backbone=backbone,
        strategy=strategy,
        freeze_layers=freeze_layers if strategy == "fine_tune" else None,
        epochs=None if strategy == "feature_extraction" else epochs,
        image_size=image_size,
        max_train_images_per_class=train_images_per_class,
        augmentation=AugmentConfig(flip=flip),
        export_formats=(),  # a comparison's runs are measured, not shipped
        cache_dir=cache_dir,
        seed=seed,
        centre_crop=centre_crop,
    ).validated()


def compare_strategies(
    data_dir: str | Path,
    strategies: list[str],
    out_root: str | Path,
    backbone: str = "mobilenet_v2",
    epochs: int = 2,
    image_size: int | None = None,
    train_images_per_class: int | None = None,
    freeze_layers: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    flip: str = "horizontal",
    on_row=None,
    stop=None,
    centre_crop: bool = False,
) -> list[ComparisonRow]:
    """Trains each strategy on the same split (see ``comparison_config``) and reports validation accuracy and time.

    The pick (``best_row``) looks at the validation split only; the held-out split is
    reported beside it but chooses nothing. Each row also says how long a full run
    of the strategy's recipe would take here.

    Args:
        data_dir: The dataset folder.
        strategies: Strategy names to compare, in order.
        out_root: Folder for the runs' files (one sub-folder per strategy).
        backbone: The backbone all runs start from.
        epochs: Epochs of each strategy's image-training phase (fine-tuning, training from scratch).
        image_size: Input size (None: the backbone's own).
        train_images_per_class: At most this many training images per class (None: all).
        freeze_layers: Freeze depth for ``fine_tune`` (None: its default).
        cache_dir: Cache folder shared with training.
        seed: Seed of everything.
        flip: The augmentation's flips (``"none"`` where mirror images are another class).
        centre_crop: Every run reads the images' middles (where the advice measured them better).
        on_row: Called with each finished row (for progress).
        stop: A ``StopRequest`` that ends the comparison after the current run.

    Returns:
        One row per strategy, in the order given.
    """
    from tl_core.device import detect_device
    from tl_core.models.backbones import get_backbone
    from tl_core.training.estimate import estimate_run, forward_throughput
    from tl_core.training.run import train

    dataset = scan_dataset(data_dir, seed=seed)
    size = image_size or get_backbone(backbone).default_size
    throughput = forward_throughput(backbone, size, detect_device().key, cache_dir)
    rows = []
    for strategy in strategies:
        if stop is not None and stop.requested:
            break
        config = comparison_config(data_dir, strategy, Path(out_root) / strategy, epochs, backbone, image_size, train_images_per_class, freeze_layers, cache_dir, seed, flip, centre_crop)
        full_run = estimate_run(replace(config, epochs=None, warmup_epochs=None, max_train_images_per_class=None).validated(), dataset, throughput)
        started = time.perf_counter()
        try:
            result = train(config, stop=stop)
        except TLError as error:
            rows.append(ComparisonRow(strategy, None, None, None, round(time.perf_counter() - started, 2), 0, "failed", str(error), full_run.seconds))
        else:
            kept = next((entry for entry in result.history if entry["epoch"] == result.summary.best_epoch), None)
            rows.append(
                ComparisonRow(
                    strategy,
                    kept["val_accuracy"] if kept else None,
                    kept["val_loss"] if kept else None,
                    result.evaluation.accuracy if result.evaluation else None,
                    round(time.perf_counter() - started, 2),
                    len(result.history),
                    result.status,
                    full_run_seconds=full_run.seconds,
                    val_images=sum(result.summary.data["counts"].get("val", {}).values()),
                )
            )
        if on_row is not None:
            on_row(rows[-1])
    return rows


def best_row(rows: list[ComparisonRow]) -> ComparisonRow | None:
    """The pick: the most accurate on validation, unless a faster strategy is as good as the validation split can tell.

    Two accuracies measured on ``n`` validation images differ by chance by about
    ``sqrt(2 p (1 - p) / n)`` (one standard error of the difference). A lead
    smaller than that, or than a point, is no evidence, so the strategy whose
    full run is fastest among those that close wins. Ties on accuracy go to the
    lower validation loss.
    """
    finished = [row for row in rows if row.val_accuracy is not None]
    if not finished:
        return None
    leader = max(finished, key=lambda row: (round(row.val_accuracy, 4), -(row.val_loss or 0.0), -row.seconds))
    close = [row for row in finished if leader.val_accuracy - row.val_accuracy <= _noise(leader)]
    return min(close, key=lambda row: (row.full_run_seconds if row.full_run_seconds is not None else row.seconds, -row.val_accuracy))


def _noise(row: ComparisonRow) -> float:
    """The smallest lead in validation accuracy taken as real: a point, or one standard error of a difference on these images."""
    if not row.val_images:
        return CLOSE_CALL
    accuracy = min(max(row.val_accuracy, 0.0), 1.0)
    return max(CLOSE_CALL, math.sqrt(2 * accuracy * (1 - accuracy) / row.val_images))
