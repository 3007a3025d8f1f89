"""Train a classifier from a folder of images with one of four strategies, then evaluate and export it.

``train(config)`` runs the workflow below, one function per phase over a shared
``RunContext``; each phase announces itself with a ``PhaseStarted`` event:

1. ``prepare``: check the settings, scan and split the data, find the device.
2. ``build_model``: backbone with its starting weights, a new head, one classifier.
3. ``read_images``: every image is decoded and resized once (cached on disk for
   later runs). On a first run that needs bottleneck features, the frozen
   backbone works on each batch as soon as it is decoded (phase ``features``).
4. ``train_model``:
   - ``features``: the frozen backbone's pooled outputs ("bottleneck features"),
     computed once and cached (with the mirror images' when they are used);
   - ``head``: a new head trained on the cached features. For feature
     extraction this is the whole training; for fine-tuning it is the warm-up
     that keeps a random head from wrecking the pretrained layers;
   - ``fine_tune`` / ``from_scratch``: backbone layers train on the images, with
     augmentation, at a low learning rate (or from random weights).
5. ``evaluate``: on the held-out split (averaged with the mirror image when
   test-time flipping is on).
6. ``export``: the model files and reports (``ModelSaved``: ready to use).
7. Feature extraction with left-right flips, on a first run: the mirror
   images' features, where they are expected to pay (``tl_core.training.mirrors``),
   and the model evaluated and saved again with them.
8. TFLite and ONNX files, when asked for (``export_formats``), after the model.

The strategy ``auto`` is not resolved here: ``tl_core.advice.auto`` measures the
data first and hands this module a concrete strategy.

The run listens to a ``StopRequest`` after every batch; a stopped run keeps
the best weights of the epochs it completed and still evaluates and exports
them.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from tl_core.backend import library_version
from tl_core.config import AUTO_STRATEGY, IMBALANCE_FOR_CLASS_WEIGHTS, TrainConfig, class_weights_default
from tl_core.data.images import framed_size
from tl_core.data.scan import scan_dataset
from tl_core.data.split import subsample_training_split
from tl_core.device import detect_device, distribution_strategy
from tl_core.errors import ConfigError, TLError
from tl_core.events import (
    EventHandler,
    Interrupted,
    ModelSaved,
    PhaseStarted,
    StopRequest,
    TrainingFailed,
    TrainingFinished,
    TrainingStarted,
    TrainingStopped,
    ignore_event,
)
from tl_core.features import MIRRORED, ORIGINAL
from tl_core.insight.curves import epochs_in_words, phase_spans
from tl_core.insight.metrics import Evaluation, evaluate_predictions
from tl_core.models.backbones import get_backbone
from tl_core.models.build import build_backbone, build_classifier, build_head, freeze_layers, trainable_parameter_count, with_centre_crop, with_test_time_flip, without_centre_crop
from tl_core.models.weights import check_weights_option, weights_identity
from tl_core.runs.folder import RunSummary, load_earlier_run, write_images_manifest, write_run_folder
from tl_core.runs.portable import CHECK_IMAGES, FORMAT_TITLES, check_images, export_portable
from tl_core.training.context import ModelParts, RunContext, RunResult
from tl_core.training.estimate import estimate_run, forward_throughput
from tl_core.training.fitting import fit_head, fit_on_images, unfreeze
from tl_core.training.inputs import compute_features, feature_keys, read_images, run_forward
from tl_core.training.mirrors import cached_mirror_features, extra_views_words, learn_from_mirrors, mirrors_pay
from tl_core.training.reuse import read_images_reusing, warm_start
from tl_core.training.timings import compare_with_estimate, record_timings


def train(config: TrainConfig, on_event: EventHandler = ignore_event, stop: StopRequest | None = None, notes: Sequence[str] = (), created_by: str = "") -> RunResult:
    """Runs the whole workflow: check, decode, train, evaluate, export.

    Args:
        config: The run's settings, with a concrete strategy (``auto`` is resolved
            by ``tl_core.advice.auto.run_training``).
        on_event: Called with every event of the run (see ``tl_core.events``).
        stop: Set it (from any thread) to stop the run after the current batch.
        notes: How the settings were chosen (the advice behind ``auto``): shown as
            notices when the run starts and kept in ``run.json``.
        created_by: Who started the run on a shared app (``RunSummary.created_by``).

    Returns:
        The run's result; the files are in ``config.out_dir``.

    Raises:
        TLError: For problems the user can fix (data, options, weights); a
            ``TrainingFailed`` event carries the same message.
    """
    run = RunContext(config, on_event, stop or StopRequest(), created_by=created_by)
    try:
        return _workflow(run, notes)
    except TLError as error:
        record_failure(run, str(error))
        on_event(TrainingFailed(str(error), type(error).__name__))
        raise
    except Exception as error:
        record_failure(run, describe_failure(error))
        on_event(TrainingFailed(describe_failure(error), type(error).__name__))
        raise
    finally:
        keras.mixed_precision.set_global_policy("float32")


def record_failure(run: RunContext, message: str) -> None:
    """Leaves a ``run.json`` with the status ``failed`` and the message, so the run history shows what happened.

    Only for a run that had started (settings and data checked): a wrong path or option makes no run folder.
    """
    if run.device is None:
        return
    try:
        summary = run_summary(run, "failed", with_model=False)
        summary.error = message
        write_run_folder(Path(run.config.out_dir), summary)
    except Exception:  # noqa: BLE001 - the failure itself is what the user must see; a folder that cannot take the record changes nothing
        return


def describe_failure(error: BaseException) -> str:
    """A message for an unexpected failure, with a suggestion where one is known."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
    memory = isinstance(error, MemoryError) or type(error).__name__ in ("ResourceExhaustedError", "OutOfMemoryError")
    if memory or "out of memory" in text.lower() or "resource_exhausted" in text.lower():
        return f"{text}. The run ran out of memory: try a smaller batch size or image size."
    return text


def _workflow(run: RunContext, notes: Sequence[str]) -> RunResult:
    prepare(run)
    for note in notes:
        run.notice(note)
    try:
        with run.distribution.scope():  # models and optimizers made here are mirrored on every GPU
            build_model(run)
        if run.earlier is None or not read_images_reusing(run):
            read_images(run)
        train_model(run)
    except Interrupted:
        return finish_before_any_epoch(run)
    status = "stopped" if run.stop.requested else "finished"
    if status == "stopped":
        run.on_event(TrainingStopped(reason=run.stop.reason, epochs_done=len(run.history)))
    if status == "finished" and run.mirrors_deferred:
        evaluation = with_mirrors(run)  # says which epoch is kept once it knows whether a second model follows
    else:
        note_kept_epoch(run)
        evaluation = evaluate_and_save(run, status)
    return finish(run, status, evaluation)


def with_mirrors(run: RunContext) -> Evaluation:
    """After the first head: the mirror images where they pay, and the model evaluated and saved.

    When the mirror images' features must be computed (a pass of the backbone), the first model is
    evaluated and saved before, so the user has it meanwhile; a stop during that pass keeps it.
    """
    pays, why = mirrors_pay(run)
    note_kept_epoch(run, "The first model" if pays else "The model")
    run.notice(why)
    found = cached_mirror_features(run) if pays else {}
    evaluation = evaluate_and_save(run, "finished") if not pays or any(array is None for array in found.values()) else None
    if pays and learn_from_mirrors(run, found):
        run.exported = None  # the file's model now averages over the mirror image
        note_kept_epoch(run, f"The model (with the {extra_views_words(run)})")
        return evaluate_and_save(run, "finished")
    return evaluation or evaluate_and_save(run, "finished")


def evaluate_and_save(run: RunContext, status: str) -> Evaluation:
    evaluation = run.timed("evaluate", evaluate_model, run)
    save_model(run, status, evaluation)
    return evaluation


def prepare(run: RunContext) -> None:
    """Checks the settings, scans and splits the data, seeds everything and announces the run."""
    config = run.config = run.config.validated()
    if config.strategy == AUTO_STRATEGY:
        raise ConfigError("strategy 'auto' is resolved before training: call tl_core.advice.auto.run_training (the command line and the app do).")
    spec = run.spec = get_backbone(config.backbone)
    run.image_size = config.image_size or spec.default_size
    if run.image_size < spec.min_size:
        raise ConfigError(f"image_size is {run.image_size} but {spec.display_name} needs at least {spec.min_size} pixels. Use --image-size {max(spec.min_size, 96)} or more.")
    dataset = run.timed("scan", scan_dataset, config.data_dir, seed=config.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    if config.max_train_images_per_class:
        dataset = subsample_training_split(dataset, config.max_train_images_per_class, config.seed)
    if config.from_run:
        run.earlier = load_earlier_run(config.from_run)
        dataset = dataset.with_earlier_splits(run.earlier.splits)
    run.dataset = dataset
    if config.class_weights is None:
        config = run.config = replace(config, class_weights=class_weights_default(dataset.imbalance_ratio()))
        if config.class_weights:
            run.notice(f"Class weights on: the largest class has {dataset.imbalance_ratio():.1f}x the images of the smallest (turned on from {IMBALANCE_FOR_CLASS_WEIGHTS:g}x).")
    run.weights = "none" if not config.uses_features else check_weights_option(config.weights)
    keras.utils.set_random_seed(config.seed)
    run.device = detect_device()
    throughput = forward_throughput(spec.name, run.image_size, run.device.key, cache_dir=config.cache_dir)
    run.estimate = estimate_run(config, dataset, throughput)
    run.on_event(TrainingStarted(config=config.to_dict(), device=run.device.to_dict(), class_names=dataset.class_names, counts=dataset.counts(), estimate=run.estimate.to_dict()))
    for group in dataset.duplicate_groups():
        if group.kind != "same class":
            run.notice(f"Duplicate images ({group.kind}): {', '.join(dataset.relative(path) for path in group.paths)}. See the dataset summary.")
    if run.device.mixed_precision:
        keras.mixed_precision.set_global_policy(run.device.mixed_precision)
    run.distribution = distribution_strategy(run.device)
    if run.distribution.replicas > 1:
        run.notice(f"Training on {run.distribution.replicas} GPUs at once ({run.distribution.description}).")
    elif run.distribution.description:
        run.notice(run.distribution.description)
    run.notice(f"Estimated time: {run.estimate.describe()} ({run.estimate.basis}; early stopping can make it shorter).")


def build_model(run: RunContext) -> None:
    """Backbone (with its starting weights), a new head and the classifier joining them."""
    config, spec = run.config, run.spec
    backbone = run.timed("build", build_backbone, spec, run.weights)
    head = build_head(spec.feature_dim, run.dataset.num_classes, config.head_units, config.dropout, seed=config.seed, parts=spec.member_dims)
    classifier, feature_model = build_classifier(spec, backbone, head, run.image_size, backbone_in_inference_mode=config.uses_features)
    run.model = ModelParts(classifier, feature_model, backbone, head)
    if run.earlier is not None:
        warm_start(run)


def train_model(run: RunContext) -> None:
    """Trains as the strategy says: head only, head then backbone layers, or everything from random weights."""
    strategy, model = run.config.strategy, run.model
    if strategy == "from_scratch":
        freeze_layers(model.backbone, 0, train_batchnorm=True)
        model.frozen_layers = 0
        fit_on_images(run, run.config.learning_rate, run.config.epochs, "from_scratch")
        return
    if run.warm_started:  # the earlier run's trained model: fine-tuning goes on from it
        unfreeze(run)
        fit_on_images(run, run.config.backbone_learning_rate, run.config.epochs, "fine_tune")
        return
    compute_features(run)
    model.backbone.trainable = False
    model.frozen_layers = len(model.backbone.layers)
    if run.config.head_epochs:
        fit_head(run, run.config.head_epochs)
    if strategy == "feature_extraction" or run.stop.requested:
        return
    unfreeze(run)
    fit_on_images(run, run.config.backbone_learning_rate, run.config.epochs, "fine_tune")


def note_kept_epoch(run: RunContext, which: str = "") -> None:
    """Says which epoch's weights the model holds: the run's lowest validation loss (``RunSummary.best_epoch``)."""
    if not run.best_epoch:
        return
    spans = phase_spans(run.history, run.planned_phase_epochs)
    span = next((span for span in spans if span.first_epoch <= run.best_epoch <= span.last_epoch), None)
    where = f" ({span.title})" if span is not None and len(spans) > 1 else ""
    run.notice(
        f"{which or 'The model'} keeps the weights of epoch {run.best_epoch}{where}, the lowest validation loss of the run ({run.best_loss:.4f}); "
        f"the run trained {epochs_in_words(spans)}."
    )


def evaluate_model(run: RunContext) -> Evaluation:
    """Accuracy and the rest on the held-out split; averaged over the mirror image when test-time flipping is on."""
    dataset, model = run.dataset, run.model
    split = dataset.evaluation_split
    records = dataset.split(split)
    rows = run.decoded.rows(records)
    flipped = (" and their mirror images (test-time flip)" if len(run.test_views) == 2 else f" and their {len(run.test_views) - 1} turned and mirrored views") if run.flips_at_test else ""
    run.on_event(PhaseStarted("evaluate", f"Evaluating on the {split} split ({len(records)} images{flipped})", total=len(records)))
    if run.features and run.config.strategy == "feature_extraction":
        views = run.test_views
        probabilities = sum(model.head.predict(run.features[view][rows], batch_size=256, verbose=0) for view in views) / len(views)
    else:
        # Compiled once, batches sliced from the decoded images: eager calls of the model were several times slower.
        # With a centre crop the decoded images are the middles already: the model without its crop layer reads them.
        probabilities = run_forward(run, without_centre_crop(exported_classifier(run)), rows, "evaluate")
    return evaluate_predictions(
        [record.label for record in records],
        np.asarray(probabilities, dtype=np.float64),
        dataset.class_names,
        [record.path for record in records],
    )


def exported_classifier(run: RunContext) -> keras.Model:
    """The model that goes into the files (built once per run): float32, averaged over the mirror image when test-time
    flipping is on, and on the middle of larger images with a centre crop."""
    if run.exported is None:
        classifier = _float32_copy(run) if run.device.mixed_precision else run.model.classifier
        if run.flips_at_test:
            run.exported = with_test_time_flip(classifier, run.image_size, run.test_views)
        else:
            # A new, uncompiled model over the same layers: the file then carries no training settings to restore.
            run.exported = keras.Model(classifier.inputs, classifier.outputs, name=classifier.name)
        if run.config.crops_centre:
            run.exported = with_centre_crop(run.exported, run.image_size)
    return run.exported


def _float32_copy(run: RunContext) -> keras.Model:
    """The trained model rebuilt in float32 (mixed precision is for training speed, not for the file)."""
    keras.mixed_precision.set_global_policy("float32")
    spec, config = run.spec, run.config
    backbone = build_backbone(spec, "none")
    head = build_head(spec.feature_dim, run.dataset.num_classes, config.head_units, config.dropout, parts=spec.member_dims)
    classifier, _ = build_classifier(spec, backbone, head, run.image_size, backbone_in_inference_mode=config.uses_features)
    classifier.set_weights(run.model.classifier.get_weights())
    return classifier


def save_model(run: RunContext, status: str, evaluation: Evaluation) -> None:
    """Writes the model files and the reports into the run folder: from here the model is ready to use (``ModelSaved``)."""
    out_dir = Path(run.config.out_dir)
    summary = saved_summary(run, status)
    run.on_event(PhaseStarted("export", "Saving model.h5, model.keras, labels.json and reports"))
    run.timed("export", write_run_folder, out_dir, summary, exported_classifier(run), run.dataset.class_names, evaluation, run.history)
    write_images_manifest(out_dir, run.dataset.records, run.decoded.row_of)
    run.on_event(ModelSaved(run_dir=str(out_dir), test_accuracy=evaluation.accuracy, seconds=time.perf_counter() - run.started))


def finish(run: RunContext, status: str, evaluation: Evaluation) -> RunResult:
    """The portable files when asked for (after the model, which is ready already), the final ``run.json``, and ``TrainingFinished``."""
    out_dir = Path(run.config.out_dir)
    summary = saved_summary(run, status)
    if run.config.export_formats:
        check_records = run.dataset.split(run.dataset.evaluation_split)[:CHECK_IMAGES]
        summary.exports = run.timed("export", export_portable_files, run, exported_classifier(run), check_records)
    summary.seconds = {**run.seconds, "total": round(time.perf_counter() - run.started, 3)}
    record_timings_of(run, summary)
    write_run_folder(out_dir, summary)
    run.on_event(TrainingFinished(status=status, run_dir=str(out_dir), test_accuracy=evaluation.accuracy, seconds=time.perf_counter() - run.started))
    return RunResult(status, out_dir, evaluation, run.history, summary)


def saved_summary(run: RunContext, status: str) -> RunSummary:
    """``run_summary`` with the held-out images a later export checks its files on."""
    summary = run_summary(run, status)
    summary.export_check_images = [record.path for record in run.dataset.split(run.dataset.evaluation_split)[:CHECK_IMAGES]]
    return summary


def record_timings_of(run: RunContext, summary: RunSummary) -> None:
    """Keeps the estimate against the seconds measured in ``run.json``; a finished run also teaches later estimates here (``timings.json``)."""
    if run.estimate is None:
        return
    summary.timings = compare_with_estimate(run.estimate.to_dict(), summary.seconds, run.history, run.config.strategy, mirrors_ran=MIRRORED in run.features)
    if summary.status == "finished":
        try:
            record_timings(summary.timings, run.device.key, run.spec.name, run.image_size, run.config.strategy, run.config.cache_dir)
        except OSError:  # a cache folder that cannot be written costs later estimates their correction, not this run its files
            pass


def export_portable_files(run: RunContext, model: keras.Model, records: list) -> dict:
    """Writes the TFLite and ONNX files asked for, each checked on held-out images; returns the checks by format."""
    formats = run.config.export_formats
    titles = " and ".join(dict.fromkeys(FORMAT_TITLES[name].split(",")[0] for name in formats))
    run.on_event(PhaseStarted("export", f"Converting the model to {titles} and checking the files on {len(records)} held-out images"))
    if run.config.crops_centre:  # the files take the whole images, a quarter larger, and keep their middles
        pixels, _ = check_images([record.path for record in records], framed_size(run.image_size))
    else:
        pixels = run.decoded.pixels[run.decoded.rows(records)]
    checks = export_portable(model, run.config.out_dir, formats, pixels, f"{run.dataset.evaluation_split} images")
    for check in checks:
        if not check.ok:
            run.notice(f"{check.file} not written: {check.message}")
    return {check.format: check.to_dict() for check in checks}


def finish_before_any_epoch(run: RunContext) -> RunResult:
    """A stop before training began: only ``run.json`` is written, and no model."""
    out_dir = Path(run.config.out_dir)
    run.on_event(TrainingStopped(reason=run.stop.reason, epochs_done=len(run.history)))
    summary = run_summary(run, "stopped", with_model=False)
    write_run_folder(out_dir, summary)
    run.on_event(TrainingFinished(status="stopped", run_dir=str(out_dir), test_accuracy=None, seconds=time.perf_counter() - run.started))
    return RunResult("stopped", out_dir, None, run.history, summary)


def _cache_keys(run: RunContext) -> dict:
    """The cache entries holding this run's decoded images and features (``images.json`` gives each image's row)."""
    if run.decoded is None:
        return {}
    keys = feature_keys(run, run.decoded.key)
    return {"images": run.decoded.key, "features": keys[ORIGINAL] if ORIGINAL in run.features else None, "mirrored": keys[MIRRORED] if MIRRORED in run.features else None}


def run_summary(run: RunContext, status: str, with_model: bool = True) -> RunSummary:
    """The contents of ``run.json``: settings, data, model, device, what was cached, notes and versions."""
    import PIL
    import sklearn

    config, spec, dataset, model = run.config, run.spec, run.dataset, run.model if with_model else None
    data_summary = dataset.summary()
    return RunSummary(
        status=status,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config.to_dict(),
        backbone={"name": spec.name, "display_name": spec.display_name, "parameters": spec.parameters, "preprocessing": spec.preprocessing},
        image_size=run.image_size,
        weights=weights_identity(spec, run.weights),
        strategy=config.strategy,
        test_time_flip=run.flips_at_test,
        frozen_layers=None if model is None else model.frozen_layers,
        backbone_layers=None if model is None else len(model.backbone.layers),
        trainable_parameters=None if model is None else trainable_parameter_count(model.classifier),
        best_epoch=run.best_epoch or None,
        phases=[span.to_dict() for span in phase_spans(run.history, run.planned_phase_epochs)],
        estimate=run.estimate.to_dict() if run.estimate else None,
        device=run.device.to_dict(),
        feature_runtime=run.runner.choice.to_dict() if run.runner is not None and run.runner.choice is not None else None,
        data={
            "root": str(dataset.root),
            "fingerprint": dataset.fingerprint(),
            "class_names": dataset.class_names,
            "counts": dataset.counts(),
            "split_source": dataset.split_source,
            "split_fractions": dataset.split_fractions,
            "evaluation_split": dataset.evaluation_split,
            "selection_split": "val",  # early stopping and the kept epoch look at validation loss only
            "seed": dataset.seed,
            "modes": data_summary.get("modes", {}),  # Pillow modes: the Export page's snippets stretch deep ones as training did
        },
        skipped=[{"path": item.path, "reason": item.reason} for item in dataset.skipped],
        duplicates=data_summary.get("duplicates", []),
        label_decisions=data_summary.get("label_decisions") or None,
        suspicious=data_summary.get("suspicious", []),
        cache=dict(run.cache_use),
        cache_keys=_cache_keys(run),
        from_run=run.reuse or None,
        notes=list(run.notes),
        history=list(run.history),
        seconds={**run.seconds, "total": round(time.perf_counter() - run.started, 3)},
        versions={
            "python": platform.python_version(),
            "backend": keras.config.backend(),
            keras.config.backend(): library_version(keras.config.backend()),
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "scikit-learn": sklearn.__version__,
        },
        created_by=run.created_by,
    )
