"""Label-error finder (tl_core.insight.label_issues) and the user's label decisions (tl_core.data.decisions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.cli import main
from tl_core.data.decisions import EXCLUDE, load_decisions
from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset
from tl_core.errors import DataError
from tl_core.insight.label_issues import find_label_issues, judge_labels, judged_splits, typicality_scores

from conftest import CLASSES, FLIPS, make_class_folders, planted, write_image


def pixel_judgement(dataset):
    splits = judged_splits(dataset, None)
    records = [record for record in dataset.records if record.split in splits]
    features = np.stack([load_image(record.path, 8).reshape(-1).astype(np.float32) for record in records])
    return judge_labels(dataset, records, features, splits)


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


def test_typicality_is_cleanlabs_outlier_score_computed_in_blocks() -> None:
    import contextlib
    import io

    from cleanlab.outlier import OutOfDistribution

    generator = np.random.default_rng(0)
    features = np.abs(generator.normal(size=(1500, 48))).astype(np.float32)  # pooled features are never negative
    features[7] = 0.0
    features[7, :3] = 5.0  # a picture unlike the rest
    features[100] = features[101]  # an exact copy: each is the other's nearest neighbour
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = OutOfDistribution().fit_score(features=features)
    ours = typicality_scores(features)  # 1,500 images: more than one block of rows
    assert np.allclose(ours, theirs, atol=1e-5)
    assert int(np.argmin(ours)) == 7


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


def test_the_judgement_reports_progress_from_its_first_classifier(tmp_path: Path) -> None:
    """One step per classifier trained (each fold of each regularisation strength tried, then each fold of the judgement), from 0 on."""
    from tl_core.insight.label_issues import REGULARISATION_GRID

    dataset = scan_dataset(planted(tmp_path / "data", {}))
    splits = judged_splits(dataset, None)
    records = [record for record in dataset.records if record.split in splits]
    features = np.stack([np.asarray(Image.open(record.path).convert("RGB").resize((8, 8))).reshape(-1).astype(np.float32) for record in records])
    steps = []
    judge_labels(dataset, records, features, splits, on_progress=lambda done, total: steps.append((done, total)))
    total = 5 * (len(REGULARISATION_GRID) + 1)
    assert steps == [(done, total) for done in range(total + 1)]


def test_the_strength_is_chosen_on_a_sample_of_a_large_set_with_every_class_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many images: the grid's classifiers see about GRID_IMAGES of them, each class in proportion, a small class whole."""
    from tl_core.insight import label_issues
    from tl_core.insight.label_issues import choose_regularisation, grid_sample

    labels = np.repeat([0, 1, 2], [6000, 3000, 7])
    chosen = grid_sample(labels, 900, 5, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [600, 300, 7] and len(set(chosen.tolist())) == len(chosen)
    assert not np.array_equal(chosen, grid_sample(labels, 900, 5, seed=1))
    assert np.array_equal(grid_sample(labels[:800], 900, 5, seed=0), np.arange(800))  # fewer than the limit: all

    generator = np.random.default_rng(0)
    features = generator.normal(size=(9007, 4)) + labels[:, None]
    seen = rows_fitted(monkeypatch)
    monkeypatch.setattr(label_issues, "GRID_IMAGES", 900)
    choose_regularisation(features, labels, 5, seed=0)
    assert len(seen) == 5 * len(label_issues.REGULARISATION_GRID) and max(seen) <= 907 * 4 // 5 + 1


def rows_fitted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows each logistic regression is fitted on from now on, in order."""
    from sklearn.linear_model import LogisticRegression

    rows: list[int] = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, x, y, *rest, **named: (rows.append(len(x)), fit(self, x, y, *rest, **named))[1])
    return rows


def test_on_many_images_the_folds_train_without_the_mirror_images_and_answer_for_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.insight import label_issues

    dataset = scan_dataset(planted(tmp_path / "data", {}))
    splits = judged_splits(dataset, None)
    records = [record for record in dataset.records if record.split in splits]
    generator = np.random.default_rng(0)
    labels = np.array([record.label for record in records])
    features = (generator.normal(size=(len(records), 6)) + 3 * np.eye(6)[labels]).astype(np.float32)
    mirrored = features + generator.normal(scale=0.1, size=features.shape).astype(np.float32)
    rows = rows_fitted(monkeypatch)
    judge_labels(dataset, records, features, splits, mirrored=mirrored)  # few images: each fold trains on both views
    few = rows[-5:]
    rows.clear()
    monkeypatch.setattr(label_issues, "GRID_IMAGES", len(records) - 1)  # as many as a large set
    report = judge_labels(dataset, records, features, splits, mirrored=mirrored)
    assert rows[-5:] == [count // 2 for count in few]  # the images alone
    assert report.out_of_fold_accuracy > 0.9 and report.judged == len(records)


@pytest.mark.slow
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


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
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


def test_the_judgement_forks_no_process_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cleanlab forks a pool by default; a fork of the web server (TensorFlow's threads holding locks) hung in the browser test."""
    import multiprocessing
    import multiprocessing.pool

    def refuse(*arguments, **keywords):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    monkeypatch.setattr(multiprocessing.pool, "Pool", refuse)
    dataset = scan_dataset(planted(tmp_path / "data", FLIPS))
    report = pixel_judgement(dataset)
    assert any(suspect.flagged for suspect in report.suspects)
