"""Splitting: generated splits are stratified and seeded; given split folders are kept, and a given val/ is held out for the report."""

from __future__ import annotations

from pathlib import Path

from tl_core.data.scan import scan_dataset

from conftest import make_class_folders


def test_generated_split_is_stratified_seeded_and_stated(tiny_dataset: Path) -> None:
    first = scan_dataset(tiny_dataset, seed=1)
    again = scan_dataset(tiny_dataset, seed=1)
    other = scan_dataset(tiny_dataset, seed=2)
    counts = first.counts()
    for name in first.class_names:
        # 15 % of 10 images rounds to 2 for validation and 2 for testing; the other 6 train.
        assert (counts["train"][name], counts["val"][name], counts["test"][name]) == (6, 2, 2)
    assert [record.split for record in first.records] == [record.split for record in again.records]
    assert [record.split for record in first.records] != [record.split for record in other.records]
    assert first.split_fractions == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert "70/15/15" in first.split_source and "seed 1" in first.split_source
    assert first.evaluation_split == "test"


def test_given_val_folder_is_kept_for_the_report_and_the_epoch_is_chosen_on_part_of_train(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 20, "b": 20})
    make_class_folders(tmp_path / "data" / "val", {"a": 4, "b": 5})
    dataset = scan_dataset(tmp_path / "data", val_fraction=0.2, seed=3)
    counts = dataset.counts()
    assert counts == {"train": {"a": 16, "b": 16}, "val": {"a": 4, "b": 4}, "test": {"a": 4, "b": 5}}
    assert {record.relative_path.split("/")[0] for record in dataset.split("test")} == {"val"}
    assert {record.relative_path.split("/")[0] for record in dataset.split("val")} == {"train"}
    assert dataset.evaluation_split == "test"
    assert "kept apart for the final report" in dataset.split_source and "seed 3" in dataset.split_source
    assert [record.split for record in scan_dataset(tmp_path / "data", val_fraction=0.2, seed=3).records] == [record.split for record in dataset.records]


def test_given_val_folder_does_both_jobs_when_train_is_too_small_to_spare_images(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 20, "b": 9})
    make_class_folders(tmp_path / "data" / "val", {"a": 4, "b": 4})
    dataset = scan_dataset(tmp_path / "data")
    assert dataset.counts() == {"train": {"a": 20, "b": 9}, "val": {"a": 4, "b": 4}}
    assert dataset.evaluation_split == "val"
    assert "val/ both chooses the best epoch and reports the accuracy" in dataset.split_source
    assert "only 9 images" in dataset.split_source


def test_train_folder_without_val_gets_a_validation_split(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", {"a": 10, "b": 10})
    make_class_folders(tmp_path / "data" / "test", {"a": 2, "b": 2})
    dataset = scan_dataset(tmp_path / "data", val_fraction=0.2)
    counts = dataset.counts()
    assert counts["val"] == {"a": 2, "b": 2}
    assert counts["train"] == {"a": 8, "b": 8}
    assert counts["test"] == {"a": 2, "b": 2}
    assert "no val/ folder" in dataset.split_source
