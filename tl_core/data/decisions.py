"""The user's decisions about doubtful labels: keep, relabel to another class, or exclude.

Decisions live in a small JSON file in the dataset folder, ``label_decisions.json``,
keyed by each image's path relative to that folder. The user's images are never
moved, renamed or deleted: a scan applies the decisions on top of what the folders
say (``scan_dataset`` does it after splitting, so an image keeps its split), and the
scanner knows the file and does not list it as a stray file.

A decision remembers the label the image had when it was made. When the file has
since moved to another class folder, or is gone, or names a class that no longer
exists, the decision is *stale*: it is not applied, and the scan says why.

Two tabs (or two colleagues) may decide at once: ``decide`` reads, changes and
writes the file while holding a lock (``.label_decisions.json.lock`` next to
it), so neither loses the other's decisions. The file is written whole
(``atomic_write``: synced, renamed into place, readable by everyone who can
read the folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from tl_core.errors import DataError
from tl_core.files import FileLock, atomic_write

DECISIONS_FILE = "label_decisions.json"
DECISIONS_LOCK = ".label_decisions.json.lock"
DECISIONS_FILES = (DECISIONS_FILE, DECISIONS_LOCK)  # what the scanner passes over without counting
FORMAT = "tl_core label decisions"
KEEP, RELABEL, EXCLUDE = "keep", "relabel", "exclude"
ACTIONS = (KEEP, RELABEL, EXCLUDE)


@dataclass(frozen=True)
class LabelDecision:
    """One image's decision.

    Attributes:
        path: The image's path relative to the dataset folder, ``/``-separated.
        action: ``keep``, ``relabel`` or ``exclude``.
        given: The class its folder gave it when the decision was made.
        to: The new class, for ``relabel``.
        decided: When (ISO 8601, UTC).
    """

    path: str
    action: str
    given: str
    to: str = ""
    decided: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise DataError(f"Unknown label decision '{self.action}' for '{self.path}'; use one of {', '.join(ACTIONS)}.")
        if self.action == RELABEL and not self.to:
            raise DataError(f"The decision to relabel '{self.path}' names no class to relabel it to.")
        if self.action == RELABEL and self.to == self.given:
            raise DataError(f"'{self.path}' is already labelled '{self.given}'; choose another class or 'keep'.")

    def describe(self) -> str:
        return {KEEP: f"keep as {self.given}", RELABEL: f"relabel {self.given} → {self.to}", EXCLUDE: "exclude"}[self.action]

    def to_dict(self) -> dict:
        data = {"action": self.action, "given": self.given, "decided": self.decided}
        if self.action == RELABEL:
            data["to"] = self.to
        return data


def decisions_path(root: str | os.PathLike) -> Path:
    """Where the decisions of the dataset whose (scanned) folder is ``root`` are kept."""
    return Path(root) / DECISIONS_FILE


def load_decisions(root: str | os.PathLike) -> dict[str, LabelDecision]:
    """The decisions saved for a dataset folder, by relative path; empty when there are none.

    Raises:
        DataError: When the file exists but cannot be read as decisions (the message names it).
    """
    path = decisions_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["decisions"]
        return {relative: LabelDecision(path=relative, **entry) for relative, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"'{path}' holds label decisions but could not be read ({type(error).__name__}: {error}). "
            f"Fix the file or delete it to start again without decisions; your images are not affected."
        ) from error


def save_decisions(root: str | os.PathLike, decisions: dict[str, LabelDecision]) -> Path:
    """Writes the decisions next to the images (atomically); with none left, removes the file. Returns its path.

    Raises:
        DataError: When the folder cannot be written to (the message says what to do).
    """
    path = decisions_path(root)
    if not decisions:
        path.unlink(missing_ok=True)
        return path
    data = {
        "format": FORMAT,
        "version": 1,
        "note": "Written by tl_core: how to treat doubtful labels. The images themselves are never moved or changed.",
        "decisions": {relative: decisions[relative].to_dict() for relative in sorted(decisions)},
    }
    try:
        atomic_write(path, json.dumps(data, indent=1))
    except OSError as error:
        raise _unwritable(path, error) from error
    return path


def _unwritable(path: Path, error: OSError) -> DataError:
    return DataError(
        f"Could not save the label decisions in '{path.parent}': {error.strerror or error}. The folder may be read-only: "
        "copy the dataset to a folder you can write to and load that copy."
    )


def decide(root: str | os.PathLike, changes: dict[str, LabelDecision | None]) -> dict[str, LabelDecision]:
    """Adds, replaces (a ``LabelDecision``) or forgets (``None``) decisions by relative path, saves, and returns them all.

    The file is read and written under its lock: decisions saved meanwhile by another tab or process are kept.

    Raises:
        DataError: When the file is damaged, or the folder cannot be written to.
    """
    lock = FileLock(Path(root) / DECISIONS_LOCK)
    try:
        lock.acquire()
    except OSError as error:
        raise _unwritable(decisions_path(root), error) from error
    try:
        decisions = load_decisions(root)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for relative, decision in changes.items():
            if decision is None:
                decisions.pop(relative, None)
            else:
                decisions[relative] = decision if decision.decided else replace(decision, decided=now)
        save_decisions(root, decisions)
    finally:
        lock.release()
    return decisions


def apply_decisions(dataset, decisions: dict[str, LabelDecision] | None = None):
    """The dataset as the decisions say: relabelled images take their new class, excluded ones move to ``skipped``.

    Each image keeps its split. ``dataset.label_decisions`` says what was applied
    and which decisions were stale, and why.

    Args:
        dataset: A scanned dataset (``tl_core.data.Dataset``) with the labels its folders give.
        decisions: The decisions; None reads them from the dataset's folder.
    """
    from tl_core.data.records import SkippedFile

    decisions = load_decisions(dataset.root) if decisions is None else decisions
    if not decisions:
        return dataset
    by_path = {record.relative_path: record for record in dataset.records}
    records, excluded, relabelled, kept, stale = [], [], [], [], []
    used = set()
    for record in dataset.records:
        decision = decisions.get(record.relative_path)
        if decision is None:
            records.append(record)
            continue
        used.add(record.relative_path)
        if decision.given != record.class_name:
            stale.append({"path": decision.path, "reason": f"decided when it was labelled '{decision.given}', but its folder now says '{record.class_name}'"})
            records.append(record)
        elif decision.action == RELABEL and decision.to not in dataset.class_names:
            stale.append({"path": decision.path, "reason": f"relabels it to '{decision.to}', which is not a class of this dataset"})
            records.append(record)
        elif decision.action == RELABEL:
            records.append(replace(record, class_name=decision.to, label=dataset.class_names.index(decision.to)))
            relabelled.append({"path": decision.path, "from": decision.given, "to": decision.to})
        elif decision.action == EXCLUDE:
            excluded.append(SkippedFile(record.path, f"excluded by your label decision (in {DECISIONS_FILE}); undo it there or on the Data page to use it again"))
        else:
            records.append(record)
            kept.append(decision.path)
    for relative in sorted(set(decisions) - used - set(by_path)):
        stale.append({"path": relative, "reason": "no such image in the dataset now (moved, renamed, deleted or skipped)"})
    applied = {
        "file": str(decisions_path(dataset.root)),
        "relabelled": relabelled,
        "excluded": sorted(item.path for item in excluded),
        "kept": kept,
        "stale": stale,
    }
    changed = replace(dataset, records=records, label_decisions=applied)
    return changed.without(excluded) if excluded else changed


# --------------------------------------------------------------------------- decision boxes: what a user can choose for one image


@dataclass(frozen=True)
class Choice:
    """One option in an image's decision box: undecided (no decision), keep, relabel to a class, or exclude.

    Attributes:
        action: ``""`` for undecided, else ``keep``, ``relabel`` or ``exclude``.
        to: The class to relabel to (``relabel`` only).
    """

    action: str = ""
    to: str = ""

    def describe(self, given: str) -> str:
        """The option in words, for an image labelled ``given``."""
        return {"": "Undecided", KEEP: f"Keep '{given}'", EXCLUDE: "Exclude", RELABEL: f"Relabel to '{self.to}'"}[self.action]

    def decision(self, relative_path: str, given: str) -> LabelDecision | None:
        """The decision this option makes for an image (None: forget any decision)."""
        return None if not self.action else LabelDecision(relative_path, self.action, given, to=self.to)


UNDECIDED = Choice()


def choices(given: str, class_names: list[str], suggested: str | None = None) -> list[Choice]:
    """The options for an image labelled ``given``: undecided, keep, relabel to each other class (``suggested`` first), exclude."""
    others = sorted((name for name in class_names if name != given), key=lambda name: name != suggested)
    return [UNDECIDED, Choice(KEEP), *(Choice(RELABEL, name) for name in others), Choice(EXCLUDE)]


def choice_of(decision: LabelDecision | None) -> Choice:
    """The option a saved decision corresponds to."""
    if decision is None:
        return UNDECIDED
    return Choice(decision.action, decision.to if decision.action == RELABEL else "")


def folder_label(relative_path: str, label_now: str, decisions: dict[str, LabelDecision]) -> str:
    """The class the image's folder gives it: a relabel decision changed the label a report saw, not the folder's."""
    decision = decisions.get(relative_path)
    return decision.given if decision is not None else label_now


def changed(chosen: dict[str, LabelDecision | None], decisions: dict[str, LabelDecision]) -> dict[str, LabelDecision | None]:
    """The entries of ``chosen`` that differ from what is saved (what ``decide`` has to write)."""
    return {path: decision for path, decision in chosen.items() if choice_of(decision) != choice_of(decisions.get(path))}


def decide_for_many(suspects, floor: float, action: str, decisions: dict[str, LabelDecision]) -> dict[str, LabelDecision | None]:
    """Decisions for every suspect whose suggested class has at least ``floor`` confidence.

    ``action`` is ``exclude`` (the safer choice for many at once: a hard picture is left
    out rather than given a wrong class) or ``relabel`` (each to its suggested class; back
    to no decision when the suggestion is the folder's own label).

    Args:
        suspects: ``tl_core.insight.label_issues.Suspect`` objects (``relative_path``, ``given_label``,
            ``suggested_label``, ``confidence``).
        floor: The smallest confidence acted on.
        action: ``exclude`` or ``relabel``.
        decisions: The decisions saved now.
    """
    if action not in (EXCLUDE, RELABEL):
        raise DataError(f"Decide for many at once with '{EXCLUDE}' or '{RELABEL}', not '{action}'.")
    result = {}
    for suspect in suspects:
        if suspect.confidence < floor:
            continue
        given = folder_label(suspect.relative_path, suspect.given_label, decisions)
        if action == EXCLUDE:
            choice = Choice(EXCLUDE)
        else:
            choice = UNDECIDED if suspect.suggested_label == given else Choice(RELABEL, suspect.suggested_label)
        result[suspect.relative_path] = choice.decision(suspect.relative_path, given)
    return result
