"""Estimates against what runs take: the promised minutes, per phase, and the time-left readout.

    python -m benchmarks.estimates                         # cats_dogs, aerial and cat_breeds from ../shared/datasets
    python -m benchmarks.estimates DATA [DATA ...] --cache-dir DIR
    python -m benchmarks.estimates DATA --smoke            # tiny settings, each dataset twice (used by the test suite)

For each dataset, in order, as a user of the app would go: the advice measures
the data and recommends a strategy (its candidate's minutes are what the
Scenario page shows); the run starts from the settings the Setup page suggests
for that strategy, and its estimate is the one Setup and Train show; then the
run trains, in this process, with the app's defaults (no TFLite or ONNX
files: those are made on request). At the end of the first epoch of each phase of epochs the
time-left readout the Train page would show is taken, and compared with the
time the run still took.

All datasets share one cache folder (a fresh one unless ``--cache-dir`` is
given), so the first run's estimate is the arithmetic alone and each later one
is corrected by what the runs before it took here (``tl_core.training.timings``):
the table says how many runs each estimate learnt from. The target is every
estimate and every readout within ±25 % of what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SHARED = Path(os.environ.get("TL_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_DATASETS = tuple(SHARED / "datasets" / name for name in ("cats_dogs", "aerial", "cat_breeds"))
TOLERANCE = 0.25
# The pages say a duration to the nearest 5 s ("about 5 s" at the least: tl_core.training.estimate.duration_text), so
# a figure within 5 s of what happened is as right as the page can say it, whatever its percentage.
RESOLUTION_SECONDS = 5.0


def within(said: float | None, actual: float) -> bool:
    """Within ±25 % of what happened, or within the 5 s the page can resolve."""
    return said is not None and (abs(said - actual) <= RESOLUTION_SECONDS or (actual > 0 and abs(said / actual - 1) <= TOLERANCE))


@dataclass
class Readout:
    """The time left the Train page shows at the end of a phase's first epoch, and what was left in fact."""

    phase: str
    epoch: int
    said: float | None  # seconds left for the whole run, as the page would say
    phase_said: float | None  # seconds left in the phase
    actual: float = 0.0  # seconds the run still took from then
    phase_actual: float = 0.0  # seconds the phase still took from then
    at: float = field(default=0.0, repr=False)

    @property
    def error(self) -> float | None:
        return None if self.said is None or not self.actual else self.said / self.actual - 1


@dataclass
class Row:
    """One dataset: the strategy recommended, each estimate of it, what the run took, and the readouts."""

    dataset: str
    strategy: str
    epochs: str
    learned_from: int
    scenario_seconds: float | None
    estimate_seconds: float
    actual_seconds: float
    timings: dict
    readouts: list[Readout]
    load: float = 0.0  # the machine's load average over the last minute when the run ended: other programs slow a run down

    @property
    def error(self) -> float:
        return self.estimate_seconds / self.actual_seconds - 1 if self.actual_seconds else 0.0


def recommended_config(data: Path, out_dir: Path, smoke: bool, time_budget: float):
    """The settings a user following the advice starts from, and the minutes the Scenario page gave them."""
    from tl_core.advice.advise import advise
    from tl_core.advice.settings import suggested_settings
    from tl_core.config import AugmentConfig, TrainConfig
    from tl_core.data.scan import scan_dataset

    dataset = scan_dataset(data)
    if smoke:
        config = TrainConfig(
            data_dir=str(data), out_dir=str(out_dir), strategy="fine_tune", image_size=32, batch_size=8, warmup_epochs=3, epochs=2, export_formats=(),
        )
        return config.validated(), dataset, None
    advice = advise(dataset, time_budget_minutes=time_budget)
    strategy = advice.recommendation.strategy
    suggested = suggested_settings(dataset, "mobilenet_v2", strategy, False, advice)
    scenario = next(row.seconds for row in advice.candidates if row.recommended)
    config = TrainConfig(
        data_dir=str(data), out_dir=str(out_dir), strategy=strategy, freeze_layers=suggested.freeze_layers, epochs=suggested.epochs,
        warmup_epochs=suggested.warmup_epochs, early_stopping_patience=suggested.early_stopping_patience,
        learning_rate_schedule=suggested.learning_rate_schedule, test_time_flip=suggested.test_time_flip,
        augmentation=AugmentConfig(flip=suggested.flip), class_weights=suggested.class_weights,
    )
    return config.validated(), dataset, scenario


def measure(data: Path, out_dir: Path, smoke: bool, time_budget: float) -> Row:
    """Advice, estimate and run on one dataset, with the readouts taken on the way."""
    from tl_core.advice.auto import run_training
    from tl_core.device import detect_device
    from tl_core.events import EpochEnded
    from tl_core.models.backbones import get_backbone
    from tl_core.service.jobs import TrainingJob
    from tl_core.training.estimate import estimate_run, forward_throughput

    config, dataset, scenario = recommended_config(data, out_dir, smoke, time_budget)
    spec = get_backbone(config.backbone)
    throughput = forward_throughput(spec.name, config.image_size or spec.default_size, detect_device().key)
    estimate = estimate_run(config, dataset, throughput)  # what the Setup and Train pages show
    job = TrainingJob(config)  # never started: it folds the run's events as the app's job does
    readouts: list[Readout] = []
    phase_ends: dict[str, float] = {}

    def on_event(event) -> None:
        job.handle(event)
        now = time.time()
        if isinstance(event, EpochEnded):
            phase_ends[event.phase] = now
            if event.phase_epoch == 1:
                state = job.state()
                readouts.append(Readout(event.phase, event.epoch, state.seconds_left(now), state.phase_seconds_left(now)[0], at=now))

    result = run_training(config, on_event=on_event)
    ended = time.time()
    for readout in readouts:
        readout.actual = round(ended - readout.at, 1)
        readout.phase_actual = round(phase_ends[readout.phase] - readout.at, 1)
    summary = result.summary
    return Row(
        Path(data).name, config.strategy, " + ".join(f"{count} {phase}" for phase, count in config.planned_phase_epochs.items()),
        estimate.learned_from, scenario, estimate.seconds, summary.seconds["total"], summary.timings or {}, readouts, round(os.getloadavg()[0], 1),
    )


def report(rows: list[Row]) -> str:
    """The tables: each estimate against the run, the phases, and the readouts."""
    lines = [
        "| dataset | strategy | planned epochs | learnt from runs | Scenario said | Setup and Train said | took | error | within ±25 % or 5 s | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        scenario = f"{row.scenario_seconds:.0f} s" if row.scenario_seconds is not None else "n/a"
        lines.append(
            f"| {row.dataset} | {row.strategy} | {row.epochs} | {row.learned_from} | {scenario} | {row.estimate_seconds:.0f} s | "
            f"{row.actual_seconds:.0f} s | {row.error:+.0%} | {'yes' if within(row.estimate_seconds, row.actual_seconds) else 'no'} | {row.load:.1f} |"
        )
    lines += ["", "| dataset | part | estimated | took | epochs run / planned |", "|---|---|---|---|---|"]
    for row in rows:
        for group, timing in row.timings.items():
            if group == "total":
                continue
            epochs = f"{timing['epochs']} / {timing['planned_epochs']}" if "planned_epochs" in timing else ""
            lines.append(f"| {row.dataset} | {group} | {timing['estimated']:.0f} s | {timing['actual']:.0f} s | {epochs} |")
    lines += ["", "| dataset | phase | at the end of epoch | said left (run) | took (run) | error | said left (phase) | took (phase) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for readout in row.readouts:
            said = "n/a" if readout.said is None else f"{readout.said:.0f} s"
            phase_said = "n/a" if readout.phase_said is None else f"{readout.phase_said:.0f} s"
            error = "n/a" if readout.error is None else f"{readout.error:+.0%}"
            lines.append(f"| {row.dataset} | {readout.phase} | {readout.epoch} | {said} | {readout.actual:.0f} s | {error} | {phase_said} | {readout.phase_actual:.0f} s |")
    hits = [within(row.estimate_seconds, row.actual_seconds) for row in rows] + [within(readout.said, readout.actual) for row in rows for readout in row.readouts]
    lines += [
        "", f"{sum(hits)} of {len(hits)} estimates and readouts within ±25 % (or 5 s) of what happened "
        f"(load: the load average on {os.cpu_count()} cores when each run ended; above the core count, other programs were slowing the runs down).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimates", description="Each estimate of the recommended recipe against the run it promises.")
    parser.add_argument("data", type=Path, nargs="*", default=list(DEFAULT_DATASETS), help="dataset folders, in order (default: cats_dogs, aerial, cat_breeds)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="the cache folder shared by the runs (default: a fresh one, removed at the end)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary folder, removed at the end)")
    parser.add_argument("--time-budget", type=float, default=10.0, help="the advice's time budget in minutes (default 10, as on the Scenario page)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, each dataset run twice (the second learns from the first)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    arguments = parser.parse_args(argv)
    work = arguments.work or Path(tempfile.mkdtemp(prefix="tl_estimates_"))
    cache = arguments.cache_dir or work / "cache"
    os.environ["TL_CORE_CACHE_DIR"] = str(cache)  # the throughput, the caches and timings.json, as the app would keep them
    rows = []
    try:
        for number, data in enumerate([folder for folder in arguments.data for _ in range(2 if arguments.smoke else 1)]):
            started = time.time()
            rows.append(measure(data, work / f"run_{number}_{Path(data).name}", arguments.smoke, arguments.time_budget))
            print(f"{Path(data).name}: {rows[-1].strategy}, estimated {rows[-1].estimate_seconds:.0f} s, took {rows[-1].actual_seconds:.0f} s "
                  f"({time.time() - started:.0f} s with the advice)", file=sys.stderr)
    finally:
        if arguments.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(rows))
    if arguments.json:
        arguments.json.write_text(json.dumps([{**asdict(row), "error": row.error} for row in rows], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
