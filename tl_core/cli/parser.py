"""The command line's argument table: every command and option, with its help."""

from __future__ import annotations

import argparse

from tl_core.cli import commands as handlers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core", description="Guided transfer learning for images: from a folder of labelled photos to a trained model file.")
    _add_backend_option(parser, argparse.SUPPRESS)
    parser.set_defaults(backend=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="print a dataset summary as JSON", description="Scan a dataset folder and print its summary as JSON.")
    inspect.add_argument("data", metavar="DATA", help="folder with one sub-folder per class (optionally inside train/ val/ test/)")
    _add_split_options(inspect)
    inspect.set_defaults(handler=handlers.inspect)

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
    train.add_argument(
        "--turns", action=argparse.BooleanOptionalAction, default=None,
        help="turned images show the same class (aerial, microscope, surfaces): feature extraction also learns from and averages over the 8 turned and mirrored views "
        "(default: as the advice measures with --strategy auto, else off)",
    )
    train.add_argument(
        "--centre-crop", action=argparse.BooleanOptionalAction, default=None, dest="centre_crop",
        help="train on and answer from the middle 80%% of each image (objects photographed in the middle of the frame); the model then takes "
        "images 1.25x its size and crops them (default: as the advice measures with --strategy auto, else off)",
    )
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
    train.add_argument(
        "--class-weights", action=argparse.BooleanOptionalAction, default=None,
        help="weight classes by inverse frequency (default: on when the largest class has 3x or more the images of the smallest)",
    )
    train.add_argument(
        "--patience", type=int, default=None, dest="early_stopping_patience", help="stop after this many epochs without a better validation loss (default: the recipe's; 0: never)"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the split, initial weights, shuffling and augmentation (default 0)")
    train.add_argument("--cache-dir", default=None, help="cache folder for decoded images and features (default $TL_CORE_CACHE_DIR or ~/.cache/tl_core)")
    train.add_argument("--memory-budget-mb", type=int, default=2048, help="decoded images up to this size in MiB (2^20 bytes) stay in memory, larger sets are read from disk (default 2048)")
    train.add_argument(
        "--export", dest="export_formats", nargs="+", default=None, metavar="FORMAT",
        help="files that run without Keras, each checked against the model: tflite, int8 (8-bit weights), onnx, or none "
        "(default none, or $TL_CORE_EXPORT_FORMATS; they are made after the model is saved, and `export` makes them later)",
    )
    train.add_argument(
        "--from-run", default=None, metavar="RUN_DIR",
        help="train again from an earlier run, e.g. after adding images: its settings (options given here still apply), its splits for the images "
        "it used, its decoded images and features for the unchanged images, and its trained weights (the head, or the whole model when fine-tuning)",
    )
    _add_split_options(train)
    _add_backend_option(train, argparse.SUPPRESS)
    train.set_defaults(uses_keras=True, handler=handlers.train, parser_defaults={action.dest: action.default for action in train._actions})

    export = commands.add_parser(
        "export", help="write TFLite or ONNX files for a trained run", description="Convert a trained run's model to TFLite or ONNX, check each file against the Keras model and record the check in run.json.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", dest="formats", nargs="+", required=True, metavar="FORMAT", help="tflite, int8 (TFLite with 8-bit weights) or onnx; several may be given")
    export.add_argument("--json", action="store_true", help="print the checks as JSON")
    _add_backend_option(export, argparse.SUPPRESS)
    export.set_defaults(uses_keras=True, handler=handlers.export)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a trained run on a dataset", description="Evaluate a trained run's model on a dataset and print the metrics as JSON.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("data", metavar="DATA")
    evaluate.add_argument("--split", default="auto", choices=("auto", "all", "train", "val", "test"), help="which images to evaluate (default auto: the held-out split, or every image of a plain class folder)")
    _add_backend_option(evaluate, argparse.SUPPRESS)
    evaluate.set_defaults(uses_keras=True, handler=handlers.evaluate)

    explain = commands.add_parser(
        "explain", help="where in an image the model sees a class (Grad-CAM)",
        description="Write IMAGE with a heatmap of the regions that speak for a class (Grad-CAM on the backbone's last convolutional block) and print the top classes.",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--class", dest="class_name", default=None, metavar="NAME", help="the class to explain (default: the predicted one)")
    explain.add_argument("--out", required=True, metavar="PNG", help="where to write the image with the heatmap")
    explain.add_argument("--top", type=int, default=3, help="how many classes to print (default 3)")
    _add_backend_option(explain, argparse.SUPPRESS)
    explain.set_defaults(uses_keras=True, handler=handlers.explain)

    runs = commands.add_parser("runs", help="list the runs in the runs folder, newest first", description="List every run in the runs folder with its data, settings, accuracy, duration and status.")
    runs.add_argument("--runs-dir", default=None, metavar="FOLDER", help="the runs folder (default $TL_CORE_RUNS_DIR or ~/tl_core_runs)")
    runs.add_argument("--json", action="store_true", help="print JSON (one object per run) instead of a table")
    runs.set_defaults(handler=handlers.runs)

    predict = commands.add_parser("predict", help="class and confidence for each image", description="Predict the class of each image with a trained run's model.")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("images", metavar="IMAGE", nargs="+")
    predict.add_argument("--top", type=int, default=3, help="how many classes to list per image in --json output (default 3)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    _add_backend_option(predict, argparse.SUPPRESS)
    predict.set_defaults(uses_keras=True, handler=handlers.predict)

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
    _add_backend_option(issues, argparse.SUPPRESS)
    issues.set_defaults(uses_keras=True, handler=handlers.label_issues)

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
    decide.set_defaults(handler=handlers.label_decide)

    advise = commands.add_parser("advise", help="measure the data and recommend a strategy (JSON)", description="Place DATA in the four-scenario matrix by measurement and recommend strategy, freeze depth, learning rate and augmentation.")
    advise.add_argument("data", metavar="DATA")
    advise.add_argument("--backbone", default="mobilenet_v2", help="backbone to advise for (default mobilenet_v2)")
    advise.add_argument("--sample", type=int, default=500, help="images measured at most (default 500)")
    advise.add_argument("--cache-dir", default=None, help="cache folder shared with training")
    advise.add_argument("--time-budget", type=float, default=10.0, metavar="MINUTES", help="recommend no strategy expected to take longer here (default 10)")
    advise.add_argument("--seed", type=int, default=0)
    _add_backend_option(advise, argparse.SUPPRESS)
    advise.set_defaults(uses_keras=True, handler=handlers.advise)

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
    _add_backend_option(compare, argparse.SUPPRESS)
    compare.set_defaults(uses_keras=True, handler=handlers.compare)

    backbones = commands.add_parser("backbones", help="list the available backbones", description="List the pretrained networks a run can start from.")
    backbones.add_argument("--json", action="store_true", help="print JSON")
    backbones.set_defaults(handler=handlers.backbones)
    return parser


def _add_backend_option(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument(
        "--backend", default=default, choices=("auto", "tensorflow", "jax", "torch"),
        help="the Keras backend: auto (the first installed one that sees a GPU: TensorFlow, JAX, then PyTorch; else TensorFlow on the CPU), "
        "tensorflow, jax or torch (default: $TL_CORE_BACKEND, else auto)",
    )


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of each class for validation when DATA has no val/ folder (default 0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="share of each class for testing when DATA has no split folders (default 0.15)")
    if not any(action.dest == "seed" for action in parser._actions):
        parser.add_argument("--seed", type=int, default=0, help="seed of the generated split (default 0)")
