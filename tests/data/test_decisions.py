"""Label decisions: keep, relabel or exclude images without touching them; applied by every scan and recorded by every run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tl_core.data.decisions import (
    DECISIONS_FILE,
    EXCLUDE,
    KEEP,
    RELABEL,
    UNDECIDED,
    Choice,
    LabelDecision,
    changed,
    choice_of,
    choices,
    decide,
    decide_for_many,
    load_decisions,
    save_decisions,
)
from tl_core.data.scan import scan_dataset
from tl_core.errors import DataError

from conftest import FLIPS, make_class_folders, planted


def test_decisions_round_trip_and_apply_without_touching_the_files(tmp_path: Path) -> None:
    root = planted(tmp_path / "data", FLIPS)
    before = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.png"))
    decide(root, {
        "green/red_003.png": LabelDecision("green/red_003.png", RELABEL, "green", to="red"),
        "blue/green_007.png": LabelDecision("blue/green_007.png", EXCLUDE, "blue"),
        "red/blue_011.png": LabelDecision("red/blue_011.png", KEEP, "red"),
    })
    saved = load_decisions(root)
    assert saved["green/red_003.png"].to == "red" and saved["blue/green_007.png"].action == EXCLUDE and saved["red/blue_011.png"].decided
    assert json.loads((root / DECISIONS_FILE).read_text())["format"] == "tl_core label decisions"
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*.png")) == before  # nothing moved or deleted

    raw = scan_dataset(root, label_decisions=False)
    dataset = scan_dataset(root)
    assert not any(DECISIONS_FILE in item.path for item in dataset.skipped)  # the scanner knows the file
    relabelled = next(record for record in dataset.records if record.relative_path == "green/red_003.png")
    assert relabelled.class_name == "red" and relabelled.label == dataset.class_names.index("red")
    assert relabelled.split == next(record.split for record in raw.records if record.relative_path == "green/red_003.png")  # split kept
    assert not any(record.relative_path == "blue/green_007.png" for record in dataset.records)
    assert any(item.path.endswith("green_007.png") and "excluded by your label decision" in item.reason for item in dataset.skipped)
    assert dataset.label_decisions["relabelled"] == [{"path": "green/red_003.png", "from": "green", "to": "red"}]
    assert dataset.label_decisions["kept"] == ["red/blue_011.png"] and not dataset.label_decisions["stale"]
    assert dataset.fingerprint() != raw.fingerprint()
    assert dataset.summary()["label_decisions"]["excluded"][0].endswith("green_007.png")

    decide(root, {"green/red_003.png": None, "blue/green_007.png": None, "red/blue_011.png": None})
    assert not (root / DECISIONS_FILE).exists()
    assert scan_dataset(root).fingerprint() == raw.fingerprint()


def test_a_decision_whose_file_moved_is_stale_and_not_applied(tmp_path: Path) -> None:
    root = planted(tmp_path / "data", FLIPS)
    decide(root, {
        "green/red_003.png": LabelDecision("green/red_003.png", RELABEL, "green", to="red"),
        "red/red_000.png": LabelDecision("red/red_000.png", EXCLUDE, "red"),
    })
    (root / "green" / "red_003.png").rename(root / "red" / "red_003.png")  # the user fixed it by hand
    save_decisions(root, {**load_decisions(root), "blue/blue_000.png": LabelDecision("blue/blue_000.png", RELABEL, "red", to="blue")})
    dataset = scan_dataset(root)
    reasons = {item["path"]: item["reason"] for item in dataset.label_decisions["stale"]}
    assert "no such image" in reasons["green/red_003.png"]
    assert "now says 'blue'" in reasons["blue/blue_000.png"]
    assert any(record.relative_path == "blue/blue_000.png" and record.class_name == "blue" for record in dataset.records)
    assert not any(record.relative_path == "red/red_000.png" for record in dataset.records)


def test_a_damaged_decisions_file_is_named_in_the_error(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    (root / DECISIONS_FILE).write_text("{not json")
    with pytest.raises(DataError, match=DECISIONS_FILE):
        scan_dataset(root)
    with pytest.raises(DataError, match="Unknown label decision 'delete'"):
        LabelDecision("a/a_000.png", "delete", "a")


def test_a_folder_that_cannot_be_written_gives_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    root = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})

    def read_only(*arguments, **keywords):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # root may write anywhere, so chmod cannot stand in for a read-only share
    with pytest.raises(DataError, match="Could not save the label decisions.*Permission denied.*copy the dataset"):
        decide(root, {"a/a_000.png": LabelDecision("a/a_000.png", EXCLUDE, "a")})
    assert not (root / DECISIONS_FILE).exists()


def test_excluding_every_image_of_a_class_says_which_class(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    decide(root, {f"b/b_{index:03d}.png": LabelDecision(f"b/b_{index:03d}.png", EXCLUDE, "b") for index in range(6)})
    with pytest.raises(DataError, match="Class 'b'.*no usable images"):
        scan_dataset(root)


@pytest.mark.slow
def test_training_applies_the_decisions_and_records_them(tmp_path: Path, imagenet_weights: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.training.run import train

    root = make_class_folders(tmp_path / "data", {"circles": 10, "squares": 10, "stripes": 10})
    decide(root, {
        "circles/circles_000.png": LabelDecision("circles/circles_000.png", EXCLUDE, "circles"),
        "squares/squares_001.png": LabelDecision("squares/squares_001.png", RELABEL, "squares", to="stripes"),
    })
    result = train(TrainConfig(data_dir=str(root), out_dir=str(tmp_path / "run"), epochs=1, image_size=32, cache_dir=str(tmp_path / "cache")))
    summary = json.loads((Path(result.run_dir) / "run.json").read_text())
    assert summary["label_decisions"]["relabelled"] == [{"path": "squares/squares_001.png", "from": "squares", "to": "stripes"}]
    assert summary["label_decisions"]["excluded"][0].endswith("circles_000.png")
    assert sum(sum(per_class.values()) for per_class in summary["data"]["counts"].values()) == 29
    from tl_core.runs.folder import held_out_images
    from tl_core.runs.history import read_run

    assert read_run(result.run_dir).label_decisions == "1 relabelled, 1 excluded"
    assert held_out_images(result.run_dir) and all(not path.endswith("circles_000.png") for path, _ in held_out_images(result.run_dir))
    images = json.loads((Path(result.run_dir) / "images.json").read_text())
    assert not any(path.endswith("circles_000.png") for path in json.dumps(images).split('"'))


def test_a_decision_box_offers_the_likely_fix_first_and_maps_back_to_decisions() -> None:
    options = choices("cats", ["cats", "dogs", "foxes"], suggested="foxes")
    assert options == [UNDECIDED, Choice(KEEP), Choice(RELABEL, "foxes"), Choice(RELABEL, "dogs"), Choice(EXCLUDE)]
    assert [option.describe("cats") for option in options] == ["Undecided", "Keep 'cats'", "Relabel to 'foxes'", "Relabel to 'dogs'", "Exclude"]
    decision = Choice(RELABEL, "dogs").decision("cats/1.jpg", "cats")
    assert decision == LabelDecision("cats/1.jpg", RELABEL, "cats", to="dogs")
    assert choice_of(decision) == Choice(RELABEL, "dogs") and choice_of(None) == UNDECIDED and UNDECIDED.decision("cats/1.jpg", "cats") is None
    saved = {"cats/1.jpg": decision}
    assert changed({"cats/1.jpg": decision, "cats/2.jpg": None}, saved) == {}
    assert changed({"cats/1.jpg": None}, saved) == {"cats/1.jpg": None}


def test_deciding_for_many_excludes_or_relabels_the_confident_suspects() -> None:
    from tl_core.insight.label_issues import Suspect

    suspects = [
        Suspect("/d/cats/1.jpg", "cats/1.jpg", "train", "cats", "dogs", 0.95, 0.05),
        Suspect("/d/dogs/2.jpg", "dogs/2.jpg", "train", "dogs", "cats", 0.6, 0.4),  # below the floor: untouched
        Suspect("/d/dogs/3.jpg", "dogs/3.jpg", "train", "cats", "dogs", 0.9, 0.1),  # relabelled to cats earlier; dogs is its folder's label
    ]
    saved = {"dogs/3.jpg": LabelDecision("dogs/3.jpg", RELABEL, "dogs", to="cats")}
    excluded = decide_for_many(suspects, 0.8, EXCLUDE, saved)
    assert {path: decision.action for path, decision in excluded.items()} == {"cats/1.jpg": EXCLUDE, "dogs/3.jpg": EXCLUDE}
    relabelled = decide_for_many(suspects, 0.8, RELABEL, saved)
    assert relabelled == {"cats/1.jpg": LabelDecision("cats/1.jpg", RELABEL, "cats", to="dogs"), "dogs/3.jpg": None}  # back to its folder's label
    with pytest.raises(DataError, match="not 'keep'"):
        decide_for_many(suspects, 0.8, KEEP, saved)


def test_two_tabs_deciding_at_once_both_keep_their_decisions(tmp_path: Path, monkeypatch) -> None:
    import stat
    import threading
    import time

    import tl_core.data.decisions as decisions_module

    root = make_class_folders(tmp_path / "data", {"a": 6, "b": 6})
    read = decisions_module.load_decisions

    def slow_read(folder):
        found = read(folder)
        time.sleep(0.3)  # both tabs have read the file before either writes, unless the lock holds the second back
        return found

    monkeypatch.setattr(decisions_module, "load_decisions", slow_read)
    tabs = [
        threading.Thread(target=decide, args=(root, {path: LabelDecision(path, EXCLUDE, "a")}))
        for path in ("a/a_000.png", "a/a_001.png")
    ]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join(10)
    assert sorted(read(root)) == ["a/a_000.png", "a/a_001.png"]
    assert stat.S_IMODE((root / DECISIONS_FILE).stat().st_mode) == 0o644  # colleagues sharing the dataset can read it
    assert scan_dataset(root).summary()["ignored_system_files"] == 0  # the lock file is the app's own, not litter
