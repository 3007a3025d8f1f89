"""Command line: everything the app does, scriptable.

    python -m tl_core inspect DATA
    python -m tl_core train DATA --out RUN_DIR [options]
    python -m tl_core evaluate RUN_DIR DATA
    python -m tl_core predict RUN_DIR IMAGE [IMAGE ...]
    python -m tl_core export RUN_DIR --format tflite|int8|onnx [...]
    python -m tl_core runs [--json]
    python -m tl_core explain RUN_DIR IMAGE [--class NAME] --out map.png
    python -m tl_core label-issues DATA [--json] [--report FILE]
    python -m tl_core label-decide DATA --exclude PATH --relabel PATH=CLASS --keep PATH --forget PATH
    python -m tl_core advise DATA
    python -m tl_core compare DATA
    python -m tl_core backbones

A problem the user can fix ends the command with one line on stderr that
names the problem and the fix, and exit status 2. No traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from tl_core.errors import TLError

EXIT_USER_ERROR = 2
EXIT_SOME_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    arguments = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return arguments.handler(arguments)
    except TLError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's start-up chatter and Keras' internal warnings off the terminal (set before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\..*)?$")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core", description="Guided transfer learning for images: from a folder of labelled photos to a trained model file.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="print a dataset summary as JSON", description="Scan a dataset folder and print its summary as JSON.")
    inspect.add_argument("data", metavar="DATA", help="folder with one sub-folder per class (optionally inside train/ val/ test/)")
    _add_split_options(inspect)
    inspect.set_defaults(handler=_inspect)

    train = commands.add_parser("train", help="train, evaluate and export a model", description="Train a classifier on DATA, evaluate it and write the model files to RUN_DIR.")
    train.add_argument("data", metavar="DATA", help="folder with one sub-folder per class (optionally inside train/ val/ test/)")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="folder that receives model.h5, model.keras, labels.json, metrics.json and run.json")
    train.add_argument("--backbone", default="mobilenet_v2", help="pretrained network to start from (see 'backbones'; default mobilenet_v2)")
    train.add_argument("--weights", default="imagenet", help="imagenet (Keras' download/cache), none (random), or a weights file path (default imagenet)")
    train.add_argument(
        "--strategy", default="feature_extraction",
        help="feature_extraction, fine_tune, full_fine_tune, from_scratch, or auto (measure the data and follow the advice) (default feature_extraction)",
    )
    train.add_argument("--freeze", type=int, default=None, metavar="K", dest="freeze_layers", help="fine_tune: backbone layers kept frozen (default: the first two thirds of its blocks)")
    train.add_argument("--epochs", type=int, default=None, help="epochs of the main phase (default: the strategy's recipe, e.g. up to 200 head epochs for feature extraction, 8 for fine-tuning)")
    train.add_argument("--warmup-epochs", type=int, default=None, help="fine-tuning: head-only epochs on cached features first (default: the recipe's, up to 200: the head trains until its validation loss stops improving; 0 to skip)")
    train.add_argument(
        "--time-budget", type=float, default=10.0, metavar="MINUTES", dest="time_budget_minutes",
        help="--strategy auto: recommend no strategy expected to take longer here, and fit fine-tuning's epochs into it (default 10)",
    )
    train.add_argument("--quick", action="store_true", help="the quick variant of the strategy's recipe: fewer epochs, no test-time flip (a first look in a fraction of the time)")
    train.add_argument("--image-size", type=int, default=None, help="side of the square input in pixels (default: the backbone's own, e.g. 224)")
    train.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="learning rate of the head and of from_scratch (default 0.001)")
    train.add_argument("--fine-tune-learning-rate", type=float, default=None, help="learning rate of unfrozen backbone layers (default: learning rate / 10)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help="randomly flip/rotate/zoom/shift/contrast training images (default on)")
    train.add_argument("--augment-views", type=int, default=0, help="feature extraction: augmented copies of the training set to cache features of (default 0)")
    train.add_argument("--flip", default="horizontal", help="augmentation flip: horizontal, vertical, horizontal_and_vertical or none")
    train.add_argument("--rotation", type=float, default=0.1, help="augmentation: largest rotation as a fraction of a full turn (default 0.1 = 36 degrees)")
    train.add_argument("--zoom", type=float, default=0.2, help="augmentation: largest zoom as a fraction (default 0.2)")
    train.add_argument("--translation", type=float, default=0.1, help="augmentation: largest shift as a fraction (default 0.1)")
    train.add_argument("--contrast", type=float, default=0.2, help="augmentation: largest contrast change as a fraction (default 0.2)")
    train.add_argument("--head-units", type=int, default=0, help="width of a hidden layer in the new head (default 0: none)")
    train.add_argument("--dropout", type=float, default=0.2, help="dropout in the head (default 0.2)")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="share of each training target spread over all classes (default 0)")
    train.add_argument(
        "--schedule", default=None, dest="learning_rate_schedule", choices=("cosine", "constant"),
        help="learning rate while backbone layers train: cosine (warm-up, then decay) or constant (default: the recipe's, cosine)",
    )
    train.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=None, dest="test_time_flip",
        help="average each prediction over the image and its mirror image, in the evaluation and inside the exported model (default: on when flips are)",
    )
    train.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=False, help="weight classes by inverse frequency (for imbalanced data)")
    train.add_argument(
        "--patience", type=int, default=None, dest="early_stopping_patience", help="stop after this many epochs without a better validation loss (default: the recipe's; 0: never)"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the split, initial weights, shuffling and augmentation (default 0)")
    train.add_argument("--cache-dir", default=None, help="cache folder for decoded images and features (default $TL_CORE_CACHE_DIR or ~/.cache/tl_core)")
    train.add_argument("--memory-budget-mb", type=int, default=2048, help="decoded images up to this size stay in memory, larger sets are read from disk (default 2048)")
    train.add_argument(
        "--export", dest="export_formats", nargs="+", default=None, metavar="FORMAT",
        help="files that run without Keras, each checked against the model: tflite, int8 (8-bit weights), onnx, or none "
        "(default tflite onnx, or $TL_CORE_EXPORT_FORMATS)",
    )
    train.add_argument(
        "--from-run", default=None, metavar="RUN_DIR",
        help="train again from an earlier run, e.g. after adding images: its settings (options given here still apply), its splits for the images "
        "it used, its decoded images and features for the unchanged images, and its trained weights (the head, or the whole model when fine-tuning)",
    )
    _add_split_options(train)
    train.set_defaults(handler=_train, parser_defaults={action.dest: action.default for action in train._actions})

    export = commands.add_parser(
        "export", help="write TFLite or ONNX files for a trained run", description="Convert a trained run's model to TFLite or ONNX, check each file against the Keras model and record the check in run.json.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", dest="formats", nargs="+", required=True, metavar="FORMAT", help="tflite, int8 (TFLite with 8-bit weights) or onnx; several may be given")
    export.add_argument("--json", action="store_true", help="print the checks as JSON")
    export.set_defaults(handler=_export)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a trained run on a dataset", description="Evaluate a trained run's model on a dataset and print the metrics as JSON.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("data", metavar="DATA")
    evaluate.add_argument("--split", default="auto", choices=("auto", "all", "train", "val", "test"), help="which images to evaluate (default auto: the held-out split, or every image of a plain class folder)")
    evaluate.set_defaults(handler=_evaluate)

    explain = commands.add_parser(
        "explain", help="where in an image the model sees a class (Grad-CAM)",
        description="Write IMAGE with a heatmap of the regions that speak for a class (Grad-CAM on the backbone's last convolutional block) and print the top classes.",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--class", dest="class_name", default=None, metavar="NAME", help="the class to explain (default: the predicted one)")
    explain.add_argument("--out", required=True, metavar="PNG", help="where to write the image with the heatmap")
    explain.add_argument("--top", type=int, default=3, help="how many classes to print (default 3)")
    explain.set_defaults(handler=_explain)

    runs = commands.add_parser("runs", help="list the runs in the runs folder, newest first", description="List every run in the runs folder with its data, settings, accuracy, duration and status.")
    runs.add_argument("--runs-dir", default=None, metavar="FOLDER", help="the runs folder (default $TL_CORE_RUNS_DIR or ~/tl_core_runs)")
    runs.add_argument("--json", action="store_true", help="print JSON (one object per run) instead of a table")
    runs.set_defaults(handler=_runs)

    predict = commands.add_parser("predict", help="class and confidence for each image", description="Predict the class of each image with a trained run's model.")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("images", metavar="IMAGE", nargs="+")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image in --json output (default 3)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    predict.set_defaults(handler=_predict)

    issues = commands.add_parser(
        "label-issues", help="find images whose label is probably wrong",
        description="Judge every label with out-of-fold predictions on the frozen backbone's features (confident learning), and list "
        "suspects (most suspicious first), near-duplicate images with different labels, and images unlike all others. "
        "Saved label decisions (label-decide) are applied first.",
    )
    issues.add_argument("data", metavar="DATA")
    issues.add_argument("--backbone", default="mobilenet_v2", help="backbone whose ImageNet features judge the labels (default mobilenet_v2)")
    issues.add_argument("--image-size", type=int, default=None, help="side of the square input (default: the backbone's own)")
    issues.add_argument("--split", action="append", choices=("train", "val", "test"), default=None, help="judge only this split (repeat for more; default: all)")
    issues.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold classifier (default 5)")
    issues.add_argument("--top", type=int, default=None, help="print at most this many suspects (default: all)")
    issues.add_argument("--cache-dir", default=None, help="cache folder shared with training")
    issues.add_argument("--json", action="store_true", help="print the suspects as a JSON list, most suspicious first")
    issues.add_argument("--report", default=None, metavar="FILE", help="also write the whole report (suspects, near duplicates, odd ones out, figures) as JSON")
    _add_split_options(issues)
    issues.set_defaults(handler=_label_issues)

    decide = commands.add_parser(
        "label-decide", help="keep, relabel or exclude images without touching the files",
        description="Save label decisions in DATA/label_decisions.json; training, evaluation and the app apply them. PATH is relative to DATA or absolute. "
        "With no change given, print the decisions saved.",
    )
    decide.add_argument("data", metavar="DATA")
    decide.add_argument("--keep", action="append", default=[], metavar="PATH", help="the label is right: keep it (and stop asking)")
    decide.add_argument("--exclude", action="append", default=[], metavar="PATH", help="leave the image out of training and evaluation")
    decide.add_argument("--relabel", action="append", default=[], metavar="PATH=CLASS", help="use the image as CLASS")
    decide.add_argument("--forget", action="append", default=[], metavar="PATH", help="drop the decision about PATH")
    decide.add_argument("--json", action="store_true", help="print the decisions as JSON")
    decide.set_defaults(handler=_label_decide)

    advise = commands.add_parser("advise", help="measure the data and recommend a strategy (JSON)", description="Place DATA in the four-scenario matrix by measurement and recommend strategy, freeze depth, learning rate and augmentation.")
    advise.add_argument("data", metavar="DATA")
    advise.add_argument("--backbone", default="mobilenet_v2", help="backbone to advise for (default mobilenet_v2)")
    advise.add_argument("--sample", type=int, default=500, help="images measured at most (default 500)")
    advise.add_argument("--cache-dir", default=None, help="cache folder shared with training")
    advise.add_argument("--time-budget", type=float, default=10.0, metavar="MINUTES", help="recommend no strategy expected to take longer here (default 10)")
    advise.add_argument("--seed", type=int, default=0)
    advise.set_defaults(handler=_advise)

    compare = commands.add_parser("compare", help="train candidate strategies briefly, side by side", description="Train each strategy briefly on the same split and print validation accuracy and time.")
    compare.add_argument("data", metavar="DATA")
    compare.add_argument("--strategies", default=None, help="comma-separated strategies (default: the advice's candidates for the data's scenario)")
    compare.add_argument("--out", default=None, metavar="FOLDER", help="where the runs go (default: a temporary folder)")
    compare.add_argument("--backbone", default="mobilenet_v2")
    compare.add_argument("--epochs", type=int, default=2, help="epochs of fine-tuning or training from scratch per strategy; feature extraction runs its whole recipe (default 2)")
    compare.add_argument("--image-size", type=int, default=None, help="side of the square input (default: the backbone's own)")
    compare.add_argument("--per-class", type=int, default=None, help="training images per class at most (default: all)")
    compare.add_argument("--cache-dir", default=None)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    compare.set_defaults(handler=_compare)

    backbones = commands.add_parser("backbones", help="list the available backbones", description="List the pretrained networks a run can start from.")
    backbones.add_argument("--json", action="store_true", help="print JSON")
    backbones.set_defaults(handler=_backbones)
    return parser


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of each class for validation when DATA has no val/ folder (default 0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="share of each class for testing when DATA has no split folders (default 0.15)")
    if not any(action.dest == "seed" for action in parser._actions):
        parser.add_argument("--seed", type=int, default=0, help="seed of the generated split (default 0)")


def _inspect(arguments: argparse.Namespace) -> int:
    from tl_core.data import scan_dataset

    dataset = scan_dataset(arguments.data, seed=arguments.seed, val_fraction=arguments.val_fraction, test_fraction=arguments.test_fraction)
    print(json.dumps(dataset.summary(), indent=2))
    return 0


def _train(arguments: argparse.Namespace) -> int:
    from tl_core.config import AugmentConfig, TrainConfig
    from tl_core.events import StopRequest
    from tl_core.recipes import run_training

    augmentation = AugmentConfig(flip=arguments.flip, rotation=arguments.rotation, zoom=arguments.zoom, translation=arguments.translation, contrast=arguments.contrast)
    fields = {name: getattr(arguments, name) for name in (
        "backbone", "weights", "strategy", "freeze_layers", "epochs", "warmup_epochs", "image_size", "batch_size",
        "learning_rate", "fine_tune_learning_rate", "augment", "augment_views", "head_units", "dropout", "label_smoothing", "learning_rate_schedule", "test_time_flip", "class_weights",
        "early_stopping_patience", "seed", "val_fraction", "test_fraction", "cache_dir", "memory_budget_mb", "time_budget_minutes", "export_formats",
    )}
    if arguments.from_run:
        from tl_core.rerun import config_from_run

        # The earlier run's settings, changed only by the options given on this command line.
        defaults = arguments.parser_defaults
        given = {name: value for name, value in {**fields, "quick": arguments.quick}.items() if value != defaults.get(name)}
        augmentation_given = {name: getattr(arguments, name) for name in ("flip", "rotation", "zoom", "translation", "contrast") if getattr(arguments, name) != defaults.get(name)}
        config = config_from_run(arguments.from_run, arguments.data, arguments.out, **given)
        if augmentation_given:
            config = replace(config, augmentation=replace(config.augmentation, **augmentation_given))
        if given or augmentation_given:
            print(f"settings of {arguments.from_run}, changed: {', '.join(sorted({**given, **augmentation_given}))}")
    else:
        config = TrainConfig(data_dir=arguments.data, out_dir=arguments.out, augmentation=augmentation, quick=arguments.quick, **fields)
    stop = StopRequest()
    previous_handler = signal.signal(signal.SIGINT, _stop_on_first_interrupt(stop))
    try:
        result = run_training(config, on_event=ConsolePrinter(), stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    return 0 if result.status == "finished" else 130


def _stop_on_first_interrupt(stop):
    def handler(signal_number, frame):
        if stop.requested:
            raise KeyboardInterrupt
        print("\nstopping after this batch (press Ctrl-C again to abort without saving)", file=sys.stderr)
        stop.request("interrupted with Ctrl-C")

    return handler


class ConsolePrinter:
    """Prints a run's events as short lines: one per phase and epoch, progress every tenth."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.last_tenth: dict[str, int] = {}
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)
            self.stream.flush()

    def _print(self, text: str) -> None:
        if self.interactive:
            text = "\r\033[K" + text
        print(text, file=self.stream)

    def _on_TrainingStarted(self, event) -> None:  # noqa: N802 - named after the event class
        config = event.config
        splits = ", ".join(f"{split} {sum(counts.values())}" for split, counts in event.counts.items())
        device = event.device
        where = f"GPU {device['name']}" if device["kind"] == "GPU" else f"CPU ({device['reason']})"
        self._print(f"training {config['backbone']} ({config['strategy']}) on {len(event.class_names)} classes [{splits} images]; device: {where}")

    def _on_PhaseStarted(self, event) -> None:  # noqa: N802
        self._print(f"== {event.phase}: {event.description}")

    def _on_ProgressUpdated(self, event) -> None:  # noqa: N802
        tenth = int(10 * event.done / max(event.total, 1))
        if tenth > self.last_tenth.get(event.phase, -1) or event.done == event.total:
            if self.last_tenth.get(event.phase) == 10:
                return
            self.last_tenth[event.phase] = tenth
            self._print(f"   {event.phase}: {event.done}/{event.total}")

    def _on_BatchEnded(self, event) -> None:  # noqa: N802
        if self.interactive:
            loss = event.metrics.get("loss")
            text = f"   epoch {event.epoch} batch {event.batch}/{event.batches}" + (f" loss {loss:.4f}" if loss is not None else "")
            print("\r\033[K" + text, end="", file=self.stream)

    def _on_EpochEnded(self, event) -> None:  # noqa: N802
        metrics = event.metrics
        parts = [f"epoch {event.epoch}/{event.epochs} [{event.phase}]"]
        for name, label in (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc")):
            if metrics.get(name) is not None:
                parts.append(f"{label} {metrics[name]:.4f}")
        parts.append(f"{event.seconds:.1f}s")
        self._print("  ".join(parts))

    def _on_Notice(self, event) -> None:  # noqa: N802
        self._print(f"note: {event.message}")

    def _on_TrainingStopped(self, event) -> None:  # noqa: N802
        self._print(f"stopped ({event.reason}) after {event.epochs_done} epochs")

    def _on_TrainingFinished(self, event) -> None:  # noqa: N802
        if event.test_accuracy is None:
            self._print(f"{event.status}: no epoch completed, so no model was saved; details in {event.run_dir}/run.json ({event.seconds:.1f}s)")
            return
        folder = Path(event.run_dir)
        files = sorted(path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")) if folder.is_dir() else []
        self._print(f"{event.status}: accuracy {event.test_accuracy:.4f} on the held-out split; wrote {', '.join(files)} to {event.run_dir} ({event.seconds:.1f}s)")


def _evaluate(arguments: argparse.Namespace) -> int:
    from tl_core.export import evaluate_run, load_run

    run = load_run(arguments.run_dir)
    evaluation, details = evaluate_run(run, arguments.data, split=arguments.split)
    print(json.dumps({**details, "test_accuracy": evaluation.accuracy, **evaluation.to_dict()}, indent=2))
    return 0


def _export(arguments: argparse.Namespace) -> int:
    from tl_core.portable import reexport

    checks = reexport(arguments.run_dir, arguments.formats)
    if arguments.json:
        print(json.dumps([check.to_dict() for check in checks], indent=2))
    else:
        for check in checks:
            where = str(Path(arguments.run_dir) / check.file)
            print(f"{where}\t{check.size_bytes / 1e6:.1f} MB\t{check.message}" if check.ok else f"{check.file}\tnot written\t{check.message}")
    for check in checks:
        if not check.ok:
            print(f"error: {check.file} was not written: {check.message}", file=sys.stderr)
    return 0 if all(check.ok for check in checks) else EXIT_SOME_FAILED


def _explain(arguments: argparse.Namespace) -> int:
    from PIL import Image

    from tl_core.errors import RunError
    from tl_core.explain import explain_file, overlay
    from tl_core.export import load_run

    run = load_run(arguments.run_dir)
    explanation, pixels = explain_file(run, arguments.image, arguments.class_name)
    target = Path(arguments.out).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(pixels, explanation.heatmap)).save(target, format="PNG")
    except OSError as error:
        raise RunError(f"Could not write '{target}': {error.strerror or error}. Choose a folder you can write to.") from error
    order = np.argsort(explanation.probabilities)[::-1][: max(arguments.top, 1)]
    for index in order:
        print(f"{run.class_names[index]}\t{explanation.probabilities[index]:.4f}")
    row, column = np.unravel_index(int(np.argmax(explanation.heatmap)), explanation.heatmap.shape)
    print(
        f"map of '{run.class_names[explanation.class_index]}' ({explanation.grid[0]}x{explanation.grid[1]} feature map, strongest at "
        f"x={column}, y={row} of {run.image_size}x{run.image_size}) written to {target}"
    )
    return 0


def _runs(arguments: argparse.Namespace) -> int:
    from tl_core.history import list_runs
    from tl_core.workspace import default_runs_dir

    folder = Path(arguments.runs_dir).expanduser() if arguments.runs_dir else default_runs_dir()
    records = list_runs(folder)
    if arguments.json:
        print(json.dumps([record.to_dict() for record in records], indent=2))
        return 0
    if not records:
        print(f"no runs in {folder}")
        return 0
    print(format_run_table(records))
    for record in records:
        if record.problem:
            print(f"{record.name} ({record.status}): {record.problem}")
    return 0


def format_run_table(records) -> str:
    """The history as an aligned text table, one line per run."""
    headers = ("created", "status", "dataset", "images", "classes", "backbone", "strategy", "frozen", "size", "seed", "epochs", "accuracy", "minutes", "run")
    rows = [
        (
            record.created.replace("T", " ")[:16], record.status, record.dataset, _cell(record.images), _cell(record.classes), record.backbone,
            record.strategy, _cell(record.frozen_layers), _cell(record.image_size), _cell(record.seed), _cell(record.epochs),
            "" if record.test_accuracy is None else f"{record.test_accuracy:.3f}", "" if record.seconds is None else f"{record.seconds / 60:.1f}", record.name,
        )
        for record in records
    ]
    widths = [max(len(str(row[index])) for row in [headers, *rows]) for index in range(len(headers))]
    return "\n".join("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows])


def _cell(value) -> str:
    return "" if value is None else str(value)


def _predict(arguments: argparse.Namespace) -> int:
    from tl_core.export import load_run, predict_files

    run = load_run(arguments.run_dir)
    predictions = predict_files(run, arguments.images, top_k=arguments.top)
    if arguments.json:
        print(json.dumps([prediction.to_dict() for prediction in predictions], indent=2))
    else:
        for prediction in predictions:
            if prediction.error:
                print(f"{prediction.path}\terror: {prediction.error}")
            else:
                print(f"{prediction.path}\t{prediction.predicted_class}\t{prediction.confidence:.4f}")
    failed = [prediction for prediction in predictions if prediction.error]
    for prediction in failed:
        print(f"error: could not predict '{prediction.path}': {prediction.error}. Check the path and that the file is an image.", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def _label_issues(arguments: argparse.Namespace) -> int:
    from tl_core.data import scan_dataset
    from tl_core.label_issues import find_label_issues

    dataset = scan_dataset(arguments.data, seed=arguments.seed, val_fraction=arguments.val_fraction, test_fraction=arguments.test_fraction)
    shown = {"decode": "reading images", "features": "computing features", "judge": "judging labels"}

    def progress(phase: str, done: int, total: int) -> None:
        if done == total or done % 512 == 0:
            print(f"{shown[phase]} {done}/{total}", file=sys.stderr)

    report = find_label_issues(
        dataset, backbone=arguments.backbone, image_size=arguments.image_size, splits=arguments.split, folds=arguments.folds,
        seed=arguments.seed, cache_dir=arguments.cache_dir, on_progress=progress,
    )
    if arguments.report:
        from tl_core.export import write_text_atomically

        write_text_atomically(Path(arguments.report).expanduser(), json.dumps(report.to_dict(), indent=2))
    suspects = report.suspects[: arguments.top] if arguments.top is not None else report.suspects
    if arguments.json:
        print(json.dumps([vars(suspect) for suspect in suspects], indent=2))
        return 0
    print(
        f"{report.judged} images judged ({', '.join(report.splits)}) with {report.backbone} features at {report.image_size} px, {report.folds} folds, C={report.regularisation:g}: "
        f"the out-of-fold classifier agrees with {report.out_of_fold_accuracy:.1%} of the labels; about {report.estimated_issues} labels look wrong."
    )
    flagged = sum(suspect.flagged for suspect in report.suspects)
    print(
        f"\n{len(report.suspects)} suspects (the held-out model prefers another class), most suspicious first{f' (first {len(suspects)})' if len(suspects) < len(report.suspects) else ''}; "
        f"{flagged} flagged (*) by confident learning, the surest:"
    )
    if suspects:
        print("given -> suggested (confidence)\tpath")
        for suspect in suspects:
            print(f"{'*' if suspect.flagged else ' '} {suspect.given_label} -> {suspect.suggested_label} ({suspect.confidence:.0%})\t{suspect.relative_path}")
    if report.near_duplicates:
        print(f"\n{len(report.near_duplicates)} pairs of near-duplicate images with different labels:")
        for pair in report.near_duplicates:
            what = "identical files" if pair.identical else f"similarity {pair.similarity:.3f}"
            print(f"{pair.labels[0]} / {pair.labels[1]} ({what})\t{pair.paths[0]}\t{pair.paths[1]}")
    if report.odd_ones_out:
        print(f"\n{len(report.odd_ones_out)} images unlike all the others (check they belong in the dataset at all):")
        for odd in report.odd_ones_out:
            print(f"{odd.given_label} ({odd.deviations:.1f} deviations below the usual)\t{odd.relative_path}")
    for item in report.skipped:
        print(f"skipped {item['path']}: {item['reason']}")
    print(f"\nDecide with: python -m tl_core label-decide {arguments.data} --exclude PATH | --relabel PATH=CLASS | --keep PATH")
    return 0


def _label_decide(arguments: argparse.Namespace) -> int:
    from tl_core.data import scan_dataset
    from tl_core.decisions import EXCLUDE, KEEP, RELABEL, LabelDecision, decide, decisions_path, load_decisions
    from tl_core.errors import DataError

    dataset = scan_dataset(arguments.data, label_decisions=False, make_splits=False)
    by_path = {record.relative_path: record for record in dataset.records}

    def relative(path: str) -> str:
        given = Path(path).expanduser()
        if given.is_absolute():
            try:
                return given.resolve().relative_to(dataset.root).as_posix()
            except ValueError:
                raise DataError(f"'{path}' is not inside the dataset folder '{dataset.root}'.") from None
        return Path(path).as_posix()

    def record_of(path: str):
        key = relative(path)
        if key not in by_path:
            raise DataError(f"'{path}' is not an image of the dataset in '{dataset.root}'; give its path relative to that folder, e.g. {dataset.records[0].relative_path}.")
        return by_path[key]

    changes: dict = {}
    for path in arguments.keep:
        record = record_of(path)
        changes[record.relative_path] = LabelDecision(record.relative_path, KEEP, record.class_name)
    for path in arguments.exclude:
        record = record_of(path)
        changes[record.relative_path] = LabelDecision(record.relative_path, EXCLUDE, record.class_name)
    for item in arguments.relabel:
        path, separator, target = item.rpartition("=")
        if not separator or not path:
            raise DataError(f"--relabel takes PATH=CLASS, not '{item}'.")
        if target not in dataset.class_names:
            raise DataError(f"'{target}' is not a class of this dataset; the classes are {', '.join(dataset.class_names)}.")
        record = record_of(path)
        changes[record.relative_path] = LabelDecision(record.relative_path, RELABEL, record.class_name, to=target)
    for path in arguments.forget:
        changes[relative(path)] = None
    decisions = decide(dataset.root, changes) if changes else load_decisions(dataset.root)
    if arguments.json:
        print(json.dumps({path: decision.to_dict() for path, decision in sorted(decisions.items())}, indent=2))
        return 0
    for path, decision in sorted(decisions.items()):
        print(f"{decision.describe()}\t{path}")
    print(f"{len(decisions)} decisions in {decisions_path(dataset.root)}" if decisions else f"No label decisions saved for {dataset.root}.")
    return 0


def _advise(arguments: argparse.Namespace) -> int:
    from tl_core.advisor import advise

    advice = advise(arguments.data, backbone=arguments.backbone, sample_size=arguments.sample, cache_dir=arguments.cache_dir, seed=arguments.seed, time_budget_minutes=arguments.time_budget)
    print(json.dumps(advice.to_dict(), indent=2))
    return 0


def _compare(arguments: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from tl_core.advisor import advise
    from tl_core.config import STRATEGIES
    from tl_core.errors import ConfigError
    from tl_core.recipes import best_row, compare_strategies
    from tl_core.scenario import candidate_strategies

    freeze, flip = None, "horizontal"
    if arguments.strategies:
        strategies = [name.strip() for name in arguments.strategies.split(",") if name.strip()]
        unknown = [name for name in strategies if name not in STRATEGIES]
        if unknown:
            raise ConfigError(f"Unknown strateg{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} in --strategies. Choose from: {', '.join(STRATEGIES)}.")
    else:
        advice = advise(arguments.data, backbone=arguments.backbone, cache_dir=arguments.cache_dir, seed=arguments.seed)
        strategies = candidate_strategies(advice.recommendation.scenario)
        freeze = advice.freeze_layers if advice.recommendation.strategy == "fine_tune" else None
        flip = advice.flip
        print(f"scenario {advice.recommendation.scenario} ({advice.recommendation.title}); comparing {', '.join(strategies)}", file=sys.stderr)
    out_root = arguments.out or tempfile.mkdtemp(prefix="tl_core_compare_")
    rows = compare_strategies(
        arguments.data, strategies, out_root, backbone=arguments.backbone, epochs=arguments.epochs, image_size=arguments.image_size,
        train_images_per_class=arguments.per_class, freeze_layers=freeze, cache_dir=arguments.cache_dir, seed=arguments.seed, flip=flip,
    )
    winner = best_row(rows)
    if arguments.json:
        print(json.dumps({"rows": [dataclasses.asdict(row) for row in rows], "best": winner.strategy if winner else None, "runs": str(out_root)}, indent=2))
        return 0
    print(f"{'strategy':<20} {'val_accuracy':>12} {'val_loss':>9} {'held_out':>9} {'seconds':>8} {'epochs':>6} {'full run':>9}  status")
    for row in rows:
        full_run = f"{row.full_run_seconds / 60:>7.1f} m" if row.full_run_seconds is not None else f"{'-':>9}"
        print(
            f"{row.strategy:<20} {_number(row.val_accuracy, 12)} {_number(row.val_loss, 9)} {_number(row.held_out_accuracy, 9)} {row.seconds:>8.1f} {row.epochs:>6} "
            f"{full_run}  {row.status}{' ' + row.error if row.error else ''}"
        )
    if winner:
        print(f"best: {winner.strategy} (validation accuracy {winner.val_accuracy:.4f}; the held-out column chose nothing); runs in {out_root}")
    return 0


def _number(value: float | None, width: int) -> str:
    return f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"


def _backbones(arguments: argparse.Namespace) -> int:
    from tl_core.backbones import list_backbones

    specs = list_backbones()
    if arguments.json:
        print(json.dumps([{"name": spec.name, "display_name": spec.display_name, "default_size": spec.default_size, "min_size": spec.min_size, "parameters": spec.parameters, "feature_dim": spec.feature_dim, "description": spec.description} for spec in specs], indent=2))
        return 0
    for spec in specs:
        print(f"{spec.name:<20} {spec.display_name:<24} {spec.default_size:>4}px  {spec.parameters / 1e6:6.1f}M params  {spec.description}")
    return 0


