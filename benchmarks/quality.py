"""Accuracy benchmark: the recipes on one dataset, same split and seed, accuracy and minutes side by side.

    python -m benchmarks.quality ../shared/datasets/cats_dogs
    python -m benchmarks.quality DATA --recipes articles,feature_extraction,fine_tune,auto,compare
    python -m benchmarks.quality DATA --backbone mobilenet_0.75   # every row with another network
    python -m benchmarks.quality DATA --smoke          # tiny settings, seconds (used by the test suite)
    python -m benchmarks.quality ../shared/datasets/aerial --tiles 64 --recipes feature_extraction,auto
    python -m benchmarks.quality DATA --shrink 64      # every image shrunk to 64 px first

``--tiles N`` and ``--shrink N`` run every recipe on a small-image copy of DATA written
into the work folder first (``benchmarks.small_images``): the images cut into N px tiles
at their own resolution (each image's tiles in one split), or shrunk to N px.

Every recipe runs in a fresh cache folder, so each pays for decoding the
images and running the backbone as a first run does, and its minutes are
comparable. The rows:

- ``articles``: the articles' recipe: the frozen backbone's pooled features and
  a logistic regression (scikit-learn) on them, nothing else.
- ``feature_extraction`` / ``fine_tune``: our recipes for those strategies
  (``tl_core.config.RECIPES``); ``..._quick``: their quick variants.
- ``auto``: ``--strategy auto``: the advice measures the data, picks a strategy
  within the time budget, and the run follows it (its minutes include the advice).
- ``compare``: the side-by-side comparison (``tl_core.advice.compare.compare_strategies``):
  its pick is printed against the full runs above: did it pick the strategy
  whose full run scored best on the held-out split?

Accuracy and macro-F1 are measured on the held-out split (the given ``val/``
folder when the data has ``train/`` and ``val/`` only); the epoch is chosen on
a validation split carved from ``train/``, so the figures are honest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tl_core.models.backbones import get_backbone

ALL_RECIPES = ("articles", "feature_extraction", "feature_extraction_quick", "fine_tune", "auto", "compare")


@dataclass
class Row:
    recipe: str
    accuracy: float | None
    macro_f1: float | None
    minutes: float
    note: str = ""


def articles_recipe(data: Path, cache: Path, image_size: int, seed: int, backbone: str = "mobilenet_v2") -> Row:
    """Frozen pooled features and a logistic regression, as the articles do it."""
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from tl_core.data.decoded import decode_images
    from tl_core.data.scan import scan_dataset
    from tl_core.features import compiled_forward, forward_batches
    from tl_core.models.build import build_backbone, preprocessing_layers

    started = time.perf_counter()
    dataset = scan_dataset(data, seed=seed)
    decoded = decode_images(dataset.records, image_size, cache_dir=cache)
    dataset = dataset.without(decoded.failed)
    spec = get_backbone(backbone)
    # The articles' features: the backbone's last output, averaged (ours also pool earlier layers: tl_core.models.build).
    inputs = keras.Input((image_size, image_size, 3))
    images = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        images = layer(images)
    feature_model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(build_backbone(spec, "imagenet")(images, training=False)))
    forward = compiled_forward(feature_model, image_size)
    rows = decoded.rows(dataset.records)
    features = forward_batches(forward, decoded.pixels, rows)
    labels = np.array([record.label for record in dataset.records])
    splits = np.array([record.split for record in dataset.records])
    train = splits == "train"
    held_out = splits == dataset.evaluation_split
    model = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
    predicted = model.predict(features[held_out])
    minutes = (time.perf_counter() - started) / 60
    return Row(
        "articles",
        float(accuracy_score(labels[held_out], predicted)),
        float(f1_score(labels[held_out], predicted, average="macro")),
        minutes,
        "frozen features + logistic regression (scikit-learn defaults)",
    )


def our_recipe(name: str, data: Path, work: Path, image_size: int | None, seed: int, time_budget: float, overrides: dict) -> tuple[Row, dict]:
    """One of our recipes through ``run_training``, as the command line and the app run it."""
    from tl_core.advice.auto import run_training
    from tl_core.config import TrainConfig

    strategy = "auto" if name == "auto" else name.removesuffix("_quick")
    config = TrainConfig(
        data_dir=str(data),
        out_dir=str(work / name),
        strategy=strategy,
        image_size=image_size,
        seed=seed,
        cache_dir=str(work / f"cache_{name}"),
        quick=name.endswith("_quick"),
        time_budget_minutes=time_budget,
        export_formats=(),
        **overrides,
    )
    notes = []
    started = time.perf_counter()
    result = run_training(config, on_event=lambda event: notes.append(event.message) if event.kind == "Notice" else None)
    minutes = (time.perf_counter() - started) / 60
    summary = result.summary
    estimate = summary.estimate or {}
    note = f"{summary.strategy}, {len(result.history)} epochs (best {summary.best_epoch}), estimated {estimate.get('seconds', 0) / 60:.1f} min"
    if summary.backbone.get("name") != get_backbone(config.backbone).name:
        note += f", with {summary.backbone.get('display_name')}"
    advice = next((line for line in notes if line.startswith("Advice: Expected on this device")), "")
    if advice:
        note += f" [{advice.removeprefix('Advice: ')}]"
    if summary.test_time_flip:
        note += ", test-time flip"
    return Row(name, result.evaluation.accuracy, result.evaluation.macro_f1, minutes, note), summary


def comparison(data: Path, work: Path, image_size: int | None, seed: int, epochs: int, backbone: str = "mobilenet_v2") -> tuple[Row, str | None]:
    from tl_core.advice.compare import best_row, compare_strategies

    started = time.perf_counter()
    rows = compare_strategies(
        data, ["feature_extraction", "fine_tune"], work / "compare", backbone=backbone, epochs=epochs, image_size=image_size, cache_dir=str(work / "cache_compare"), seed=seed
    )
    minutes = (time.perf_counter() - started) / 60
    winner = best_row(rows)
    detail = ", ".join(f"{row.strategy} val {row.val_accuracy:.4f}" for row in rows if row.val_accuracy is not None)
    return Row("compare", None, None, minutes, f"picked {winner.strategy if winner else 'nothing'} ({detail})"), winner.strategy if winner else None


def _small_copy(arguments, work: Path) -> Path:
    """The folder the recipes run on: DATA itself, or its tiled or shrunk copy written under ``work``."""
    from benchmarks.small_images import shrunk_copy, tiled_copy

    if arguments.tiles is None and arguments.shrink is None:
        return arguments.data
    side = arguments.tiles or arguments.shrink
    kind = "tiles" if arguments.tiles else "shrunk"
    target = work / f"{arguments.data.name}_{kind}{side}"
    shutil.rmtree(target, ignore_errors=True)
    count = tiled_copy(arguments.data, target, side, arguments.seed) if arguments.tiles else shrunk_copy(arguments.data, target, side)
    print(f"== {count} images of {side} px ({kind}) written to {target}", file=sys.stderr, flush=True)
    return target


def format_table(rows: list[Row], dataset_name: str, backbone: str = "MobileNetV2") -> str:
    lines = [f"Accuracy benchmark on {dataset_name} (held-out split, {backbone})", "", "| recipe | accuracy | macro-F1 | minutes | notes |", "|---|---|---|---|---|"]
    for row in rows:
        accuracy = f"{row.accuracy:.4f}" if row.accuracy is not None else ""
        f1 = f"{row.macro_f1:.4f}" if row.macro_f1 is not None else ""
        lines.append(f"| {row.recipe} | {accuracy} | {f1} | {row.minutes:.1f} | {row.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description="Accuracy and minutes of each recipe on one dataset, same split and seed.")
    parser.add_argument("data", type=Path, help="dataset folder")
    parser.add_argument("--recipes", default=",".join(ALL_RECIPES), help=f"comma-separated, from: {', '.join(ALL_RECIPES)}, fine_tune_quick")
    parser.add_argument("--image-size", type=int, default=None, help="side of the square input (default: the backbone's own, 224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="mobilenet_v2", help="the pretrained network of every row (python -m tl_core backbones lists them)")
    parser.add_argument("--time-budget", type=float, default=10.0, help="minutes, for auto (default 10)")
    parser.add_argument("--compare-epochs", type=int, default=2, help="fine-tuning epochs in the comparison (default 2)")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs and caches (default: a temporary folder, removed at the end)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: 32 px, 2 epochs (for the test suite)")
    small = parser.add_mutually_exclusive_group()
    small.add_argument("--tiles", type=int, default=None, metavar="N", help="run on a copy of DATA cut into N px tiles (each image's tiles in one split)")
    small.add_argument("--shrink", type=int, default=None, metavar="N", help="run on a copy of DATA with every image shrunk to N px")
    arguments = parser.parse_args(argv)
    recipes = [name.strip() for name in arguments.recipes.split(",") if name.strip()]
    work = arguments.work or Path(tempfile.mkdtemp(prefix="tl_core_bench_quality_"))
    arguments.data = _small_copy(arguments, work)
    image_size = 32 if arguments.smoke else arguments.image_size
    overrides = {"epochs": 2, "warmup_epochs": 2} if arguments.smoke else {}
    shown = get_backbone(arguments.backbone).display_name
    rows: list[Row] = []
    full_runs: dict[str, float] = {}
    picked = {}
    try:
        for name in recipes:
            print(f"== {name}", file=sys.stderr, flush=True)
            if name == "articles":
                rows.append(articles_recipe(arguments.data, work / "cache_articles", image_size or 224, arguments.seed, arguments.backbone))
            elif name == "compare":
                row, picked["compare"] = comparison(arguments.data, work, image_size, arguments.seed, 1 if arguments.smoke else arguments.compare_epochs, arguments.backbone)
                rows.append(row)
            else:
                row, summary = our_recipe(
                    name, arguments.data, work, image_size, arguments.seed, arguments.time_budget, {**(overrides if name != "auto" else {}), "backbone": arguments.backbone}
                )
                rows.append(row)
                if name in ("feature_extraction", "fine_tune"):
                    full_runs[name] = row.accuracy
                if name == "auto":
                    picked["auto"] = summary.strategy
            print(format_table(rows[-1:], arguments.data.name, shown).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        if arguments.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(rows, arguments.data.name, shown))
    if full_runs:
        best = max(full_runs, key=full_runs.get)
        for who, choice in picked.items():
            verdict = "the best full run" if full_runs.get(choice) == full_runs[best] else f"not the best full run ({best}: {full_runs[best]:.4f})"
            print(f"{who} picked {choice}: {verdict}")
    if arguments.json:
        arguments.json.write_text(json.dumps({"dataset": str(arguments.data), "rows": [asdict(row) for row in rows], "picked": picked}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
