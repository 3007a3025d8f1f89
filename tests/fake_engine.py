"""A stand-in engine for page tests: the real scan, table and scenario logic, canned training.

AppTest runs a page in a few seconds at most, so nothing here builds a Keras
model: the device, layer map, augmentation preview, training and prediction
are replaced with small deterministic answers in the shapes the real engine
returns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tl_core.config import TrainConfig
from tl_core.device import DeviceInfo
from tl_core.events import (
    EpochEnded,
    Notice,
    PhaseStarted,
    ProgressUpdated,
    TrainingFinished,
    TrainingStarted,
)
from tl_core.insight.metrics import evaluate_predictions
from tl_core.models.backbones import get_backbone
from tl_core.models.blocks import blocks_from_layer_names
from tl_core.runs.predict import Prediction
from tl_core.service.engine import Engine, LayerInfo, LayerMap
from tl_core.service.jobs import TrainingJob
from tl_core.service.sharing import Access

# Canned learning curves: validation loss turns up after epoch 3 while training loss keeps falling.
CANNED_HISTORY = [
    {"loss": 0.90, "accuracy": 0.55, "val_loss": 0.80, "val_accuracy": 0.60},
    {"loss": 0.60, "accuracy": 0.75, "val_loss": 0.55, "val_accuracy": 0.78},
    {"loss": 0.40, "accuracy": 0.86, "val_loss": 0.45, "val_accuracy": 0.84},
    {"loss": 0.30, "accuracy": 0.91, "val_loss": 0.50, "val_accuracy": 0.83},
    {"loss": 0.20, "accuracy": 0.95, "val_loss": 0.58, "val_accuracy": 0.82},
]


def canned_events(config: TrainConfig, class_names: list[str], epochs: int | None = None) -> list:
    """The events a short feature-extraction run emits, in order (without the final one)."""
    epochs = len(CANNED_HISTORY) if epochs is None else epochs
    events = [
        TrainingStarted(config={**config.to_dict(), "epochs": len(CANNED_HISTORY)}, device=FakeEngine.fake_device().to_dict(), class_names=class_names, counts={}),
        PhaseStarted("decode", "Reading and resizing 30 images to 32x32", total=30),
        ProgressUpdated("decode", 30, 30),
        PhaseStarted("features", "Computing bottleneck features of 30 images with the frozen MobileNetV2", total=30),
        ProgressUpdated("features", 30, 30),
        Notice("Augmentation is not applied: feature extraction trains on cached features."),
        PhaseStarted("head", "Training the new head on cached features", total=len(CANNED_HISTORY)),
    ]
    for number, metrics in enumerate(CANNED_HISTORY[:epochs], start=1):
        events.append(EpochEnded("head", number, len(CANNED_HISTORY), dict(metrics), 0.5))
    return events


def write_canned_run(run_dir: Path, class_names: list[str], paths: list[str] | None = None, data_dir: str = "") -> Path:
    """A run folder with real-looking reports and placeholder model files (pages only offer their bytes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    count = 4 * len(class_names)
    true_labels = np.arange(count) % len(class_names)
    probabilities = np.full((count, len(class_names)), 0.1 / max(len(class_names) - 1, 1))
    predicted = true_labels.copy()
    predicted[:2] = (true_labels[:2] + 1) % len(class_names)  # two mistakes
    probabilities[np.arange(count), predicted] = 0.9
    paths = paths or [f"/data/{class_names[label]}/img_{index}.png" for index, label in enumerate(true_labels)]
    evaluation = evaluate_predictions(true_labels, probabilities, class_names, paths[:count])
    history = [{"epoch": number, "phase": "head", "seconds": 0.5, **metrics} for number, metrics in enumerate(CANNED_HISTORY, start=1)]
    metrics = {**evaluation.to_dict(), "test_accuracy": evaluation.accuracy, "evaluated_split": "test", "history": history}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    summary = {
        "status": "finished", "strategy": "feature_extraction", "image_size": 32,
        "backbone": {"name": "mobilenet_v2", "display_name": "MobileNetV2"},
        "seconds": {"total": 2.5}, "history": history, "skipped": [], "best_epoch": 3,
        "data": {"root": data_dir, "class_names": class_names},
    }
    (run_dir / "run.json").write_text(json.dumps(summary))
    (run_dir / "labels.json").write_text(json.dumps(class_names))
    (run_dir / "model.h5").write_bytes(b"fake h5 bytes")
    (run_dir / "model.keras").write_bytes(b"fake keras bytes")
    return run_dir


class FakeEngine(Engine):
    """The real engine's cheap parts, with canned answers where TensorFlow would run."""

    def __init__(self, access: Access | None = None) -> None:
        super().__init__(access)
        self.started_configs: list[TrainConfig] = []
        self.previewed_middles: list[bool] = []  # each augmentation preview's centre_crop

    @staticmethod
    def fake_device() -> DeviceInfo:
        return DeviceInfo(kind="CPU", name="CPU", reason="this TensorFlow build has no GPU support (fake engine)", cpu_count=2)

    def device(self) -> DeviceInfo:
        return self.fake_device()

    def backend(self):
        from tl_core.backend import BackendChoice

        return BackendChoice("tensorflow", "fake engine")

    def layer_map(self, backbone: str) -> LayerMap:
        spec = get_backbone(backbone)
        names = ["input_layer", "Conv1", "bn_Conv1", "Conv1_relu"]
        for block in range(1, 6):
            names += [f"block_{block}_expand", f"block_{block}_expand_BN", f"block_{block}_project"]
        names += ["Conv_1", "Conv_1_bn", "out_relu"]
        layers = []
        for index, name in enumerate(names):
            is_batchnorm = "BN" in name or "bn" in name
            parameters = 0 if index == 0 else 1000 * index
            layers.append(LayerInfo(index, name, "BatchNormalization" if is_batchnorm else "Conv2D", parameters, is_batchnorm, parameters // 2 if is_batchnorm else parameters))
        return LayerMap(spec.name, layers, blocks_from_layer_names(get_backbone("mobilenet_v2"), names))

    def estimate(self, config: TrainConfig, dataset):
        from tl_core.training.estimate import Estimate

        # Proportional to the passes the recipe makes, so the quick variant is visibly faster.
        passes = config.epochs + (config.warmup_epochs or 0) * 0.01 + (2 if config.test_time_flip else 1)
        return Estimate(12.0 * passes, {"features": 6.0, "head": 6.0 * passes}, "fake engine: 100 images/s")

    def augment_preview(self, paths, image_size, augmentation, versions=4, seed=0, centre_crop=False) -> np.ndarray:
        self.previewed_middles.append(centre_crop)
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(len(paths), versions + 1, image_size, image_size, 3), dtype=np.uint8)

    def start_training(self, config: TrainConfig, workspace=None) -> TrainingJob:
        self.started_configs.append(config)

        def fake_train(config, on_event, stop):
            class_names = sorted(path.name for path in Path(config.data_dir).iterdir() if path.is_dir())
            for event in canned_events(config, class_names):
                on_event(event)
            write_canned_run(Path(config.out_dir), class_names, data_dir=config.data_dir)
            on_event(TrainingFinished(status="finished", run_dir=config.out_dir, test_accuracy=0.83, seconds=2.5))

        return TrainingJob(config, trainer=fake_train).start()

    def advise(self, dataset, backbone="mobilenet_v2", time_budget_minutes=10.0):
        self.advised = getattr(self, "advised", 0) + 1
        return canned_advice(dataset, "low")

    def compare(self, data_dir, strategies, out_root, epochs, image_size, per_class, freeze_layers, flip="horizontal", on_row=None, centre_crop=False):
        self.compared_with_centre_crop = centre_crop
        rows = canned_comparison(strategies)
        for row in rows:
            if on_row is not None:
                on_row(row)
        return rows

    def find_label_issues(self, dataset, backbone="mobilenet_v2", on_progress=None):
        """The real judgement (out-of-fold classifier, confident learning), on 8x8 pixel features instead of a backbone's."""
        from tl_core.data.images import load_image
        from tl_core.insight.label_issues import judge_labels, judged_splits

        splits = judged_splits(dataset, None)
        records = [record for record in dataset.records if record.split in splits]
        features = np.stack([load_image(record.path, 8).reshape(-1).astype(np.float32) for record in records])
        if on_progress:
            on_progress("features", len(records), len(records))
        judged = (lambda done, total: on_progress("judge", done, total)) if on_progress else None
        return judge_labels(dataset, records, features, splits, backbone="8x8 pixels (fake engine)", image_size=8, on_progress=judged)

    def load_run(self, run_dir: str):
        raise AssertionError("pages must not load the model except to predict")

    def attention_maps(self, run_dir, paths, class_names):
        """A canned map per image: a bright top-left quadrant over grey."""
        self.explained = getattr(self, "explained", []) + list(zip(paths, class_names, strict=True))
        image = np.full((32, 32, 3), 90, dtype=np.uint8)
        image[:16, :16] = (220, 30, 30)
        return [image.copy() for _ in paths]

    def export_portable(self, run_dir, formats):
        """Placeholder bytes for each file, recorded in run.json the real way."""
        from tl_core.runs.portable import FORMATS, ExportCheck, record_checks

        self.exported = getattr(self, "exported", []) + list(formats)
        checks = []
        for name in formats:
            (Path(run_dir) / FORMATS[name]).write_bytes(b"portable bytes")
            checks.append(ExportCheck(name, FORMATS[name], True, "Checked: fake engine.", 14, 8, 0.0, 1.0, 0.1))
        record_checks(Path(run_dir), checks)
        return checks

    def predict(self, run_dir, paths, top_k=3) -> list[Prediction]:
        class_names = json.loads((Path(run_dir) / "labels.json").read_text())
        predictions = []
        for index, path in enumerate(paths):
            first, second = class_names[index % len(class_names)], class_names[(index + 1) % len(class_names)]
            predictions.append(Prediction(str(path), first, 0.8, [(first, 0.8), (second, 0.2)]))
        return predictions


def canned_advice(dataset, similarity: str = "low"):
    """Advice with fixed measurements, built from the real dataclasses."""
    from dataclasses import replace

    from tl_core.advice.advise import Advice
    from tl_core.advice.candidates import Candidate
    from tl_core.advice.scenario import recommend
    from tl_core.advice.similarity import LayerShift, Measurement

    score = 0.12 if similarity == "low" else 0.84
    measurement = Measurement(
        sample_size=len(dataset.records), chance_accuracy=0.34, probe_accuracy=0.97, random_probe_accuracy=0.99, probe_similarity=0.0,
        shift_profile=[LayerShift(index, f"bn_{index}", 0.1 + 0.05 * number) for number, index in enumerate(range(2, 40, 4))],
        mean_shift=0.72, shift_similarity=0.13, imagenet_confidence=0.23, confidence_similarity=0.16,
        similarity_score=score, similarity=similarity, seconds=1.5,
    )
    recommendation = recommend(dataset, similarity, similarity_source="measured", similarity_score=score)
    reasons = ["Probe: pretrained features separate your classes with 97% cross-validated accuracy, random-weight features with 99% (chance 34%): similarity 0.00."]
    views = ["Freeze the first 12 layers and retrain the rest.", "Transfer may barely help: compare side by side."] if recommendation.scenario == 2 else []
    # Measured and timed, feature extraction is within half a point of fine-tuning and much faster: it wins over the matrix's choice.
    candidates = [
        Candidate("feature_extraction", 0.972, "measured: a cross-validated probe on 56 of your images", 30.0, 100, True, recommended=True),
        Candidate("fine_tune", 0.975, "feature extraction's measured accuracy with 10% of its errors removed", 240.0, 8, True),
        Candidate("from_scratch", None, "not predictable from the probe; compare the strategies to measure it", 900.0, 30, False),
    ]
    matrix_strategy = recommendation.strategy
    recommendation = replace(recommendation, strategy="feature_extraction")
    return Advice(
        recommendation, measurement, "mobilenet_v2", 12, "block_2", 22, 1e-4, True, reasons, views,
        candidates=candidates, matrix_strategy=matrix_strategy, epochs=100, time_budget_minutes=10.0,
        fine_tune_freeze_layers=12, fine_tune_freeze_block="block_2", fine_tune_freeze_reason="the shift first exceeds 0.35 in block 'block_2'",
    )


def canned_comparison(strategies: list[str]):
    from tl_core.advice.compare import ComparisonRow

    accuracies = {"feature_extraction": 0.81, "fine_tune": 0.86, "full_fine_tune": 0.84, "from_scratch": 0.40}
    return [ComparisonRow(strategy, accuracies[strategy], 1 - accuracies[strategy], accuracies[strategy] - 0.02, 3.0 + number, 3, "finished") for number, strategy in enumerate(strategies)]


def finished_run(root: Path, name: str, created: str, strategy: str = "feature_extraction", **config) -> Path:
    run_dir = write_canned_run(root / name, ["ants", "bees"])
    summary = json.loads((run_dir / "run.json").read_text())
    summary.update({
        "created": created, "strategy": strategy, "frozen_layers": 154, "seconds": {"total": 90.0},
        "config": {"data_dir": "/photos/insects", "out_dir": str(run_dir), "seed": 0, "strategy": strategy, "augmentation": {"zoom": 0.2}, **config},
        "data": {"root": "/photos/insects", "fingerprint": "abc123", "class_names": ["ants", "bees"], "counts": {"train": {"ants": 10, "bees": 12}, "test": {"ants": 4, "bees": 4}}},
    })
    (run_dir / "run.json").write_text(json.dumps(summary))
    return run_dir
