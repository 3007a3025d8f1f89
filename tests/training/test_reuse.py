"""Training again after adding images: earlier splits kept, only new images decoded and run through the backbone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core.config import TrainConfig
from tl_core.errors import RunError
from tl_core.events import Notice
from tl_core.models.backbones import get_backbone
from tl_core.runs.folder import load_earlier_run
from tl_core.training import reuse
from tl_core.training.reuse import config_from_run
from tl_core.training.run import train

from conftest import REPO, make_class_folders, pattern_image, write_image

pytestmark = pytest.mark.slow  # trains real networks, or runs a benchmark or the browser


def images_of(run_dir: Path) -> dict[str, dict]:
    return {row["path"]: row for row in json.loads((run_dir / "images.json").read_text())}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A first feature-extraction run on 2 x 10 images: (data folder, run folder, cache folder)."""
    from conftest import MOBILENET_V2_WEIGHTS, WEIGHTS

    if not (WEIGHTS / MOBILENET_V2_WEIGHTS).exists():
        pytest.skip(f"skipped: real ImageNet weights not found at {WEIGHTS} (../shared/weights is absent)")
    root = tmp_path_factory.mktemp("rerun")
    data = make_class_folders(root / "data", {"red": 10, "blue": 10}, size=40)
    config = TrainConfig(data_dir=str(data), out_dir=str(root / "first"), image_size=32, epochs=2, cache_dir=str(root / "cache"), val_fraction=0.2, test_fraction=0.2)
    result = train(config)
    assert result.status == "finished"
    return data, Path(result.run_dir), root / "cache"


def test_every_run_records_its_images_and_cache_entries(earlier) -> None:
    data, first, cache = earlier
    rows = images_of(first)
    summary = json.loads((first / "run.json").read_text())

    assert len(rows) == 20 and {row["split"] for row in rows.values()} == {"train", "val", "test"}
    assert sorted(row["row"] for row in rows.values()) == list(range(20))
    assert set(summary["cache_keys"]) == {"images", "features", "mirrored"} and summary["from_run"] is None
    assert (cache / "features" / f"{summary['cache_keys']['features']}.npy").is_file()


def test_training_again_reuses_unchanged_images_and_keeps_their_splits(earlier, tmp_path: Path, monkeypatch) -> None:
    data, first, cache = earlier
    grown = tmp_path / "grown"
    import shutil

    shutil.copytree(data, grown, copy_function=shutil.copy2)  # copy2 keeps the modification times, so the files are "unchanged"
    before = {str(grown / Path(path).relative_to(data)): row for path, row in images_of(first).items()}
    # The earlier run knew the images under the original folder; here the same files sit in a copy, so point the
    # earlier run's manifest at the copy (a user adds images to the folder they trained on).
    manifest = json.loads((first / "images.json").read_text())
    moved = tmp_path / "first"
    shutil.copytree(first, moved)
    (moved / "images.json").write_text(json.dumps([{**row, "path": str(grown / Path(row["path"]).relative_to(data))} for row in manifest]))
    for index in range(3):  # three new images per class
        write_image(grown / "red" / f"new_{index}.png", pattern_image(0, 500 + index, 40))
        write_image(grown / "blue" / f"new_{index}.png", pattern_image(1, 500 + index, 40))
    removed = next(path for path, row in before.items() if row["split"] == "train")
    Path(removed).unlink()

    through_backbone = []
    real_forward = reuse.forward_batches

    def counting(forward, pixels, rows=None, **options):
        through_backbone.append(len(pixels) if rows is None else len(rows))
        return real_forward(forward, pixels, rows, **options)

    monkeypatch.setattr(reuse, "forward_batches", counting)
    notices = []
    config = config_from_run(moved, str(grown), str(tmp_path / "second"), epochs=3)
    result = train(config, on_event=lambda event: notices.append(event.message) if isinstance(event, Notice) else None)

    assert result.status == "finished" and config.epochs == 3 and config.cache_dir == str(cache)
    summary = result.summary
    assert summary.from_run == {"earlier_run": str(moved), "reused": 19, "new": 6, "removed": 1, "through_backbone": 6}
    assert through_backbone == [6, 6]  # the new images only, for the image and for its mirror image
    assert any("Trained again from 'first': 19 images reused (pixels and features), 6 new or changed" in notice for notice in notices)
    assert any("The head starts from the weights of the earlier run 'first'" in notice for notice in notices)
    after = images_of(Path(result.run_dir))
    for path, row in before.items():
        if path != removed:
            assert after[path]["split"] == row["split"], path  # held-out images stay held out, training images stay in training
    assert len(after) == 25 and summary.config["from_run"] == str(moved)
    assert "images of the earlier run keep their split from it" in summary.data["split_source"]


def test_the_command_line_trains_again_with_nothing_new(earlier, tmp_path: Path) -> None:
    data, first, _ = earlier
    command = [sys.executable, "-m", "tl_core", "train", str(data), "--out", str(tmp_path / "again"), "--from-run", str(first), "--patience", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"settings of {first}, changed: early_stopping_patience" in completed.stdout
    summary = json.loads((tmp_path / "again" / "run.json").read_text())
    assert summary["from_run"]["reused"] == 20 and summary["from_run"]["new"] == 0 and summary["from_run"]["through_backbone"] == 0
    assert summary["config"]["early_stopping_patience"] == 1 and summary["config"]["epochs"] == 2  # the rest from the earlier run


def test_a_folder_that_is_not_a_run_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="cannot be trained again from"):
        load_earlier_run(tmp_path)
    with pytest.raises(RunError, match="has no readable run.json"):
        config_from_run(tmp_path, "data", "out")


def test_fine_tuning_again_goes_on_from_the_earlier_model(earlier, tmp_path: Path) -> None:
    from tl_core.events import PhaseStarted

    data, _, cache = earlier
    config = TrainConfig(
        data_dir=str(data), out_dir=str(tmp_path / "tuned"), strategy="fine_tune", image_size=32, epochs=1, warmup_epochs=1,
        cache_dir=str(cache), val_fraction=0.2, test_fraction=0.2, augment=False,
    )
    tuned = train(config)
    assert [entry["phase"] for entry in tuned.history] == ["head", "fine_tune"]

    events = []
    again = train(config_from_run(tuned.run_dir, str(data), str(tmp_path / "again")), on_event=events.append)

    phases = [event.phase for event in events if isinstance(event, PhaseStarted)]
    assert "features" not in phases and "head" not in phases  # no warm-up: the head is trained already
    assert [entry["phase"] for entry in again.history] == ["fine_tune"]
    assert any(isinstance(event, Notice) and "The model starts from the trained weights of the earlier run 'tuned'" in event.message for event in events)
    assert again.summary.from_run["reused"] == 20 and again.summary.from_run["through_backbone"] == 0


def test_a_run_whose_features_have_another_length_is_trained_again_on_new_features(earlier, tmp_path: Path) -> None:
    """A run made before the network's features changed shape (earlier layers joined them): its cached features are not mixed in."""
    import shutil

    import numpy as np

    data, first, cache = earlier
    old_cache, old_run = tmp_path / "cache", tmp_path / "first"
    shutil.copytree(cache, old_cache)
    shutil.copytree(first, old_run)
    summary = json.loads((old_run / "run.json").read_text())
    summary["config"]["cache_dir"] = str(old_cache)
    # Its entries were written under the keys of that time, with the last layer's 1,280 features alone.
    summary["cache_keys"].update(features="features-of-before", mirrored="mirrored-of-before")
    (old_run / "run.json").write_text(json.dumps(summary))
    for key in ("features-of-before", "mirrored-of-before"):
        np.save(old_cache / "features" / f"{key}.npy", np.ones((20, 1280), dtype=np.float32))

    result = train(config_from_run(old_run, str(data), str(tmp_path / "second"), epochs=2))

    assert result.status == "finished"
    assert result.summary.from_run["reused"] == 20 and result.summary.from_run["through_backbone"] == 20  # pixels reused, features new
    assert result.summary.cache_keys["features"] != "features-of-before"
    features = np.load(old_cache / "features" / f"{result.summary.cache_keys['features']}.npy")
    assert features.shape == (20, get_backbone("mobilenet_v2").feature_dim) and not np.allclose(features, 1)


def test_a_head_of_another_shape_is_not_taken_and_the_notice_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair of networks trained before its head became a head per network: the new run starts its heads afresh."""
    from types import SimpleNamespace

    import keras
    import numpy as np

    from tl_core.models.build import build_head

    def classifier_with(head):
        inputs = keras.Input((2960,))
        return keras.Model(inputs, head(inputs))

    notices: list[str] = []
    run = SimpleNamespace(
        earlier=SimpleNamespace(class_names=["a", "b"], run_dir=Path("earlier")), dataset=SimpleNamespace(class_names=["a", "b"]),
        config=SimpleNamespace(strategy="feature_extraction"), model=SimpleNamespace(head=build_head(2960, 2, parts=(2192, 768))), notice=notices.append, warm_started=None,
    )
    monkeypatch.setattr(reuse, "load_run", lambda folder: SimpleNamespace(model=classifier_with(build_head(2960, 2))))
    reuse.warm_start(run)
    assert notices == [
        "The head starts from new weights: the earlier run's head has another shape (dense layers of 2,960 × 2; this run's: a head per network, 2,192 × 2 and 768 × 2)."
    ]
    same = build_head(2960, 2, parts=(2192, 768), seed=7)
    monkeypatch.setattr(reuse, "load_run", lambda folder: SimpleNamespace(model=classifier_with(same)))
    reuse.warm_start(run)  # the same shape: the earlier heads are taken
    assert notices[-1] == "The head starts from the weights of the earlier run 'earlier'."
    assert all(np.array_equal(mine, theirs) for mine, theirs in zip(run.model.head.get_weights(), same.get_weights(), strict=True))
    monkeypatch.setattr(reuse, "load_run", lambda folder: SimpleNamespace(model=classifier_with(build_head(2960, 2, hidden_units=16))))
    reuse.warm_start(run)  # one head with a hidden layer: two dense layers, not a head per network
    assert notices[-1].endswith("(dense layers of 2,960 × 16 and 16 × 2; this run's: a head per network, 2,192 × 2 and 768 × 2).")
