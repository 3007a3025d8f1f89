"""The GPU check: one command that says what this machine's GPU gives the engine, and writes a JSON report.

    python -m benchmarks.gpu --backend torch --report gpu.json     # on a GPU machine, a few minutes
    python -m benchmarks.gpu --smoke                               # a tiny run of every step (the test suite's)

It needs Keras, one backend (TensorFlow, JAX or PyTorch) and the project's pure-Python
dependencies (docs/gpu.md lists the wheels to bring to an offline machine), and:

1. names the device, the backend and the precision a run uses;
2. extracts MobileNetV2 features at 224 px from real photos (``--photos``, default the
   shared ants/bees set) and from generated JPEGs (``--images``, default 3,000), in
   images per second from the files (decoding included) and from the decoded-image cache;
3. trains a head on the cached features;
4. fine-tunes with augmentation for a few hundred steps (images per second);
5. trains the default recipe on the photos and reports its held-out accuracy;
6. reads the peak GPU memory, and reloads the saved model files in float32.

Every figure is measured here, in one process; nothing is a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ants_bees"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description="What this machine's GPU gives the engine (a JSON report).")
    parser.add_argument("--backend", default=None, choices=("auto", "tensorflow", "jax", "torch"), help="the Keras backend (default: $TL_CORE_BACKEND, else auto)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of labelled photos (default ../shared/datasets/ants_bees)")
    parser.add_argument("--images", type=int, default=3000, help="generated JPEGs to extract features from (default 3000)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps with augmentation (default 300)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--report", type=Path, default=None, help="where to write the JSON report (default: print only)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every step in a minute or two on a CPU")
    arguments = parser.parse_args(argv)
    if arguments.smoke:
        arguments.images, arguments.steps, arguments.image_size = 64, 4, 64
    return arguments


def generated_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` different 320x240 JPEGs in two classes (coloured noise with a class-dependent stripe)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % 2
        pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        pixels[:, :, label] = np.clip(pixels[:, :, label].astype(int) + 80, 0, 255)
        target = folder / f"class_{label}" / f"{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, quality=85)
    return folder


def extraction_speed(data: Path, size: int, cache: Path) -> dict:
    """Images per second of feature extraction from the files (decoding included), then from the decoded-image cache."""
    from tl_core.data.decoded import decode_images
    from tl_core.data.scan import scan_dataset
    from tl_core.features import compiled_forward, forward_batches
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_feature_model

    records = scan_dataset(data).records
    spec = get_backbone("mobilenet_v2")
    forward = compiled_forward(build_feature_model(spec, build_backbone(spec, "imagenet"), size), size)
    forward(decode_images(records[:64], size, cache_dir=cache / "warm").pixels)  # compile once, outside the clock
    started = time.perf_counter()
    decoded = decode_images(records, size, cache_dir=cache, workers=os.cpu_count())
    forward_batches(forward, decoded.pixels)
    from_files = len(decoded.pixels) / (time.perf_counter() - started)
    started = time.perf_counter()
    forward_batches(forward, decode_images(records, size, cache_dir=cache).pixels)
    images = len(decoded.pixels)  # the readable ones: what was timed
    return {"images": images, "from_files_images_per_second": round(from_files, 1), "from_cache_images_per_second": round(images / (time.perf_counter() - started), 1)}


def train_and_time(data: Path, out: Path, cache: Path, size: int, **settings) -> dict:
    """One engine run, as the command line makes it; its seconds per phase and its held-out accuracy."""
    from tl_core.config import TrainConfig
    from tl_core.training.run import train

    started = time.perf_counter()
    result = train(TrainConfig(data_dir=str(data), out_dir=str(out), image_size=size, cache_dir=str(cache), export_formats=(), **settings))
    return {
        "seconds": round(time.perf_counter() - started, 1), "phases": result.summary.seconds, "accuracy": result.evaluation.accuracy,
        "epochs": len(result.history), "train_images": sum(result.summary.data["counts"].get("train", {}).values()),
    }


def peak_gpu_memory_mb(backend: str) -> float | None:
    """The most GPU memory the process has held, where the backend says so."""
    try:
        if backend == "torch":
            import torch

            return round(torch.cuda.max_memory_allocated() / 1e6, 1) if torch.cuda.is_available() else None
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return round(stats["peak_bytes_in_use"] / 1e6, 1) if "peak_bytes_in_use" in stats else None
        import tensorflow as tf

        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e6, 1) if tf.config.list_physical_devices("GPU") else None
    except Exception:  # noqa: BLE001 - a figure the backend cannot give is reported as missing
        return None


def reloads_in_float32(run_dir: Path) -> dict:
    """Whether the saved files load back with float32 weights and give the same answers."""
    import keras
    import numpy as np

    models = {name: keras.models.load_model(run_dir / name, compile=False) for name in ("model.keras", "model.h5")}
    size = models["model.keras"].input_shape[1]
    images = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
    answers = {name: np.asarray(model.predict(images, verbose=0)) for name, model in models.items()}
    return {
        "dtypes": sorted({str(weight.dtype) for model in models.values() for weight in model.weights}),
        "largest_difference": float(np.max(np.abs(answers["model.keras"] - answers["model.h5"]))),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    from tl_core.backend import select_backend

    choice = select_backend(arguments.backend)
    from tl_core.device import detect_device

    device = detect_device(choice.name)
    report = {"backend": choice.name, "why": choice.reason, "device": device.to_dict(), "describe": device.describe()}
    work = Path(tempfile.mkdtemp(prefix="tl_core_gpu_check_"))
    size = arguments.image_size
    try:
        generated = generated_photos(work / "generated", arguments.images)
        report["features_generated"] = extraction_speed(generated, size, work / "cache_generated")
        if arguments.photos.is_dir():
            report["features_photos"] = extraction_speed(arguments.photos, size, work / "cache_photos")
            report["short_run_on_photos"] = train_and_time(arguments.photos, work / "photos_run", work / "cache_photos", size)
        report["head"] = train_and_time(generated, work / "head_run", work / "cache_generated", size, epochs=50, early_stopping_patience=0)
        train_images = report["head"]["train_images"]
        epochs = max(1, round(arguments.steps * 32 / train_images))
        tuned = train_and_time(generated, work / "tune_run", work / "cache_generated", size, strategy="fine_tune", epochs=epochs, warmup_epochs=1, early_stopping_patience=0)
        tuned["images_per_second"] = round(epochs * train_images / max(tuned["phases"].get("fine_tune", 0.0), 1e-9), 1)
        report["fine_tune"] = tuned
        report["model_files"] = reloads_in_float32(work / "tune_run")
        report["peak_gpu_memory_mb"] = peak_gpu_memory_mb(choice.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if arguments.report:
        arguments.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
