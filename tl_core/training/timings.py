"""What finished runs took against their estimates, and what later estimates on the same device learn from it.

The estimate (``tl_core.training.estimate``) counts passes over the images and
multiplies them by a measured forward pass; how much a training step costs
beyond that, how long tracing and writing files take, depends on the device.
So every finished run compares its estimate with the seconds it measured, per
group of phases:

- ``images``: decoding the images and the frozen backbone's features;
- ``head``: the head's epochs on cached features;
- ``fine_tune``, ``full_fine_tune``, ``from_scratch``: the epochs on images;
- ``evaluate``: the held-out split;
- ``rest``: everything else (scanning, building, tracing, writing the files, converting them).

The comparison is kept in the run's ``run.json`` (``RunSummary.timings``) and in
``timings.json`` in the cache folder. A later estimate on the same device
multiplies each group by the median ratio of actual to modelled seconds of the
last few runs there (those with the same backbone when there are any). For a
phase of epochs the ratio is per epoch: a phase that stopped early says nothing
about the device's speed. How many of its planned epochs the head's phase ran
before early stopping ended it is learnt as well, since a warm-up of at most 200
epochs usually stops after a few dozen. The arithmetic counts as one run: a
correction learnt from one run moves the estimate half way (in the logarithm),
so one run slowed by another program on the machine does not double the next
estimate.

A run the app starts also spends seconds before its own clock: a fresh Python
process imports the Keras backend and scans the folder. The job measures that
start-up (``record_start_up``), and the app's estimates add the median of the
last few (``learned_start_up``).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

from tl_core.files import default_cache_dir, read_json, write_json

TIMINGS_FILE = "timings.json"
START_UP_FILE = "start_up.json"
KEPT_RECORDS = 60  # the newest records in timings.json; older ones are dropped
RECENT_RUNS = 5  # each correction is the median of this many of the latest matching runs
FACTOR_RANGE = (0.2, 5.0)  # a correction outside this range comes from a broken record, not a device
SMALLEST_COMPARED_SECONDS = 1.0  # groups shorter than this are too noisy to learn from
EPOCH_GROUPS = ("head", "fine_tune", "full_fine_tune", "from_scratch")
# Feature extraction's second pass and second round of the head, with the mirror images: estimated, and
# left out of the comparison where the run found they would not pay (tl_core.training.mirrors).
MIRROR_FEATURES, MIRROR_HEAD = "mirror features", "mirror head"
# The estimate's parts, grouped as the run measures them (a first run decodes while the backbone works).
PART_GROUPS = {
    "decode": "images",
    "features": "images",
    MIRROR_FEATURES: "images",
    "head": "head",
    MIRROR_HEAD: "head",
    "fine_tune": "fine_tune",
    "full_fine_tune": "full_fine_tune",
    "from_scratch": "from_scratch",
    "evaluate": "evaluate",
}
# The run's timed phases (``run.json`` "seconds") in the same groups; the rest of the total is "rest".
SECONDS_GROUPS = {"decode": "images", "features": "images", "head": "head", "fine_tune": "fine_tune", "from_scratch": "from_scratch", "evaluate": "evaluate"}


def group_of(part: str) -> str:
    """The group an estimate part belongs to (``setup`` and ``portable files`` are ``rest``)."""
    return PART_GROUPS.get(part, "rest")


def grouped(parts: dict[str, float]) -> dict[str, float]:
    """An estimate's seconds per part, summed per group."""
    groups: dict[str, float] = {}
    for part, seconds in parts.items():
        groups[group_of(part)] = groups.get(group_of(part), 0.0) + float(seconds)
    return groups


def measured_groups(seconds: dict[str, float], strategy: str) -> dict[str, float]:
    """A run's measured seconds per group; ``rest`` is the total less the grouped phases."""
    groups: dict[str, float] = {}
    for phase, group in SECONDS_GROUPS.items():
        if phase in seconds:
            group = strategy if group == "fine_tune" else group  # full fine-tuning trains in the phase "fine_tune"
            groups[group] = groups.get(group, 0.0) + float(seconds[phase])
    if "total" in seconds:
        groups["rest"] = max(float(seconds["total"]) - sum(groups.values()), 0.0)
    return groups


def compare_with_estimate(estimate: dict, seconds: dict, history: list[dict], strategy: str, mirrors_ran: bool = True) -> dict:
    """The run's estimate against what it took, per group: what ``run.json`` keeps as ``timings``.

    Args:
        estimate: ``Estimate.to_dict()`` of the run (``parts`` as shown, ``model_parts`` before any correction).
        seconds: The run's measured seconds per phase, with ``total``.
        history: The run's epochs (each with its ``phase``), to count the epochs each phase ran.
        strategy: The strategy trained.
        mirrors_ran: False where the mirror images' pass was estimated but skipped (or stopped): its parts
            and the head's second round of epochs are left out, so the run is compared with what it did.

    Returns:
        ``{group: {"estimated", "model", "actual", "planned_epochs", "epochs"}}`` and ``total``.
    """
    parts, model_parts = estimate.get("parts") or {}, estimate.get("model_parts") or estimate.get("parts") or {}
    planned = dict(estimate.get("epochs") or {})
    if not mirrors_ran and MIRROR_HEAD in parts:
        planned["head"] = planned.get("head", 0) // 2
    if not mirrors_ran:
        parts, model_parts = ({name: value for name, value in chosen.items() if name not in (MIRROR_FEATURES, MIRROR_HEAD)} for chosen in (parts, model_parts))
    shown = grouped(parts)
    model = grouped(model_parts)
    actual = measured_groups(seconds, strategy)
    ran = _epochs_per_group(history, strategy)
    rows = {}
    for group in dict.fromkeys([*shown, *actual]):
        row = {"estimated": round(shown.get(group, 0.0), 1), "model": round(model.get(group, 0.0), 1), "actual": round(actual.get(group, 0.0), 1)}
        if group in EPOCH_GROUPS:
            row.update(planned_epochs=int(planned.get(group) or 0), epochs=ran.get(group, 0))
        rows[group] = row
    rows["total"] = {"estimated": round(float(estimate.get("seconds") or 0.0), 1), "actual": round(float(seconds.get("total") or 0.0), 1)}
    return rows


def _epochs_per_group(history: list[dict], strategy: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in history:
        phase = entry.get("phase") or ""
        group = strategy if phase == "fine_tune" else phase
        counts[group] = counts.get(group, 0) + 1
    return counts


def record_timings(timings: dict, device: str, backbone: str, image_size: int, strategy: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Adds a finished run's comparison to ``timings.json`` in the cache folder (the newest ``KEPT_RECORDS`` stay)."""
    path = Path(cache_dir or default_cache_dir()) / TIMINGS_FILE
    records = _records(path)
    records.append({"device": device, "backbone": backbone, "image_size": image_size, "strategy": strategy, "recorded": time.time(), "groups": timings})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records[-KEPT_RECORDS:], indent=1)


def _records(path: Path) -> list[dict]:
    records = read_json(path, [])
    return [record for record in records if isinstance(record, dict) and isinstance(record.get("groups"), dict)] if isinstance(records, list) else []


def learned_corrections(device: str, backbone: str, cache_dir: str | os.PathLike | None = None) -> tuple[dict[str, float], dict[str, float], int]:
    """What the runs recorded on this device teach: a speed factor per group, the share of the head's epochs that ran, and how many runs.

    A group's factor is the median ratio of actual to modelled seconds (per epoch for a phase of
    epochs) over the latest ``RECENT_RUNS`` runs on ``device`` that ran it, those with ``backbone``
    first. No record: no correction (factor 1, share 1).

    Returns:
        ``(factors by group, {"head": share of planned epochs run}, runs learnt from)``.
    """
    records = [record for record in _records(Path(cache_dir or default_cache_dir()) / TIMINGS_FILE) if record.get("device") == device]
    same_backbone = [record for record in records if record.get("backbone") == backbone]
    factors: dict[str, float] = {}
    shares: dict[str, float] = {}
    used: set[int] = set()
    for group in ("images", *EPOCH_GROUPS, "evaluate", "rest"):
        ratios = _ratios(same_backbone, group) or _ratios(records, group)
        if ratios:
            recent = ratios[-RECENT_RUNS:]
            # The arithmetic counts as one run more: one run's ratio moves the estimate half way (in the logarithm), five runs five sixths.
            factors[group] = _clamped(math.exp(len(recent) / (len(recent) + 1) * statistics.median(math.log(value) for value, _ in recent)))
            used.update(index for _, index in ratios[-RECENT_RUNS:])
    head_shares = [
        (row["epochs"] / row["planned_epochs"], id(record))
        for record in (same_backbone or records)
        if (row := record["groups"].get("head")) and row.get("planned_epochs") and row.get("epochs")
    ]
    if head_shares:
        shares["head"] = min(1.0, statistics.median(value for value, _ in head_shares[-RECENT_RUNS:]))
    return factors, shares, len(used)


def _ratios(records: list[dict], group: str) -> list[tuple[float, int]]:
    """(actual / modelled, record id) of each record that ran ``group`` long enough to tell, oldest first."""
    ratios = []
    for record in records:
        row = record["groups"].get(group)
        if not isinstance(row, dict) or not row.get("model") or not row.get("actual"):
            continue
        model, actual = float(row["model"]), float(row["actual"])
        if group in EPOCH_GROUPS:
            planned, ran = row.get("planned_epochs") or 0, row.get("epochs") or 0
            if not planned or not ran:
                continue
            model, actual = model / planned, actual / ran
            if row["actual"] < SMALLEST_COMPARED_SECONDS:
                continue
        elif model < SMALLEST_COMPARED_SECONDS or actual < SMALLEST_COMPARED_SECONDS:
            continue
        ratios.append((actual / model, id(record)))
    return ratios


def _clamped(factor: float) -> float:
    low, high = FACTOR_RANGE
    return min(max(factor, low), high)


def record_start_up(seconds: float, device: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Adds the seconds a run the app started took to send its first event (the process spawned, the libraries imported) to ``start_up.json``."""
    path = Path(cache_dir or default_cache_dir()) / START_UP_FILE
    records = read_json(path, [])
    records = [record for record in records if isinstance(record, dict)] if isinstance(records, list) else []
    records.append({"device": device, "seconds": round(float(seconds), 3), "recorded": time.time()})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records[-KEPT_RECORDS:], indent=1)


def learned_start_up(device: str, cache_dir: str | os.PathLike | None = None) -> float | None:
    """The median start-up of the latest ``RECENT_RUNS`` app-started runs on ``device`` (None before the first)."""
    records = read_json(Path(cache_dir or default_cache_dir()) / START_UP_FILE, [])
    seconds = [
        float(record["seconds"]) for record in (records if isinstance(records, list) else [])
        if isinstance(record, dict) and record.get("device") == device and isinstance(record.get("seconds"), int | float)
    ]
    return statistics.median(seconds[-RECENT_RUNS:]) if seconds else None
