"""Speed benchmark: our pipeline against the articles' recipe, as ratios measured in one run.

    python -m benchmarks.speed                 # 3,000 JPEGs of 500x375 built from ../shared/datasets/ants_bees
    python -m benchmarks.speed --images 200    # a quick look
    python -m benchmarks.speed --smoke         # a few images, every measurement, seconds (used by the test suite)

Every number comes from the same process on the same data, and each target
is a ratio to a baseline measured right there, never an absolute time:

- forward limit: MobileNetV2's forward pass on decoded, resized uint8 tensors
  through a compiled ``tf.function`` at batch 64: the ceiling for feature extraction. Measured at the
  start and at the end of the run on the same 640 images; the higher of the two counts.
- naive baseline: ``keras.utils.image_dataset_from_directory`` + ``model.predict``
  + a head trained and evaluated with ``fit`` (the recipe of the articles), end to end.
- ours, first run: ``tl_core.training.train`` with feature extraction and empty caches.
- ours, second run: another head configuration on the same data ("train again").
- warm image cache: features of already decoded images (another backbone or fine-tuning epochs).
- head on cached features: 20 epochs on the cached features.
- fine-tuning: steps per second with augmentation in our input pipeline against plain ``model.fit``
  of the same model on in-memory tensors without augmentation (and, for reference, with the same
  augmentation as the model's first layer). The three take turns; each reports its median.
- advice: ``advise`` on the data with empty caches; the first epoch: when its point reaches the chart.
- peak resident memory: a first run on 10,000 images in a process of its own (``--memory-images``).

What was measured while profiling (2 CPU cores, MobileNetV2 at 224 px), and what changed:

- The forward pass dominates: about 90-125 images/s, against about 2.7 ms of one core to
  decode and resize a 500x375 JPEG (3.5 ms before EXIF orientation was applied in place
  instead of on a copy).
- First run: decoding all images and then running the backbone reached 0.75-0.84x the
  forward limit. Now the backbone runs on each batch of 64 as soon as it is decoded, while
  the threads decode ahead: 0.84-0.91x with one decoding thread per core (more threads
  only took turns away from the backbone: 0.81-0.88x with four).
- Warm image cache: the old path fed the backbone through a ``tf.data`` pipeline and traced
  a new ``tf.function`` on every call. Batches are now sliced straight from the cached
  array (copying 64 images takes milliseconds) into one function traced once per run.
- Fine-tuning: Keras' four geometric augmentation layers resample every image four times
  (about 120 ms per batch of 32); ``tl_core.models.augment.RandomAffine`` does all four in one
  resampling (about 35 ms), so augmentation in the input pipeline costs the training step
  little even when it shares the CPU with it.
- Head: a compiled loop runs 64 steps per call instead of ``fit``'s per-step overhead.
- Memory: a decoded-image cache that fits the budget is read into memory with ``np.load``;
  copying it out of a memory map held the mapped pages and the copy at once.
- The decoded-image cache removes decoding from every later epoch and run; the feature
  cache removes the backbone from every later head.
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
    """Writes ``images`` different JPEGs of ``size`` in two classes (train/ and val/), cycling over the source photos."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    sources = {name: sorted((source / "train" / name).glob("*.jpg")) + sorted((source / "val" / name).glob("*.jpg")) for name in ("ants", "bees")}
    per_class = images // 2

    def write(name: str, index: int) -> None:
        files = sources[name]
        folder = target / ("val" if index % 5 == 0 else "train") / name
        folder.mkdir(parents=True, exist_ok=True)
        lap = index // len(files)  # each time round the photos, another crop and every other time a mirror image,
        with Image.open(files[index % len(files)]) as photo:  # so no two files are the same picture
            picture = photo.convert("RGB")
            width, height = picture.size
            keep = 1.0 - 0.025 * (lap % 13)
            left, top = (width * (1 - keep)) * (lap % 3) / 2, (height * (1 - keep)) * ((lap // 3) % 3) / 2
            picture = picture.resize(size, box=(left, top, left + width * keep, top + height * keep))
            if lap % 2:
                picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            picture.save(folder / f"{name}_{index:05d}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda job: write(*job), [(name, index) for name in sources for index in range(per_class)]))
    return target


def peak_memory_mb() -> float:
    """This process's peak resident memory in MiB (2^20 bytes).

    Linux's ``VmHWM`` belongs to the process's own address space; ``ru_maxrss``
    would also count what a child inherited from its parent before ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kilobytes elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def _train_and_report_peak(argv: list[str]) -> int:
    """``python -m tl_core train ARGS``, then the process's peak memory on the last line (the memory run's child)."""
    from tl_core.cli import main

    code = main(["train", *argv])
    print(f"peak_memory_mb {peak_memory_mb():.1f}")
    return code


def forward_limit(pixels, batch_size: int = 64) -> float:
    """Images per second of the backbone alone on decoded uint8 tensors (compiled, warmed up)."""
    import tensorflow as tf

    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_classifier, build_head

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
    """``tl_core.training.train`` end to end, with the time at which the first epoch reached the chart.

    The run does the naive recipe's work: one pass of the backbone per image, no mirror images
    (the feature-extraction recipe's mirror images and test-time flip double the passes; their
    worth is measured in ``benchmarks.quality``, not here).
    """
    from tl_core.config import TrainConfig
    from tl_core.events import EpochEnded
    from tl_core.training.run import train

    settings = {"augment": False, "test_time_flip": False, **options}
    config = TrainConfig(data_dir=str(data), out_dir=str(out), image_size=image_size, epochs=epochs, cache_dir=str(cache), early_stopping_patience=0, export_formats=(), **settings)
    first_epoch = []

    def on_event(event) -> None:
        if isinstance(event, EpochEnded) and not first_epoch:
            first_epoch.append(time.perf_counter() - started)

    started = time.perf_counter()
    result = train(config, on_event=on_event)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "first_epoch_seconds": first_epoch[0],
        "phases": result.summary.seconds,
        "accuracy": result.evaluation.accuracy,
        "cache": result.summary.cache,
    }


def advice_seconds(data: Path, cache: Path) -> float:
    """Seconds for ``advise`` (the measured scenario and strategy) on the data, with empty caches."""
    from tl_core.advice.advise import advise

    started = time.perf_counter()
    advise(data, cache_dir=str(cache))
    return time.perf_counter() - started


def memory_run(source: Path, work: Path, images: int, image_size: int, memory_budget_mb: int | None) -> dict:
    """Peak resident memory of a first run (``python -m tl_core train``) on ``images`` JPEGs, in a process of its own.

    A separate process, so that the number is the run's own and not the benchmark's.
    Its working directory is the package's parent, so ``tl_core`` imports there as here.
    """
    import subprocess

    data = build_dataset(source, work / "memory_data", images)
    child = "import sys; from benchmarks.speed import _train_and_report_peak; sys.exit(_train_and_report_peak(sys.argv[1:]))"
    command = [sys.executable, "-c", child, str(data), "--out", str(work / "memory_run"), "--cache-dir", str(work / "memory_cache")]
    command += ["--image-size", str(image_size), "--epochs", "2"]
    if memory_budget_mb is not None:
        command += ["--memory-budget-mb", str(memory_budget_mb)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=Path(__file__).resolve().parents[1], check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the memory run failed: {completed.stderr[-2000:]}")
    from tl_core.runs.folder import read_summary

    notes = read_summary(work / "memory_run").notes
    held = next((note for note in notes if note.startswith("Decoded images")), "")
    return {
        "images": images,
        "peak_memory_mb": float(completed.stdout.strip().splitlines()[-1].split()[-1]),
        "seconds": time.perf_counter() - started,
        "images_held_in": "memory" if "held in memory" in held else "disk (memory-mapped)",
        "memory_budget_mb": memory_budget_mb,
    }


def warm_cache_extraction(data: Path, cache: Path, image_size: int) -> float:
    """Images per second of feature extraction when the decoded images are cached but the features are not."""
    from tl_core.data.decoded import decode_images
    from tl_core.data.scan import scan_dataset
    from tl_core.features import compiled_forward, forward_batches
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_feature_model

    dataset = scan_dataset(data)
    decoded = decode_images(dataset.records, image_size, cache_dir=cache)
    assert decoded.from_cache, "the first run should have cached the decoded images"
    spec = get_backbone("mobilenet_v2")
    forward = compiled_forward(build_feature_model(spec, build_backbone(spec, "imagenet"), image_size), image_size)
    forward_batches(forward, decoded.pixels[:64])  # trace and warm up
    started = time.perf_counter()
    forward_batches(forward, decoded.pixels)
    return decoded.pixels.shape[0] / (time.perf_counter() - started)


def head_on_cached_features(count: int, epochs: int = 20) -> float:
    """Seconds to train the default head for ``epochs`` on ``count`` cached 1280-long feature vectors (training's own loop)."""
    import numpy as np

    from tl_core.models.build import build_head
    from tl_core.training.loops import HeadTrainer

    rng = np.random.default_rng(0)
    features = rng.normal(size=(count, 1280)).astype("float32")
    labels = rng.integers(0, 2, count)
    train, validation = int(count * 0.8), slice(int(count * 0.8), None)
    trainer = HeadTrainer(build_head(1280, 2), 1e-3, 32)
    started = time.perf_counter()
    trainer.fit(features[:train], labels[:train], (features[validation], labels[validation]), epochs)
    return time.perf_counter() - started


def fine_tune_steps(pixels, labels, image_size: int, steps: int = 20, rounds: int = 3) -> dict:
    """Steps per second of fine-tuning fed by our pipeline (augmented) against plain ``fit`` on in-memory tensors.

    The three set-ups take turns, ``rounds`` times after a round that traces and warms
    up, and each reports its median: on a shared machine the speed drifts within
    minutes, and taking turns exposes all three to the same drift.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tl_core.config import AugmentConfig
    from tl_core.models.augment import build_augmenter
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_classifier, build_head, freeze_layers
    from tl_core.training.loops import image_batches

    spec = get_backbone("mobilenet_v2")
    backbone = build_backbone(spec, "imagenet")
    classifier, _ = build_classifier(spec, backbone, build_head(spec.feature_dim, 2), image_size)
    freeze_layers(backbone, 100)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    batch_size = 32
    count = min(len(pixels), steps * batch_size)
    batches = -(-count // batch_size)
    # The reference does the same augmentation as the model's first layer, on tensors already in memory.
    inputs = keras.Input(classifier.input_shape[1:])
    augmented_model = keras.Model(inputs, classifier(build_augmenter(AugmentConfig(), 0)(inputs, training=True)))
    augmented_model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    in_memory = tf.data.Dataset.from_tensor_slices((tf.cast(pixels[:count], tf.float32), labels[:count])).batch(batch_size).cache()
    setups = {
        "ours_steps_per_second": (classifier, image_batches(pixels, np.arange(count), labels[:count], batch_size, shuffle_seed=0, augmenter=build_augmenter(AugmentConfig(), 0))[0]),
        "plain_steps_per_second": (classifier, in_memory),
        "augmented_in_model_steps_per_second": (augmented_model, in_memory),
    }
    speeds: dict[str, list[float]] = {name: [] for name in setups}
    for round_number in range(rounds + 1):
        for name, (model, data) in setups.items():
            if round_number == 0:
                model.fit(data.take(2), epochs=1, verbose=0)  # trace and warm up
                continue
            started = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            speeds[name].append(batches / (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in speeds.items()}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description="Speed benchmark (ratios measured in one run).")
    parser.add_argument("--images", type=int, default=3000, help="JPEGs to build (default 3000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10, help="head epochs in the end-to-end runs (default 10)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="photos to build the dataset from (default ../shared/datasets/ants_bees)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every measurement (seconds, for tests)")
    parser.add_argument("--memory-images", type=int, default=10000, help="JPEGs of the separate peak-memory run (default 10000; 0 skips it)")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="memory budget of that run (default: training's own default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    arguments = parser.parse_args(argv)
    if arguments.smoke:
        arguments.images, arguments.image_size, arguments.epochs = 40, 64, 2
        arguments.memory_images = min(arguments.memory_images, 40)
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
        from tl_core.data.decoded import decode_images
        from tl_core.data.scan import scan_dataset

        # The forward limit is measured at the start and at the end on the same images (decoded into a cache
        # of their own, so our first run still starts cold); the higher one counts, against drift of the machine.
        sample = scan_dataset(data).records[: min(arguments.images, 640)]
        sample_pixels = np.asarray(decode_images(sample, arguments.image_size, cache_dir=work / "limit_cache").pixels)
        limits = [forward_limit(sample_pixels)]
        naive = naive_baseline(data, arguments.image_size, arguments.epochs)
        advice = advice_seconds(data, work / "advice_cache")
        first = run_ours(data, work / "first", work / "cache", arguments.image_size, arguments.epochs)
        second = run_ours(data, work / "second", work / "cache", arguments.image_size, arguments.epochs, head_units=128, learning_rate=5e-4)
        warm = warm_cache_extraction(data, work / "cache", arguments.image_size)

        dataset = scan_dataset(data)
        decoded = decode_images(dataset.records, arguments.image_size, cache_dir=work / "cache")
        pixels = np.asarray(decoded.pixels)
        labels = np.array([record.label for record in dataset.records])
        limits.append(forward_limit(sample_pixels))
        limit = max(limits)
        head_seconds = head_on_cached_features(3000)
        extraction_3000 = 3000 / limit
        steps = fine_tune_steps(pixels, labels, arguments.image_size, steps=4 if arguments.smoke else 20, rounds=1 if arguments.smoke else 3)
        first_extraction = first["phases"].get("decode", 0) + first["phases"].get("features", 0)
        results = {
            "facts": facts,
            "forward_limit_images_per_second": limit,
            "forward_limit_measurements": limits,
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
            "advice_seconds": advice,
            "peak_memory_mb": peak_memory_mb(),
        }
        if arguments.memory_images:
            results["memory_run"] = memory_run(arguments.source, work, arguments.memory_images, arguments.image_size, arguments.memory_budget_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_table(results))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def format_table(results: dict) -> str:
    """The results as a Markdown table, the way docs/benchmarks.md shows them."""
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
        f"| fine-tuning, augmented in our pipeline | {results['fine_tune']['ours_steps_per_second']:.2f} steps/s | plain fit from memory, no augmentation {results['fine_tune']['plain_steps_per_second']:.2f} steps/s | {ratios['fine_tune_steps_vs_plain_fit']:.2f}x | >= 0.9x |",
        f"| (reference) plain fit from memory, same augmentation inside the model | {results['fine_tune']['augmented_in_model_steps_per_second']:.2f} steps/s | | | |",
        f"| advice (`advise`: similarity measured on up to 500 images, empty caches) | {results['advice_seconds']:.1f} s | | | report |",
        f"| first epoch on the chart, first run / second run | {first['first_epoch_seconds']:.1f} s / {second['first_epoch_seconds']:.1f} s | | | report |",
    ]
    memory = results.get("memory_run")
    if memory:
        budget = f"budget {memory['memory_budget_mb']} MiB" if memory["memory_budget_mb"] is not None else "default budget"
        lines.append(
            f"| peak resident memory, first run on {memory['images']:,} images in its own process | {memory['peak_memory_mb']:,.0f} MiB | | "
            f"images held in {memory['images_held_in']}, {budget} | < 4 GB at 10,000 images |"
        )
    lines += ["", f"Accuracy on val: ours {first['accuracy']:.3f}, naive {naive['accuracy']:.3f}. Whole benchmark process peak: {results['peak_memory_mb']:,.0f} MiB."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
