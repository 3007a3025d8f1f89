"""Model files that run without Keras: TensorFlow Lite (phones, small devices) and ONNX (servers, other languages).

Each file takes the same input as ``model.h5``: RGB pixels 0-255 at the
run's size, ``float32``, shape ``(batch, size, size, 3)``; the backbone's
preprocessing (and the test-time flip, when the run uses it) is inside. Each
returns one probability per class, in the order of ``labels.json``.

A file is converted in memory, checked, and only then written (atomically):
the TFLite interpreter or ONNX Runtime runs it on a few of the run's
held-out images, and its probabilities must match the Keras model's to
``FLOAT_TOLERANCE`` (the dynamic-range quantised TFLite file: the same top
class on at least ``INT8_AGREEMENT`` of them). A converter that fails, or a
file that disagrees, leaves no file behind and a message saying why; the
result of every check goes into ``run.json`` under ``exports``.

Formats:

- ``tflite``: ``model.tflite``, float32, TensorFlow's own converter.
- ``int8``: ``model_int8.tflite``, weights quantised to 8 bits (dynamic range):
  about 4x smaller, slightly different probabilities.
- ``onnx``: ``model.onnx``, converted by ``tf2onnx`` (opset ``ONNX_OPSET``), input ``image``,
  output ``probabilities``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tl_core.config import parse_formats
from tl_core.errors import ConfigError, RunError
from tl_core.files import atomic_write
from tl_core.runs.folder import SUMMARY_FILE, load_run, read_summary, update_summary

FORMATS = {"tflite": "model.tflite", "int8": "model_int8.tflite", "onnx": "model.onnx"}
FORMAT_TITLES = {"tflite": "TensorFlow Lite", "int8": "TensorFlow Lite, 8-bit weights", "onnx": "ONNX"}
FLOAT_TOLERANCE = 1e-3
INT8_AGREEMENT = 0.98
CHECK_IMAGES = 32
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


@dataclass(frozen=True)
class ExportCheck:
    """One portable file: whether it was written and how closely it matches the Keras model.

    Attributes:
        format: ``"tflite"``, ``"int8"`` or ``"onnx"``.
        file: The file's name in the run folder (written only when ``ok``).
        ok: True when the file was written and passed its check.
        message: What happened, in words (why not, when not ``ok``).
        size_bytes: The file's size (0 when not written).
        images: Images the check ran on.
        max_difference: Largest absolute difference from the Keras model's probabilities.
        top1_agreement: Share of the images given the same top class as the Keras model.
        seconds: Conversion plus check.
    """

    format: str
    file: str
    ok: bool
    message: str
    size_bytes: int = 0
    images: int = 0
    max_difference: float | None = None
    top1_agreement: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def export_portable(model, run_dir: str | os.PathLike, formats: Sequence[str], pixels: np.ndarray, source: str = "held-out images") -> list[ExportCheck]:
    """Writes and checks each of ``formats`` in ``run_dir``; never raises for one format's failure.

    Args:
        model: The Keras model the run folder holds (input: RGB 0-255).
        run_dir: The run folder.
        formats: Keys of ``FORMATS``.
        pixels: ``(n, size, size, 3)`` images to check on (held-out images of the run), any dtype.
        source: What the images are, for the messages.

    Returns:
        One ``ExportCheck`` per format, in order.
    """
    import keras

    if keras.config.backend() != "tensorflow":
        return export_in_tensorflow(run_dir, formats)
    folder = Path(run_dir)
    images = np.asarray(pixels, dtype=np.float32)[:CHECK_IMAGES]
    reference = np.asarray(model.predict(images, batch_size=len(images), verbose=0), dtype=np.float64) if len(images) else None
    return [_export_one(model, folder, name, images, reference, source) for name in parse_formats(formats)]


def export_in_tensorflow(run_dir: str | os.PathLike, formats: Sequence[str]) -> list[ExportCheck]:
    """The files made from the run folder's ``model.keras`` by a child process running Keras on TensorFlow.

    The converters are TensorFlow's, so a run trained on JAX or PyTorch has its
    model converted from the saved file (the weights do not depend on the backend).
    The child sees no GPU: converting is CPU work, and it must not take GPU memory
    from the backend that trains. Where TensorFlow is not installed, each file is
    reported as not made, with the one command that makes it later.
    """
    import json
    import subprocess
    import sys

    from tl_core.backend import installed_backends

    wanted = parse_formats(formats)
    files = ", ".join(FORMATS[name] for name in wanted)
    later = f"python -m tl_core export {run_dir} --format {' '.join(wanted)}"
    if "tensorflow" not in installed_backends():
        message = f"TensorFlow is not installed in this Python, and its converters make {files}. Install it (pip install -r requirements.txt) and make them with: {later}"
        return [ExportCheck(name, FORMATS[name], False, message) for name in wanted]
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "tl_core", "--backend", "tensorflow", "export", str(run_dir), "--format", *wanted, "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1800, check=False)
    try:
        return [ExportCheck(**check) for check in json.loads(completed.stdout)]
    except (ValueError, TypeError):
        error = _short(RuntimeError((completed.stderr or completed.stdout).strip().splitlines()[-1] if (completed.stderr or completed.stdout).strip() else "no output"))
        return [ExportCheck(name, FORMATS[name], False, f"The TensorFlow process that converts the model failed ({error}). Try again with: {later}") for name in wanted]


def _export_one(model, folder: Path, name: str, images: np.ndarray, reference: np.ndarray | None, source: str) -> ExportCheck:
    """Converts in memory, checks the bytes with their own runtime, and writes the file only when the check passes."""
    started = time.perf_counter()
    file = FORMATS[name]
    try:
        content = _tflite_bytes(model, quantize=name == "int8") if name != "onnx" else onnx_bytes(model)
    except Exception as error:  # noqa: BLE001 - a converter's failure is reported, the other formats still run
        converter = "tf2onnx" if name == "onnx" else "TensorFlow's TFLite converter"
        return ExportCheck(name, file, False, f"{converter} could not convert this model: {_short(error)}", seconds=_since(started))
    if reference is None:
        return ExportCheck(name, file, False, "No images to check the file on; it was not kept.", seconds=_since(started))
    try:
        probabilities = run_portable(content, images, name)
    except Exception as error:  # noqa: BLE001 - a file its own runtime cannot run is not kept
        return ExportCheck(name, file, False, f"The written file does not run: {_short(error)}", seconds=_since(started))
    difference = float(np.max(np.abs(probabilities - reference)))
    agreement = float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1)))
    if name == "int8":
        ok = agreement >= INT8_AGREEMENT
        verdict = f"same top class as the Keras model on {agreement:.0%} of {len(images)} {source} (at least {INT8_AGREEMENT:.0%} needed)"
    else:
        ok = difference <= FLOAT_TOLERANCE
        verdict = f"probabilities within {difference:.1e} of the Keras model's on {len(images)} {source} (at most {FLOAT_TOLERANCE:g} allowed)"
    if not ok:
        return ExportCheck(name, file, False, f"Not kept: {verdict}.", 0, len(images), difference, agreement, _since(started))
    try:
        atomic_write(folder / file, content)
    except OSError as error:
        return ExportCheck(name, file, False, f"Checked, but could not be written: {error.strerror or error}.", 0, len(images), difference, agreement, _since(started))
    return ExportCheck(name, file, True, f"Checked: {verdict}.", len(content), len(images), difference, agreement, _since(started))


def _tflite_bytes(model, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: 8-bit weights, float activations
    with _Quiet():
        return converter.convert()


def onnx_bytes(model) -> bytes:
    """The model as ONNX: its forward pass traced, every weight and captured constant frozen into the graph, then converted.

    Freezing first matters: converting the traced function directly left some
    captured constants (EfficientNet's normalisation statistics) as extra
    inputs of the ONNX graph, a file no runtime could feed.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    size = int(model.input_shape[1])
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def probabilities(image):
        return model(image, training=False)

    with _Quiet():
        frozen = convert_variables_to_constants_v2(probabilities.get_concrete_function())
        inputs, outputs = [tensor.name for tensor in frozen.inputs], [tensor.name for tensor in frozen.outputs]
        proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs, opset=ONNX_OPSET)
    # Plain names for the callers: "image" in, "probabilities" out (TensorFlow's are "image:0" and "Identity:0").
    renames = {inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAME}
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    return proto.SerializeToString()


def run_portable(model: str | os.PathLike | bytes, images: np.ndarray, name: str | None = None) -> np.ndarray:
    """Probabilities of ``images`` from a ``.tflite`` or ``.onnx`` file (a path, or its bytes with ``name``), by its own runtime (not Keras)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if name is None:
        name = "onnx" if Path(model).suffix == ".onnx" else "tflite"
    if name == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images})[0], dtype=np.float64)
    interpreter = _tflite_interpreter(model)
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], images)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), dtype=np.float64)


def _tflite_interpreter(model: str | os.PathLike | bytes):
    """LiteRT's interpreter (``ai-edge-litert``), or TensorFlow's older copy of it when LiteRT is not installed."""
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TensorFlow's interpreter announces its move to LiteRT
            return tf.lite.Interpreter(**source)
    return Interpreter(**source)


def check_images(paths: Sequence[str], image_size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Pixels of the images a re-export is checked on, and where they came from.

    The run's own held-out images when they can still be read; otherwise
    seeded random pixels (the comparison with the Keras model still holds,
    though on images unlike the user's).
    """
    from tl_core.data.images import load_image

    loaded = []
    for path in list(paths)[:CHECK_IMAGES]:
        try:
            loaded.append(load_image(path, image_size))
        except Exception:  # noqa: BLE001 - a moved or deleted image is simply not used
            continue
    if loaded:
        return np.stack(loaded).astype(np.float32), "of the run's held-out images"
    generator = np.random.default_rng(seed)
    return generator.uniform(0, 255, (8, image_size, image_size, 3)).astype(np.float32), "random images (the run's held-out images are no longer readable)"


def reexport(run_dir: str | os.PathLike, formats: Sequence[str]) -> list[ExportCheck]:
    """Writes ``formats`` for an existing run folder and records the checks in its ``run.json``.

    Raises:
        RunError: When the run folder has no loadable model.
        ConfigError: For an unknown format.
    """
    wanted = parse_formats(formats)
    if not wanted:
        raise ConfigError(f"Name at least one format to export: {', '.join(FORMATS)}.")
    run = load_run(run_dir)
    pixels, source = check_images(run.summary.export_check_images or [], run.image_size)
    checks = export_portable(run.model, run.run_dir, wanted, pixels, source)
    record_checks(run.run_dir, checks)
    return checks


def record_checks(run_dir: Path, checks: Sequence[ExportCheck]) -> None:
    """Merges ``checks`` into ``run.json``'s ``exports`` (one entry per format, the latest wins).

    Raises:
        RunError: When ``run.json`` cannot be written.
    """
    path = Path(run_dir) / SUMMARY_FILE
    try:
        exports = dict(read_summary(run_dir).exports or {}) if path.is_file() else {}
    except RunError:
        exports = {}
    for check in checks:
        exports[check.format] = check.to_dict()
    update_summary(run_dir, exports=exports)


def _short(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300] + ("…" if len(text) > 300 else "")


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


class _Quiet:
    """Keeps the converters' chatter (log lines, Keras' printed export signature) out of the user's terminal."""

    def __enter__(self):
        self.levels = {name: logging.getLogger(name).level for name in ("absl", "tf2onnx", "tensorflow")}
        for name in self.levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        self.printed = contextlib.redirect_stdout(io.StringIO())
        self.printed.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.printed.__exit__(*exc)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
