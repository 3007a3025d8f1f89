"""The command line as a user types it: outputs, and one clear line for each user error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core.cli import main

from conftest import REPO, make_class_folders

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cli(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_prints_the_summary_as_json(capsys, ants_bees: Path) -> None:
    code, out, _ = _cli(capsys, "inspect", ants_bees)
    summary = json.loads(out)
    assert code == 0
    assert summary["counts"]["train"] == {"ants": 105, "bees": 103}  # the rest of train/ chooses the epoch
    assert summary["counts"]["test"] == {"ants": 70, "bees": 83}  # val/ is held out for the report
    assert {"class_names", "image_size", "skipped", "imbalance_ratio", "split_source"} <= set(summary)


def test_inspect_states_generated_split_fractions(capsys, tiny_dataset: Path) -> None:
    code, out, _ = _cli(capsys, "inspect", tiny_dataset, "--seed", "3")
    summary = json.loads(out)
    assert code == 0 and summary["split_fractions"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert summary["split_source"].startswith("generated: stratified split")


@pytest.mark.slow
def test_train_predict_evaluate_round_trip(capsys, tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    run_dir = tmp_path / "run"
    code, out, err = _cli(capsys, "train", tiny_dataset, "--out", run_dir, "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 4  # 2, then up to 2 more with the mirror images (6 validation images: they are expected to pay)
    assert re.match(r"epoch 1 \[head 1 of at most 2\]  loss \d\.\d{4}  acc \d\.\d{4}  val_loss \d\.\d{4}  val_acc \d\.\d{4}  \d+\.\ds$", epoch_lines[0]), epoch_lines[0]
    assert epoch_lines[3].startswith("epoch 4 [head"), epoch_lines[3]
    saved = [line for line in out.splitlines() if line.startswith("model saved: accuracy ")]
    assert len(saved) == 2 and out.index(saved[0]) < out.index("mirror images'") < out.index(saved[1]), out  # the first model before the second pass
    assert "finished: accuracy" in out and re.search(r"device: (CPU \(|GPU \S)", out), out
    assert f"python -m tl_core export {run_dir} --format tflite onnx" in out  # not made unless asked for
    for name in ("model.h5", "model.keras", "labels.json", "metrics.json", "run.json"):
        assert (run_dir / name).is_file(), name

    images = sorted(tiny_dataset.glob("squares/*.png"))[:2]
    code, out, _ = _cli(capsys, "predict", run_dir, *images)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    path, predicted, confidence = lines[0].split("\t")
    assert path == str(images[0]) and predicted in ("circles", "squares", "stripes") and 0 < float(confidence) <= 1

    code, out, err = _cli(capsys, "predict", run_dir, images[0], tmp_path / "nope.jpg")
    assert code == 1 and f"error: could not predict '{tmp_path / 'nope.jpg'}': file not found." in err

    code, out, _ = _cli(capsys, "evaluate", run_dir, tiny_dataset)
    report = json.loads(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert code == 0 and report["split"] == "test" and report["images"] == metrics["count"] == 6  # the run's own held-out split
    assert report["test_accuracy"] == metrics["test_accuracy"]

    # The portable files were not made during training; asked for later, they are converted and checked then.
    assert not (run_dir / "model.onnx").exists()
    code, out, _ = _cli(capsys, "export", run_dir, "--format", "onnx", "--json")
    (check,) = json.loads(out)
    assert code == 0 and check["ok"] and (run_dir / "model.onnx").is_file(), check
    assert json.loads((run_dir / "run.json").read_text())["exports"]["onnx"]["ok"]


@pytest.mark.slow
def test_evaluate_on_new_data_and_unknown_classes(capsys, tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    run_dir = tmp_path / "run"
    assert _cli(capsys, "train", tiny_dataset, "--out", run_dir, "--epochs", "1", "--image-size", "32", "--cache-dir", tmp_path / "cache")[0] == 0
    fresh = make_class_folders(tmp_path / "fresh", {"circles": 1, "squares": 2})  # new data: too small to split, all of it is evaluated
    code, out, _ = _cli(capsys, "evaluate", run_dir, fresh)
    report = json.loads(out)
    assert code == 0 and report["split"] == "all" and report["images"] == 3 and report["count"] == 3

    other = make_class_folders(tmp_path / "other", {"circles": 3, "hexagons": 3})
    code, _, err = _cli(capsys, "evaluate", run_dir, other)
    assert code == 2
    assert err.strip() == (
        "error: The dataset has class 'hexagons' that the model does not know (it knows circles, squares, stripes). Evaluate on folders named like the model's classes."
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "{tmp}/missing", "--out", "{tmp}/run"], "error: Dataset folder '{tmp}/missing' does not exist. Check the path, or pass the folder that holds one sub-folder per class."),
        (["train", "{one_class}", "--out", "{tmp}/run"], "error: Found 1 class ('only') in '{one_class}' while at least 2 are required. Add a second sub-folder with images of another class."),
        (
            ["train", "{data}", "--out", "{tmp}/run", "--backbone", "resnet51"],
            "error: Unknown backbone 'resnet51'. Choose one of: densenet121, efficientnet_b0, efficientnet_v2_b0, inception_v3, mobilenet, mobilenet_0.75, mobilenet_v2, mobilenet_v2+mobilenet_0.75, resnet50, vgg16, xception (python -m tl_core backbones lists them).",
        ),
        (["train", "{data}", "--out", "{tmp}/run", "--strategy", "finetune"], "error: Unknown strategy 'finetune'. Choose one of: feature_extraction, fine_tune, full_fine_tune, from_scratch, auto."),
        (["train", "{data}", "--out", "{tmp}/run", "--epochs", "0"], "error: epochs is 0 while it must be between 1 and 10000. Use e.g. 10."),
        (
            ["train", "{data}", "--out", "{tmp}/run", "--freeze", "10"],
            "error: freeze_layers is set (10) but strategy is 'feature_extraction'; freezing only applies to fine_tune. Use --strategy fine_tune, or drop --freeze.",
        ),
        (
            ["train", "{data}", "--out", "{tmp}/run", "--weights", "{tmp}/no_such.h5"],
            "error: Weights file '{tmp}/no_such.h5' does not exist. Pass 'imagenet', 'none', or the path of a .h5 / .weights.h5 file saved from the same backbone without its top.",
        ),
        (["train", "{data}", "--out", "{tmp}/run", "--image-size", "40", "--backbone", "xception"], "error: image_size is 40 but Xception needs at least 71 pixels. Use --image-size 96 or more."),
        (["predict", "{tmp}/no_run", "x.jpg"], "error: Run folder '{tmp}/no_run' does not exist. Pass the --out folder of a finished 'python -m tl_core train' run."),
    ],
    ids=["missing-data", "one-class", "unknown-backbone", "unknown-strategy", "zero-epochs", "freeze-without-fine-tune", "missing-weights-file", "image-too-small", "missing-run"],
)
def test_user_errors_print_one_line_naming_the_problem_and_fix(capsys, tmp_path: Path, tiny_dataset: Path, arguments: list[str], message: str) -> None:
    one_class = make_class_folders(tmp_path / "one_class", {"only": 3})
    values = {"tmp": tmp_path, "data": tiny_dataset, "one_class": one_class.resolve()}
    code, _, err = _cli(capsys, *[argument.format(**values) for argument in arguments])
    assert code == 2
    assert err.strip() == message.format(**values)


@pytest.mark.slow
def test_offline_imagenet_weights_error_names_the_file_and_folder(capsys, tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    # EfficientNetB0 has no offline copy here, so Keras tries to download it; a proxy on a closed local
    # port makes that attempt fail at once, as it does on an offline machine, without touching the network.
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    code, _, err = _cli(capsys, "train", tiny_dataset, "--out", tmp_path / "run", "--backbone", "efficientnet_b0", "--image-size", "32", "--cache-dir", tmp_path / "cache")
    folder = Path(os.environ["KERAS_HOME"]) / "models"
    assert code == 2
    assert err.strip() == (
        "error: The ImageNet weights for EfficientNetB0 are not on this computer and could not be downloaded (no network?). "
        f"Missing: 'efficientnetb0_notop.h5'. Put a copy in '{folder}' ($KERAS_HOME/models/, default ~/.keras/models/) and try again. "
        "Or, on the command line: --weights PATH trains from a weights file of your own, --weights none from random weights."
    )
    assert not (tmp_path / "run" / "model.h5").exists()


@pytest.mark.slow
def test_user_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tl_core", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"error: Dataset folder '{tmp_path / 'missing'}' does not exist. Check the path, or pass the folder that holds one sub-folder per class."
    ]
    assert "Traceback" not in completed.stderr + completed.stdout


def test_backbones_lists_the_table(capsys) -> None:
    code, out, _ = _cli(capsys, "backbones", "--json")
    names = [entry["name"] for entry in json.loads(out)]
    assert code == 0
    assert {"mobilenet_v2", "mobilenet", "efficientnet_b0", "resnet50", "vgg16", "inception_v3", "xception"} <= set(names)


def test_tensorflow_s_retracing_warnings_stay_off_the_terminal_and_its_other_warnings_do_not(caplog) -> None:
    import logging

    from tl_core.cli import _quiet_tensorflow

    _quiet_tensorflow()
    _quiet_tensorflow()  # every command calls it: the filter is not stacked
    logger = logging.getLogger("tensorflow")
    assert len([item for item in logger.filters if getattr(item, "__name__", "") == "_not_retracing"]) == 1
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        logger.warning("5 out of the last 13 calls to <function f> triggered tf.function retracing. Tracing is expensive ...")
        logger.warning("Something a user should see")
    assert [record.getMessage() for record in caplog.records] == ["Something a user should see"]
