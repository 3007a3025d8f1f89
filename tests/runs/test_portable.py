"""TFLite and ONNX files: written, checked against the Keras model, runnable without tl_core, never half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tl_core.config import FORMATS_VARIABLE, TrainConfig
from tl_core.errors import ConfigError
from tl_core.runs import portable
from tl_core.runs.portable import FORMATS, export_portable, reexport

from conftest import REPO, make_class_folders


def tiny_model(size: int = 24):
    """A small classifier with the same contract as the run's model: RGB 0-255 in, probabilities out."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    # Fixed statistics, as EfficientNet's preprocessing has: ONNX conversion once left them as extra graph inputs.
    x = keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.05, 0.06, 0.07])(x)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, activation="relu")(x))
    return keras.Model(inputs, outputs)


def pixels(count: int = 12, size: int = 24, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def test_default_formats_follow_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(FORMATS_VARIABLE, raising=False)
    assert TrainConfig(data_dir="d", out_dir="o").validated().export_formats == ()  # opt-in: none unless asked for
    monkeypatch.setenv(FORMATS_VARIABLE, "onnx,int8")
    assert TrainConfig(data_dir="d", out_dir="o").validated().export_formats == ("onnx", "int8")
    assert TrainConfig(data_dir="d", out_dir="o", export_formats=()).validated().export_formats == ()


@pytest.mark.slow
def test_each_format_is_written_checked_and_runs_without_tl_core(tmp_path: Path) -> None:
    model = tiny_model()
    images = pixels()
    checks = export_portable(model, tmp_path, ["tflite", "int8", "onnx"], images, "test images")

    assert [check.format for check in checks] == ["tflite", "int8", "onnx"]
    assert all(check.ok for check in checks), [check.message for check in checks]
    for check in checks:
        assert (tmp_path / check.file).stat().st_size == check.size_bytes > 0
        assert check.images == len(images) and check.top1_agreement == 1.0
    assert checks[0].max_difference <= portable.FLOAT_TOLERANCE and checks[2].max_difference <= portable.FLOAT_TOLERANCE
    assert "probabilities within" in checks[0].message and "on 12 test images" in checks[0].message
    assert "same top class as the Keras model on 100% of 12 test images" in checks[1].message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.tflite", "model_int8.tflite"]  # no partial files

    # A fresh Python that cannot import tl_core loads each file with its own runtime and gets the Keras model's answers.
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", model.predict(images, verbose=0))
    script = textwrap.dedent("""
        import json, numpy as np, onnxruntime
        from ai_edge_litert.interpreter import Interpreter
        try:
            import tl_core
            raise SystemExit("tl_core is importable")
        except ImportError:
            pass
        images, expected = np.load("images.npy"), np.load("expected.npy")
        session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
        assert [value.name for value in session.get_inputs()] == ["image"] and [value.name for value in session.get_outputs()] == ["probabilities"]
        onnx = session.run(["probabilities"], {"image": images})[0]
        def lite(path):
            interpreter = Interpreter(model_path=path)
            entry = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(entry["index"], images.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(entry["index"], images)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        print(json.dumps({
            "onnx": float(np.abs(onnx - expected).max()),
            "tflite": float(np.abs(lite("model.tflite") - expected).max()),
            "int8_top1": float((lite("model_int8.tflite").argmax(1) == expected.argmax(1)).mean()),
        }))
    """)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["onnx"] < 1e-4 and result["tflite"] < 1e-4 and result["int8_top1"] == 1.0


def test_a_converter_failure_leaves_no_file_and_says_why(tmp_path: Path, monkeypatch) -> None:
    def broken(model):
        raise ValueError("Unsupported op: MagicPool")

    monkeypatch.setattr(portable, "onnx_bytes", broken)
    checks = export_portable(tiny_model(), tmp_path, ["onnx", "tflite"], pixels(4))

    assert not checks[0].ok and checks[0].message == "tf2onnx could not convert this model: Unsupported op: MagicPool"
    assert checks[1].ok  # the other format is still written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.tflite"]


def test_a_file_that_disagrees_with_the_model_is_not_kept(tmp_path: Path, monkeypatch) -> None:
    real = portable.run_portable

    def off_by_a_little(path, images, name=None):
        return real(path, images, name) + 0.01

    monkeypatch.setattr(portable, "run_portable", off_by_a_little)
    (check,) = export_portable(tiny_model(), tmp_path, ["tflite"], pixels(4), "test images")

    assert not check.ok and check.message.startswith("Not kept: probabilities within 1.0e-02 of the Keras model's on 4 test images")
    assert check.size_bytes == 0 and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real (tiny) feature-extraction run with test-time flip, asked for the TFLite file only."""
    from tl_core.training.run import train

    from conftest import MOBILENET_V2_WEIGHTS, WEIGHTS

    if not (WEIGHTS / MOBILENET_V2_WEIGHTS).exists():
        pytest.skip(f"skipped: real ImageNet weights not found at {WEIGHTS} (../shared/weights is absent)")

    root = tmp_path_factory.mktemp("portable_run")
    data = make_class_folders(root / "data", {"red": 10, "blue": 10}, size=40)
    config = TrainConfig(
        data_dir=str(data), out_dir=str(root / "run"), image_size=32, epochs=2, cache_dir=str(root / "cache"), val_fraction=0.3, test_fraction=0.3,
        test_time_flip=True, export_formats=("tflite",),
    )
    result = train(config)
    assert result.status == "finished"
    return Path(result.run_dir)


@pytest.mark.slow
def test_a_training_run_writes_and_records_the_files_it_was_asked_for(trained_run: Path) -> None:
    summary = json.loads((trained_run / "run.json").read_text())

    assert summary["config"]["export_formats"] == ["tflite"]
    entry = summary["exports"]["tflite"]
    assert entry["ok"] and entry["file"] == "model.tflite" and entry["size_bytes"] == (trained_run / "model.tflite").stat().st_size
    assert entry["max_difference"] <= portable.FLOAT_TOLERANCE and "test images" in entry["message"]
    assert 0 < len(summary["export_check_images"]) <= portable.CHECK_IMAGES
    assert not (trained_run / "model.onnx").exists()


@pytest.mark.slow
def test_the_command_line_exports_an_existing_run(trained_run: Path) -> None:
    command = [sys.executable, "-m", "tl_core", "export", str(trained_run), "--format", "onnx", "int8", "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)

    assert completed.returncode == 0, completed.stderr[-2000:]
    checks = json.loads(completed.stdout)
    assert [check["format"] for check in checks] == ["onnx", "int8"] and all(check["ok"] for check in checks)
    assert "of the run's held-out images" in checks[0]["message"]
    summary = json.loads((trained_run / "run.json").read_text())
    assert set(summary["exports"]) == {"tflite", "onnx", "int8"}  # the training's check is kept beside the new ones
    assert (trained_run / FORMATS["onnx"]).is_file() and (trained_run / FORMATS["int8"]).is_file()


@pytest.mark.slow
def test_reexport_checks_on_random_images_when_the_held_out_ones_are_gone(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(trained_run, tmp_path / "moved"))
    summary = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**summary, "export_check_images": ["/nowhere/1.jpg"]}))
    (check,) = reexport(copy, ["tflite"])

    assert check.ok and "8 random images (the run's held-out images are no longer readable)" in check.message


def test_reexport_names_what_is_wrong(tmp_path: Path) -> None:
    from tl_core.errors import RunError

    with pytest.raises(ConfigError, match="Name at least one format"):
        reexport(tmp_path, ["none"])
    with pytest.raises(RunError, match="has no model.keras/model.h5"):
        reexport(tmp_path, ["onnx"])
