"""The commands of ``python -m tl_core``: each reads its parsed arguments, calls the engine and prints."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from tl_core.cli.console import ConsolePrinter, format_run_table

EXIT_SOME_FAILED = 1


def inspect(arguments: argparse.Namespace) -> int:
    from tl_core.data.scan import scan_dataset

    dataset = scan_dataset(arguments.data, seed=arguments.seed, val_fraction=arguments.val_fraction, test_fraction=arguments.test_fraction)
    print(json.dumps(dataset.summary(), indent=2))
    return 0


def train(arguments: argparse.Namespace) -> int:
    from tl_core.advice.auto import run_training
    from tl_core.config import AugmentConfig, TrainConfig
    from tl_core.events import StopRequest

    augmentation = AugmentConfig(
        flip=arguments.flip, rotation=arguments.rotation, zoom=arguments.zoom, translation=arguments.translation, contrast=arguments.contrast, turns=arguments.turns,
    )
    fields = {name: getattr(arguments, name) for name in (
        "backbone", "weights", "strategy", "freeze_layers", "epochs", "warmup_epochs", "image_size", "batch_size",
        "learning_rate", "fine_tune_learning_rate", "augment", "augment_views", "head_units", "dropout", "label_smoothing", "learning_rate_schedule", "test_time_flip", "class_weights",
        "early_stopping_patience", "seed", "val_fraction", "test_fraction", "cache_dir", "memory_budget_mb", "time_budget_minutes", "export_formats",
        "centre_crop",
    )}
    if arguments.from_run:
        from tl_core.training.reuse import config_from_run

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


def evaluate(arguments: argparse.Namespace) -> int:
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import evaluate_run

    run = load_run(arguments.run_dir)
    evaluation, details = evaluate_run(run, arguments.data, split=arguments.split)
    print(json.dumps({**details, "test_accuracy": evaluation.accuracy, **evaluation.to_dict()}, indent=2))
    return 0


def export(arguments: argparse.Namespace) -> int:
    from tl_core.runs.portable import reexport

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


def explain(arguments: argparse.Namespace) -> int:
    from PIL import Image

    from tl_core.errors import RunError
    from tl_core.files import atomic_write
    from tl_core.insight.explain import explain_file, overlay
    from tl_core.runs.folder import load_run

    run = load_run(arguments.run_dir)
    explanation, pixels = explain_file(run, arguments.image, arguments.class_name)
    target = Path(arguments.out).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(overlay(pixels, explanation.heatmap))
        atomic_write(target, lambda temporary: picture.save(temporary, format="PNG"))
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


def runs(arguments: argparse.Namespace) -> int:
    from tl_core.runs.history import list_runs
    from tl_core.service.workspace import default_runs_dir

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


def predict(arguments: argparse.Namespace) -> int:
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import predict_files

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


def label_issues(arguments: argparse.Namespace) -> int:
    from tl_core.data.scan import scan_dataset
    from tl_core.insight.label_issues import find_label_issues

    dataset = scan_dataset(arguments.data, seed=arguments.seed, val_fraction=arguments.val_fraction, test_fraction=arguments.test_fraction)
    shown = {"decode": "reading images", "features": "computing features", "judge": "judging labels"}

    def progress(phase: str, done: int, total: int) -> None:
        if done == total or done % 512 == 0 or phase == "judge":  # a few dozen classifiers, seconds to minutes each: every one
            print(f"{shown[phase]} {done}/{total}", file=sys.stderr)

    report = find_label_issues(
        dataset, backbone=arguments.backbone, image_size=arguments.image_size, splits=arguments.split, folds=arguments.folds,
        seed=arguments.seed, cache_dir=arguments.cache_dir, on_progress=progress,
    )
    if arguments.report:
        from tl_core.files import write_json

        write_json(Path(arguments.report).expanduser(), report.to_dict())
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


def label_decide(arguments: argparse.Namespace) -> int:
    from tl_core.data.decisions import EXCLUDE, KEEP, RELABEL, LabelDecision, decide, decisions_path, load_decisions
    from tl_core.data.scan import scan_dataset
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


def advise(arguments: argparse.Namespace) -> int:
    from tl_core.advice.advise import advise

    advice = advise(arguments.data, backbone=arguments.backbone, sample_size=arguments.sample, cache_dir=arguments.cache_dir, seed=arguments.seed, time_budget_minutes=arguments.time_budget)
    print(json.dumps(advice.to_dict(), indent=2))
    return 0


def compare(arguments: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from tl_core.advice.advise import advise
    from tl_core.advice.compare import best_row, compare_strategies
    from tl_core.advice.scenario import candidate_strategies
    from tl_core.config import STRATEGIES
    from tl_core.errors import ConfigError

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


def backbones(arguments: argparse.Namespace) -> int:
    from tl_core.models.backbones import list_backbones

    specs = list_backbones()
    if arguments.json:
        print(json.dumps([{"name": spec.name, "display_name": spec.display_name, "default_size": spec.default_size, "min_size": spec.min_size, "parameters": spec.parameters, "feature_dim": spec.feature_dim, "description": spec.description} for spec in specs], indent=2))
        return 0
    name_width, title_width = max(len(spec.name) for spec in specs), max(len(spec.display_name) for spec in specs)
    for spec in specs:
        print(f"{spec.name:<{name_width}} {spec.display_name:<{title_width}} {spec.default_size:>4}px  {spec.parameters / 1e6:6.1f}M params  {spec.description}")
    return 0
