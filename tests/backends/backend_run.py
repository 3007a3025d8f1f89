"""Trains and explains with the engine on one Keras backend, in a process of its own; prints a JSON report.

    KERAS_BACKEND=jax python tests/backends/backend_run.py WORK_FOLDER [--no-tensorflow]

Run by tests/backends/test_other_backends.py. With ``--no-tensorflow`` the process
behaves as if TensorFlow were not installed (an import of it fails, and the engine
finds no such backend), as on a machine with only JAX or PyTorch.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path

BLOCKED = ("tensorflow", "tf2onnx", "tf_keras", "tensorboard")


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """Answers every import of TensorFlow (and what needs it) as a module that is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None


if "--no-tensorflow" in sys.argv:
    sys.meta_path.insert(0, NoTensorFlow())

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from conftest import make_class_folders  # noqa: E402  (also points KERAS_HOME at the offline ImageNet weights)


def main() -> None:
    work = Path(sys.argv[1])
    from tl_core.backend import active_backend
    from tl_core.config import TrainConfig
    from tl_core.data.images import load_image
    from tl_core.data.scan import scan_dataset
    from tl_core.insight.explain import explain_file
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import predict_arrays
    from tl_core.training.run import train

    data = make_class_folders(work / "data", {"circles": 10, "squares": 10, "stripes": 10}, size=40)
    report = {"backend": active_backend(), "tensorflow_imported": "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None}
    common = {"data_dir": str(data), "image_size": 32, "batch_size": 8, "cache_dir": str(work / "cache")}
    runs = {
        "feature_extraction": TrainConfig(out_dir=str(work / "fe"), strategy="feature_extraction", epochs=3, export_formats=("onnx",), **common),
        "fine_tune": TrainConfig(out_dir=str(work / "ft"), strategy="fine_tune", epochs=1, warmup_epochs=1, **common),
    }
    images = [record.path for record in scan_dataset(data).records[:6]]
    for name, config in runs.items():
        result = train(config)
        run = load_run(config.out_dir)
        pixels = np.stack([load_image(path, 32) for path in images])
        explanation, _ = explain_file(run, images[0])
        report[name] = {
            "status": result.status, "epochs": len(result.history), "accuracy": result.evaluation.accuracy, "test_time_flip": result.summary.test_time_flip,
            "device": result.summary.device, "versions": result.summary.versions, "exports": result.summary.exports,
            "probabilities": predict_arrays(run, pixels).tolist(), "run_dir": config.out_dir,
            "map": {"shape": list(explanation.heatmap.shape), "peak": float(explanation.heatmap.max()), "finite": bool(np.isfinite(explanation.heatmap).all())},
        }
    from tl_core.advice.similarity import measure_similarity

    measurement, layers = measure_similarity(scan_dataset(data), sample_size=30, cache_dir=str(work / "cache"))
    report["similarity"] = {"score": measurement.similarity_score, "probe": measurement.probe_accuracy, "shift_layers": len(measurement.shift_profile), "layers": len(layers)}
    report["images"] = images
    print(json.dumps(report))


if __name__ == "__main__":
    main()
