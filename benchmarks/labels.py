"""Label-noise benchmark: does the label-error finder find planted wrong labels, and does cleaning them pay?

    python -m benchmarks.labels ../shared/datasets/cats_dogs
    python -m benchmarks.labels DATA --noise 0.05 --seed 0 --json result.json
    python -m benchmarks.labels DATA --smoke      # tiny settings, seconds (used by the test suite)

DATA must have a ``train/`` folder and a held-out ``val/`` or ``test/`` folder:
only images in ``train/`` get wrong labels, so the held-out images that judge
every run stay correct. On a copy of DATA (hard links where possible, never
touching DATA itself), a seeded share of the ``train/`` images is moved into
another class's folder. Then:

1. the finder (``tl_core.insight.label_issues``) judges the training images of the noisy
   copy; precision and recall are counted among its top k suspects, for k equal
   to half the planted flips, the planted flips, and all it flags;
2. the same recipe (feature extraction by default) trains on
   - the clean labels (DATA as it is),
   - the noisy labels,
   - the noisy labels with the flagged suspects excluded (a ``label_decisions.json``
     in the copy, as the app writes it),
   - the noisy labels with each flagged suspect relabelled to the class the finder suggests;
   all on the same held-out images with the same seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class RunRow:
    labels: str
    accuracy: float
    macro_f1: float
    train_images: int
    minutes: float


def noisy_copy(data: Path, target: Path, noise: float, seed: int) -> list[tuple[str, str]]:
    """Copies ``data`` to ``target`` (hard links where possible) and moves ``noise`` of ``train/``'s images into another class.

    Returns the moved images as (new relative path, true class).
    """
    from tl_core.data.scan import scan_dataset

    dataset = scan_dataset(data, label_decisions=False, seed=seed)
    train_folder = next((child for child in data.iterdir() if child.is_dir() and child.name.lower() == "train"), None)
    if train_folder is None or len([child for child in data.iterdir() if child.is_dir()]) < 2:
        raise SystemExit(f"{data} needs a train/ folder and a held-out val/ or test/ folder: only train/ gets wrong labels, the held-out images stay correct.")
    shutil.copytree(data, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("label_decisions.json"))
    in_train = sorted(record.relative_path for record in dataset.records if record.relative_path.split("/")[0] == train_folder.name)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(in_train), size=max(1, round(noise * len(in_train))), replace=False).tolist())
    flips = []
    for index in chosen:
        relative = in_train[index]
        _, true_class, *rest = relative.split("/")
        wrong = rng.choice([name for name in dataset.class_names if name != true_class])
        destination = target / train_folder.name / wrong / "/".join(rest)
        destination = destination.with_name(f"flipped_{destination.name}")  # never collides with a file already there
        destination.parent.mkdir(parents=True, exist_ok=True)
        (target / relative).rename(destination)
        flips.append((destination.relative_to(target).as_posix(), true_class))
    return flips


def _link_or_copy(source: str, destination: str) -> str:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def precision_recall(ranked: list[str], planted: set[str], k: int) -> tuple[float, float]:
    found = len(set(ranked[:k]) & planted)
    return found / max(min(k, len(ranked)), 1), found / max(len(planted), 1)


def train_row(name: str, data: Path, work: Path, seed: int, strategy: str, overrides: dict) -> RunRow:
    from tl_core.advice.auto import run_training
    from tl_core.config import TrainConfig

    config = TrainConfig(data_dir=str(data), out_dir=str(work / f"run_{name}"), strategy=strategy, seed=seed, cache_dir=str(work / "cache"), export_formats=(), **overrides)
    started = time.perf_counter()
    result = run_training(config)
    train_images = sum(result.summary.data["counts"].get("train", {}).values())
    return RunRow(name, result.evaluation.accuracy, result.evaluation.macro_f1, train_images, (time.perf_counter() - started) / 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labels", description="Plant wrong labels, find them, and train on clean, noisy and cleaned labels.")
    parser.add_argument("data", type=Path, help="dataset folder with train/ and a held-out val/ or test/")
    parser.add_argument("--noise", type=float, default=0.05, help="share of train/ images given a wrong label (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default="feature_extraction", help="the recipe every run trains with (default feature_extraction)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the copy, runs and caches (default: a temporary folder, removed at the end)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: 32 px, 2 epochs (for the test suite)")
    arguments = parser.parse_args(argv)
    from tl_core.data.decisions import EXCLUDE, RELABEL, LabelDecision, save_decisions
    from tl_core.data.scan import scan_dataset
    from tl_core.insight.label_issues import find_label_issues

    work = arguments.work or Path(tempfile.mkdtemp(prefix="tl_core_bench_labels_"))
    image_size = 32 if arguments.smoke else None
    overrides = {"epochs": 2, "image_size": 32} if arguments.smoke else {}
    try:
        noisy = work / "noisy"
        flips = noisy_copy(arguments.data, noisy, arguments.noise, arguments.seed)
        planted = {relative for relative, _ in flips}
        print(f"planted {len(flips)} wrong labels in train/ of a copy of {arguments.data}", file=sys.stderr, flush=True)

        dataset = scan_dataset(noisy, seed=arguments.seed)
        judged = [split for split in ("train", "val") if any(record.split == split for record in dataset.records)]
        started = time.perf_counter()
        report = find_label_issues(dataset, image_size=image_size, splits=judged, seed=arguments.seed, cache_dir=str(work / "cache_finder"))
        finder_minutes = (time.perf_counter() - started) / 60
        ranked = [suspect.relative_path for suspect in report.suspects]
        flagged = [suspect for suspect in report.suspects if suspect.flagged]
        cut_offs = {"half the planted": max(1, len(flips) // 2), "as many as planted": len(flips), "flagged by confident learning": len(flagged), "all suspects": len(ranked)}
        found = {name: precision_recall(ranked, planted, k) for name, k in cut_offs.items()}
        true_class = dict(flips)
        right_suggestions = sum(1 for suspect in report.suspects if suspect.relative_path in planted and suspect.suggested_label == true_class[suspect.relative_path])

        rows = [train_row("clean", arguments.data, work, arguments.seed, arguments.strategy, overrides), train_row("noisy", noisy, work, arguments.seed, arguments.strategy, overrides)]
        given = {record.relative_path: record.class_name for record in dataset.records}
        save_decisions(noisy, {s.relative_path: LabelDecision(s.relative_path, EXCLUDE, given[s.relative_path]) for s in flagged})
        rows.append(train_row("noisy, flagged excluded", noisy, work, arguments.seed, arguments.strategy, overrides))
        save_decisions(noisy, {s.relative_path: LabelDecision(s.relative_path, RELABEL, s.given_label, to=s.suggested_label) for s in flagged})
        rows.append(train_row("noisy, flagged relabelled", noisy, work, arguments.seed, arguments.strategy, overrides))
    finally:
        if arguments.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"Label-noise benchmark on {arguments.data.name}: {len(flips)} of the train/ images ({arguments.noise:.0%}) given a wrong label, seed {arguments.seed}")
    print(
        f"\nFinder: {report.judged} images judged ({', '.join(judged)}), {len(ranked)} suspects, {len(flagged)} flagged by confident learning "
        f"(estimated wrong labels {report.estimated_issues}), C={report.regularisation:g}, "
        f"out-of-fold agreement {report.out_of_fold_accuracy:.1%}, {finder_minutes:.1f} min; "
        f"{right_suggestions} of the {len(planted & set(ranked))} planted flips it found come with their true class as the suggestion."
    )
    print("\n| top k suspects | k | precision | recall |\n|---|---|---|---|")
    for name, k in cut_offs.items():
        precision, recall = found[name]
        print(f"| {name} | {k} | {precision:.3f} | {recall:.3f} |")
    print(f"\n| labels ({arguments.strategy}) | training images | accuracy | macro-F1 | minutes |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.labels} | {row.train_images:,} | {row.accuracy:.4f} | {row.macro_f1:.4f} | {row.minutes:.1f} |")
    if arguments.json:
        arguments.json.write_text(json.dumps({
            "dataset": str(arguments.data), "noise": arguments.noise, "seed": arguments.seed, "planted": len(flips), "suspects": len(ranked), "flagged": len(flagged),
            "estimated": report.estimated_issues, "finder_minutes": finder_minutes, "right_suggestions": right_suggestions,
            "top_k": {name: {"k": cut_offs[name], "precision": found[name][0], "recall": found[name][1]} for name in cut_offs},
            "runs": [asdict(row) for row in rows],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
