"""Speed benchmark: our pipeline against the articles' recipe, as ratios measured in one run.

    python -m tl_core.bench                 # 3,000 JPEGs of 500x375 built from ../shared/datasets/ants_bees
    python -m tl_core.bench --images 200    # a quick look
    python -m tl_core.bench --smoke         # a few images, every measurement, seconds (used by the test suite)

Every number comes from the same process on the same data, and each target
is a ratio to a baseline measured right there, never an absolute time:

- forward limit: MobileNetV2's forward pass on decoded, resized uint8 tensors
  through a compiled ``tf.function`` at batch 64: the ceiling for feature extraction.
- naive baseline: ``keras.utils.image_dataset_from_directory`` + ``model.predict``
  + a head trained and evaluated with ``fit`` (the recipe of the articles), end to end.
- ours, first run: ``tl_core.training.train`` with feature extraction and empty caches.
- ours, second run: another head configuration on the same data ("train again").
- warm image cache: features of already decoded images (another backbone or fine-tuning epochs).
- head on cached features: 20 epochs on the cached features.
- fine-tuning: steps per second with augmentation against ``model.fit`` of the same model, with the
  same augmentation as its first layer, on in-memory tensors (and, for reference, without augmentation).
- peak resident memory of the process.

What was measured while profiling (2 CPU cores, MobileNetV2 at 224 px): decoding a
500x375 JPEG and resizing it takes about 4 ms on one core, so decoding in two threads
runs about four times faster than the forward pass (about 125 images/s); the forward
pass dominates. Calling the model per batch through one compiled ``tf.function`` with a
fixed input signature avoids ``model.predict``'s per-call set-up and retracing; the
decoded-image cache removes decoding from every later epoch and run; the feature cache
removes the backbone from every later head.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ants_bees"


def build_dataset(source: Path, target: Path, images: int, size: tuple[int, int] = (500, 375)) -> Path:
    """Writes ``images`` JPEGs of ``size`` in two classes (train/ and val/), cycling over the source photos."""
    from PIL import Image

    sources = {name: sorted((source / "train" / name).glob("*.jpg")) + sorted((source / "val" / name).glob("*.jpg")) for name in ("ants", "bees")}
    per_class = images // 2
    for name, files in sources.items():
        for index in range(per_class):
            split = "val" if index % 5 == 0 else "train"
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            with Image.open(files[index % len(files)]) as photo:
                picture = photo.convert("RGB").resize(size)
                if index >= len(files):  # a different picture each time round: flip and shift the colours a little
                    picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if (index // len(files)) % 2 else picture
                picture.save(folder / f"{name}_{index:05d}.jpg", quality=90)
    return target


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_limit(pixels, batch_size: int = 64) -> float:
    """Images per second of the backbone alone on decoded uint8 tensors (compiled, warmed up)."""
    import tensorflow as tf

    from tl_core.backbones import get_backbone
    from tl_core.models import build_backbone, build_classifier, build_head

    spec = get_backbone("mobilenet_v2")
    _, feature_model = build_classifier(spec, build_backbone(spec, "imagenet"), build_head(spec.feature_dim, 2), pixels.shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, *pixels.shape[1:]], tf.uint8)])
    def forward(batch):
        return feature_model(tf.cast(batch, tf.float32), training=False)

    batches = [tf.constant(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
    forward(batches[0])  # trace and warm up
    started = time.perf_counter()
    for batch in batches:
        forward(batch).numpy()
    return len(pixels) / (time.perf_counter() - started)


def naive_baseline(data: Path, image_size: int, epochs: int) -> dict:
    """The articles' recipe, end to end: directory loader, model.predict for features, then fit and evaluate a head."""
    import keras

    started = time.perf_counter()
    loader = {"image_size": (image_size, image_size), "batch_size": 32, "label_mode": "int", "shuffle": False}
    train = keras.utils.image_dataset_from_directory(data / "train", **loader, verbose=False)
    val = keras.utils.image_dataset_from_directory(data / "val", **loader, verbose=False)
    base = keras.applications.MobileNetV2(include_top=False, weights="imagenet", input_shape=(image_size, image_size, 3), pooling="avg")
    preprocess = keras.applications.mobilenet_v2.preprocess_input
    extraction_started = time.perf_counter()
    train_features = base.predict(train.map(lambda images, labels: preprocess(images)), verbose=0)
    val_features = base.predict(val.map(lambda images, labels: preprocess(images)), verbose=0)
    extraction = time.perf_counter() - extraction_started
    import numpy as np

    train_labels = np.concatenate([labels.numpy() for _, labels in train])
    val_labels = np.concatenate([labels.numpy() for _, labels in val])
    head = keras.Sequential([keras.Input((train_features.shape[1],)), keras.layers.Dropout(0.2), keras.layers.Dense(2, activation="softmax")])
    head.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(train_features, train_labels, epochs=epochs, batch_size=32, validation_data=(val_features, val_labels), verbose=0)
    accuracy = head.evaluate(val_features, val_labels, verbose=0)[1]
    images = len(train_labels) + len(val_labels)
    return {"seconds": time.perf_counter() - started, "extraction_images_per_second": images / extraction, "accuracy": float(accuracy)}


def run_ours(data: Path, out: Path, cache: Path, image_size: int, epochs: int, **options) -> dict:
    from tl_core.config import TrainConfig
    from tl_core.training import train

    config = TrainConfig(data_dir=str(data), out_dir=str(out), image_size=image_size, epochs=epochs, cache_dir=str(cache), early_stopping_patience=0, **options)
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "phases": result.summary["seconds"], "accuracy": result.evaluation.accuracy, "cache": result.summary["cache"]}


def warm_cache_extraction(data: Path, cache: Path, image_size: int) -> float:
    """Images per second of feature extraction when the decoded images are cached but the features are not."""
    from tl_core.backbones import get_backbone
    from tl_core.cache import decode_images
    from tl_core.config import TrainConfig
    from tl_core.data import scan_dataset
    from tl_core.events import StopRequest
    from tl_core.models import build_backbone, build_classifier, build_head
    from tl_core.training import _Run

    dataset = scan_dataset(data)
    decoded = decode_images(dataset.records, image_size, cache_dir=cache)
    assert decoded.from_cache, "the first run should have cached the decoded images"
    spec = get_backbone("mobilenet_v2")
    _, feature_model = build_classifier(spec, build_backbone(spec, "imagenet"), build_head(spec.feature_dim, 2), image_size)
    run = _Run(TrainConfig(data_dir=str(data), out_dir=""), lambda event: None, StopRequest())
    import numpy as np

    rows = np.arange(decoded.pixels.shape[0])
    run._forward(feature_model, decoded.pixels[:64], rows[:64], "features", None)  # trace and warm up
    started = time.perf_counter()
    run._forward(feature_model, decoded.pixels, rows, "features", None)
    return len(rows) / (time.perf_counter() - started)


def head_on_cached_features(count: int, epochs: int = 20) -> float:
    """Seconds to train the default head for ``epochs`` on ``count`` cached 1280-long feature vectors (training's own loop)."""
    import numpy as np

    from tl_core.models import build_head
    from tl_core.training import HeadTrainer

    rng = np.random.default_rng(0)
    features = rng.normal(size=(count, 1280)).astype("float32")
    labels = rng.integers(0, 2, count)
    train, validation = int(count * 0.8), slice(int(count * 0.8), None)
    trainer = HeadTrainer(build_head(1280, 2), 1e-3, 32)
    started = time.perf_counter()
    trainer.fit(features[:train], labels[:train], (features[validation], labels[validation]), epochs)
    return time.perf_counter() - started


def fine_tune_steps(pixels, labels, image_size: int, steps: int = 20) -> dict:
    """Steps per second of fine-tuning fed by our pipeline (augmented) vs plain fit on in-memory tensors."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tl_core.backbones import get_backbone
    from tl_core.config import AugmentConfig
    from tl_core.models import build_augmenter, build_backbone, build_classifier, build_head, freeze_layers
    from tl_core.training import _pixel_batches

    spec = get_backbone("mobilenet_v2")
    backbone = build_backbone(spec, "imagenet")
    classifier, _ = build_classifier(spec, backbone, build_head(spec.feature_dim, 2), image_size)
    freeze_layers(backbone, 100)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    batch_size = 32
    count = min(len(pixels), steps * batch_size)
    rows = np.arange(count)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    ours_data = _pixel_batches(pixels, rows, labels[:count], batch_size, shuffle_seed=0, augmenter=build_augmenter(AugmentConfig(), 0))
    timer = Timer()
    classifier.fit(ours_data, epochs=2, verbose=0, callbacks=[timer])  # the second epoch is timed: no tracing
    ours = (count / batch_size) / timer.seconds
    # The baseline does the same work (the same augmentation, as the model's first layer) on tensors already in
    # memory, so the ratio shows what our input pipeline costs: below 1 means it starves training.
    inputs = keras.Input(classifier.input_shape[1:])
    augmented_model = keras.Model(inputs, classifier(build_augmenter(AugmentConfig(), 0)(inputs, training=True)))
    augmented_model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    plain = tf.data.Dataset.from_tensor_slices((tf.cast(pixels[:count], tf.float32), labels[:count])).batch(batch_size).cache()
    timer = Timer()
    augmented_model.fit(plain, epochs=2, verbose=0, callbacks=[timer])
    baseline = (count / batch_size) / timer.seconds
    timer = Timer()
    classifier.fit(plain, epochs=2, verbose=0, callbacks=[timer])  # for reference: what augmentation itself costs
    without_augmentation = (count / batch_size) / timer.seconds
    return {"ours_steps_per_second": ours, "plain_steps_per_second": baseline, "no_augmentation_steps_per_second": without_augmentation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.bench", description="Speed benchmark (ratios measured in one run).")
    parser.add_argument("--images", type=int, default=3000, help="JPEGs to build (default 3000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10, help="head epochs in the end-to-end runs (default 10)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="photos to build the dataset from (default ../shared/datasets/ants_bees)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every measurement (seconds, for tests)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if arguments.smoke:
        arguments.images, arguments.image_size, arguments.epochs = 40, 64, 2

    import numpy as np
    import tensorflow as tf

    work = Path(tempfile.mkdtemp(prefix="tl_core_bench_"))
    try:
        data = build_dataset(arguments.source, work / "data", arguments.images)
        facts = {
            "cpu_count": os.cpu_count(),
            "gpu": [device.name for device in tf.config.list_physical_devices("GPU")] or "none",
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
            "images": arguments.images,
            "image_size": arguments.image_size,
        }
        naive = naive_baseline(data, arguments.image_size, arguments.epochs)
        first = run_ours(data, work / "first", work / "cache", arguments.image_size, arguments.epochs)
        second = run_ours(data, work / "second", work / "cache", arguments.image_size, arguments.epochs, head_units=128, learning_rate=5e-4)
        warm = warm_cache_extraction(data, work / "cache", arguments.image_size)

        from tl_core.cache import decode_images
        from tl_core.data import scan_dataset

        dataset = scan_dataset(data)
        decoded = decode_images(dataset.records, arguments.image_size, cache_dir=work / "cache")
        pixels = np.asarray(decoded.pixels)
        labels = np.array([record.label for record in dataset.records])
        limit = forward_limit(pixels)
        head_seconds = head_on_cached_features(3000)
        extraction_3000 = 3000 / limit
        steps = fine_tune_steps(pixels, labels, arguments.image_size, steps=4 if arguments.smoke else 20)
        first_extraction = first["phases"].get("decode", 0) + first["phases"].get("features", 0)
        results = {
            "facts": facts,
            "forward_limit_images_per_second": limit,
            "naive": naive,
            "first_run": first,
            "second_run": second,
            "ratios": {
                "first_run_extraction_vs_forward_limit": (arguments.images / first_extraction) / limit if first_extraction else None,
                "naive_end_to_end_over_first_run": naive["seconds"] / first["seconds"],
                "naive_end_to_end_over_second_run": naive["seconds"] / second["seconds"],
                "warm_image_cache_vs_forward_limit": warm / limit,
                "extraction_3000_over_head_20_epochs": extraction_3000 / head_seconds,
                "fine_tune_steps_vs_plain_fit": steps["ours_steps_per_second"] / steps["plain_steps_per_second"],
            },
            "head_20_epochs_3000_seconds": head_seconds,
            "fine_tune": steps,
            "peak_memory_mb": peak_memory_mb(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_table(results))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def format_table(results: dict) -> str:
    """The results as a Markdown table, the way README.md shows them."""
    facts, ratios = results["facts"], results["ratios"]
    first, second, naive = results["first_run"], results["second_run"], results["naive"]
    extraction_rate = facts["images"] / max(first["phases"].get("decode", 0) + first["phases"].get("features", 0), 1e-9)
    lines = [
        f"Machine: {facts['cpu_count']} CPU cores, GPU: {facts['gpu']}, TensorFlow {facts['tensorflow']}, Python {facts['python']}; "
        f"{facts['images']} JPEGs of 500x375, MobileNetV2 at {facts['image_size']} px.",
        "",
        "| measurement | ours | baseline | ratio | target |",
        "|---|---|---|---|---|",
        f"| feature extraction, first run (decode + resize + forward) | {extraction_rate:.0f} img/s | forward limit {results['forward_limit_images_per_second']:.0f} img/s | {ratios['first_run_extraction_vs_forward_limit']:.2f}x | >= 0.8x |",
        f"| first run end to end | {first['seconds']:.1f} s | naive {naive['seconds']:.1f} s | {ratios['naive_end_to_end_over_first_run']:.2f}x faster | >= 1x |",
        f"| second run, other head (\"train again\") | {second['seconds']:.1f} s | naive {naive['seconds']:.1f} s | {ratios['naive_end_to_end_over_second_run']:.1f}x faster | >= 4x |",
        f"| extraction with decoded images cached | {ratios['warm_image_cache_vs_forward_limit'] * results['forward_limit_images_per_second']:.0f} img/s | forward limit | {ratios['warm_image_cache_vs_forward_limit']:.2f}x | >= 0.9x |",
        f"| head on cached features, 3,000 x 20 epochs | {results['head_20_epochs_3000_seconds']:.2f} s | extracting 3,000 again {3000 / results['forward_limit_images_per_second']:.1f} s | {ratios['extraction_3000_over_head_20_epochs']:.0f}x faster | < 3 s, >= 20x |",
        f"| fine-tuning, augmented | {results['fine_tune']['ours_steps_per_second']:.2f} steps/s | plain fit from memory, same augmentation {results['fine_tune']['plain_steps_per_second']:.2f} steps/s | {ratios['fine_tune_steps_vs_plain_fit']:.2f}x | >= 0.9x |",
        f"| (reference) plain fit without augmentation | {results['fine_tune']['no_augmentation_steps_per_second']:.2f} steps/s | | | |",
        f"| peak resident memory | {results['peak_memory_mb']:.0f} MB | | | < 4 GB at 10,000 images |",
        "",
        f"Accuracy on val: ours {first['accuracy']:.3f}, naive {naive['accuracy']:.3f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
