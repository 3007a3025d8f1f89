"""Label-error finder (tl_core.insight.label_issues) and the user's label decisions (tl_core.data.decisions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.cli import main
from tl_core.data.decisions import DECISIONS_FILE, EXCLUDE, KEEP, RELABEL, LabelDecision, decide, load_decisions, save_decisions
from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset
from tl_core.errors import DataError
from tl_core.insight.label_issues import find_label_issues, judge_labels, judged_splits

from conftest import make_class_folders, write_image

CLASSES = {"red": 16, "green": 16, "blue": 16}


def planted(root: Path, flips: dict[str, str]) -> Path:
    """Generated classes with some images moved into the wrong class folder (``{"red/red_003.png": "green"}``)."""
    make_class_folders(root, CLASSES)
    for relative, wrong in flips.items():
        source = root / relative
        source.rename(root / wrong / source.name)
    return root


def pixel_judgement(dataset):
    splits = judged_splits(dataset, None)
    records = [record for record in dataset.records if record.split in splits]
    features = np.stack([load_image(record.path, 8).reshape(-1).astype(np.float32) for record in records])
    return judge_labels(dataset, records, features, splits)


FLIPS = {"red/red_003.png": "green", "green/green_007.png": "blue", "blue/blue_011.png": "red"}


def test_planted_flips_are_the_top_suspects_with_their_true_class(tmp_path: Path) -> None:
    dataset = scan_dataset(planted(tmp_path / "data", FLIPS))
    report = pixel_judgement(dataset)
    top = {Path(suspect.path).name: suspect for suspect in report.suspects[: len(FLIPS)]}
    assert set(top) == {Path(relative).name for relative in FLIPS}
    for relative, wrong in FLIPS.items():
        suspect = top[Path(relative).name]
        assert suspect.given_label == wrong
        assert suspect.suggested_label == relative.split("/")[0]
        assert suspect.confidence > 0.5 > suspect.given_probability
        assert suspect.flagged  # confident learning is sure of these
    assert report.judged == 48 and report.folds == 5
    assert report.out_of_fold_accuracy == pytest.approx(45 / 48, abs=0.03)


def test_clean_labels_give_no_other_suspects_and_an_odd_picture_stands_out(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", CLASSES)
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    write_image(root / "blue" / "placeholder.png", noise)
    report = pixel_judgement(scan_dataset(root))
    assert [Path(odd.path).name for odd in report.odd_ones_out][:1] == ["placeholder.png"]
    assert report.odd_ones_out[0].deviations >= 4
    assert all(Path(suspect.path).name == "placeholder.png" for suspect in report.suspects)  # nothing else looks mislabelled


def test_identical_files_in_two_classes_are_listed_as_a_pair(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", CLASSES)
    shutil.copy(root / "red" / "red_001.png", root / "green" / "copy.png")
    report = pixel_judgement(scan_dataset(root))
    first = report.near_duplicates[0]
    assert first.identical and sorted(first.labels) == ["green", "red"]
    assert {Path(path).name for path in first.paths} == {"red_001.png", "copy.png"}
    assert sorted(first.relative_paths) == ["green/copy.png", "red/red_001.png"] and all(first.splits)


def test_a_class_with_one_image_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 8, "b": 8})
    make_class_folders(tmp_path / "extra", {"c": 1})
    shutil.move(str(tmp_path / "extra" / "c"), root / "c")
    dataset = scan_dataset(root, make_splits=False)  # a split would refuse the class already
    with pytest.raises(DataError, match="'c' has a single image in the test split"):
        judge_labels(dataset, dataset.records, np.zeros((len(dataset.records), 4), dtype=np.float32), ["test"])


def test_the_real_backbone_finds_a_flip_and_a_resized_copy_and_caches_its_features(tmp_path: Path, imagenet_weights: Path) -> None:
    root = planted(tmp_path / "data", {"red/red_003.png": "blue"})
    original = Image.open(root / "green" / "green_005.png")
    original.resize((40, 40)).save(root / "red" / "smaller_copy.png")
    dataset = scan_dataset(root)
    phases = []
    report = find_label_issues(dataset, image_size=96, cache_dir=str(tmp_path / "cache"), on_progress=lambda phase, done, total: phases.append(phase))
    top = {Path(suspect.path).name: suspect.suggested_label for suspect in report.suspects[:2]}
    assert top == {"red_003.png": "red", "smaller_copy.png": "green"}  # the copy is a green picture in red/: a wrong label too
    assert report.backbone == "MobileNetV2" and report.image_size == 96 and not report.features_cached
    assert {"decode", "features", "judge"} <= set(phases)
    pairs = [pair for pair in report.near_duplicates if {Path(path).name for path in pair.paths} == {"green_005.png", "smaller_copy.png"}]
    assert pairs and not pairs[0].identical and pairs[0].similarity >= 0.8
    again = find_label_issues(dataset, image_size=96, cache_dir=str(tmp_path / "cache"))
    assert again.features_cached
    assert [suspect.path for suspect in again.suspects] == [suspect.path for suspect in report.suspects]


# --------------------------------------------------------------------------- decisions


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


# --------------------------------------------------------------------------- command line


def test_cli_lists_suspects_as_json_and_saves_decisions(tmp_path: Path, imagenet_weights: Path, capsys) -> None:
    root = planted(tmp_path / "data", {"red/red_003.png": "blue"})
    assert main(["label-issues", str(root), "--image-size", "96", "--cache-dir", str(tmp_path / "cache"), "--json", "--report", str(tmp_path / "report.json")]) == 0
    suspects = json.loads(capsys.readouterr().out)
    assert suspects[0]["relative_path"] == "blue/red_003.png"
    assert {"path", "given_label", "suggested_label", "confidence"} <= set(suspects[0])
    assert suspects[0]["given_label"] == "blue" and suspects[0]["suggested_label"] == "red"
    full = json.loads((tmp_path / "report.json").read_text())
    assert {"suspects", "near_duplicates", "odd_ones_out", "out_of_fold_accuracy"} <= set(full)

    assert main(["label-decide", str(root), "--relabel", "blue/red_003.png=red", "--exclude", str(root / "red" / "red_000.png"), "--keep", "green/green_000.png"]) == 0
    printed = capsys.readouterr().out
    assert "relabel blue → red\tblue/red_003.png" in printed and "3 decisions" in printed
    assert load_decisions(root)["red/red_000.png"].action == EXCLUDE
    assert main(["label-decide", str(root), "--forget", "green/green_000.png", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"blue/red_003.png", "red/red_000.png"}

    assert main(["label-decide", str(root), "--relabel", "blue/red_003.png=purple"]) == 2
    assert "'purple' is not a class" in capsys.readouterr().err
    assert main(["label-decide", str(root), "--exclude", "red/nothing.png"]) == 2
    assert "is not an image of the dataset" in capsys.readouterr().err
