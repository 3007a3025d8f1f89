"""The engine on Keras' JAX and PyTorch backends (CPU builds): it trains, explains and probes, and its files load in plain Keras on TensorFlow.

Each backend runs ``backend_run.py`` in a process of its own (Keras chooses its backend once per
process). The JAX run behaves as if TensorFlow were not installed: the engine must import and train
without it, and say which files it could not make and how to make them later. The PyTorch run has
TensorFlow beside it, so its ONNX file is made by a TensorFlow process from the saved model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tl_core.backend import installed_backends

from conftest import REPO

pytestmark = pytest.mark.slow  # trains two small models per backend in processes of their own
SCRIPT = Path(__file__).with_name("backend_run.py")


def run_on(backend: str, work: Path, *flags: str) -> dict:
    if backend not in installed_backends():
        pytest.skip(f"skipped: the {backend} backend is not installed here (.ci/run installs requirements-backends.txt)")
    environment = {**os.environ, "KERAS_BACKEND": backend, "TL_CORE_BACKEND": backend, "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, str(SCRIPT), str(work), *flags], env=environment, capture_output=True, text=True, timeout=1500)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def probabilities_in_tensorflow(report: dict, strategy: str, file: str) -> np.ndarray:
    """The saved model's probabilities for the report's images, in a fresh Python with Keras on TensorFlow and without tl_core."""
    script = textwrap.dedent(
        """
        import json, sys
        import keras, numpy as np
        from PIL import Image
        model = keras.models.load_model(sys.argv[1], compile=False)
        size = model.input_shape[1]
        images = np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), dtype="float32") for path in sys.argv[2:]])
        print(json.dumps(np.asarray(model.predict(images, verbose=0)).tolist()))
        """
    )
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TL_CORE_BACKEND")}
    environment["KERAS_BACKEND"] = "tensorflow"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(Path(report[strategy]["run_dir"]) / file), *report["images"]], env=environment, capture_output=True, text=True, timeout=300, cwd="/",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return np.asarray(json.loads(completed.stdout.strip().splitlines()[-1]))


def check_report(report: dict, backend: str) -> None:
    assert report["backend"] == backend
    for strategy in ("feature_extraction", "fine_tune"):
        outcome = report[strategy]
        assert outcome["status"] == "finished" and outcome["epochs"] >= 2, outcome
        assert outcome["device"]["backend"] == backend and outcome["versions"]["backend"] == backend
        assert outcome["test_time_flip"] is True  # the test-time flip is inside the saved model
        assert outcome["map"] == {"shape": [32, 32], "peak": 1.0, "finite": True}  # Grad-CAM through this backend's gradient
        for file in ("model.h5", "model.keras"):
            # Written under this backend, loaded in plain Keras on TensorFlow: the same probabilities.
            np.testing.assert_allclose(probabilities_in_tensorflow(report, strategy, file), outcome["probabilities"], atol=1e-4)
    similarity = report["similarity"]
    assert 0.0 <= similarity["score"] <= 1.0 and similarity["shift_layers"] == 52 and similarity["layers"] == 154


def test_jax_without_tensorflow(tmp_path: Path) -> None:
    report = run_on("jax", tmp_path, "--no-tensorflow")
    assert report["tensorflow_imported"] is False
    check_report(report, "jax")
    onnx = report["feature_extraction"]["exports"]["onnx"]
    assert not onnx["ok"] and onnx["message"].startswith("TensorFlow is not installed in this Python")
    assert f"python -m tl_core export {report['feature_extraction']['run_dir']} --format onnx" in onnx["message"]


def test_pytorch_with_the_files_converted_by_tensorflow(tmp_path: Path) -> None:
    report = run_on("torch", tmp_path)
    check_report(report, "torch")
    onnx = report["feature_extraction"]["exports"]["onnx"]
    assert onnx["ok"] and onnx["max_difference"] <= 1e-3, onnx  # converted from model.keras in a TensorFlow process, checked there
    assert (Path(report["feature_extraction"]["run_dir"]) / "model.onnx").is_file()
