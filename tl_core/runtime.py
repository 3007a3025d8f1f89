"""The frozen backbone's forward pass at the speed this processor allows: Keras, or ONNX Runtime when that is faster.

Feature extraction, the advice's probe and the label finder spend nearly all
their time pushing images once through a frozen backbone. On a CPU, Keras
(TensorFlow, float32) is not the fastest program for that: measured on 2 cores
with AVX-512 (MobileNetV2, 224 px, batches of 64), TensorFlow ran about 105
images/s and ONNX Runtime about 220, on the same weights and with the same
features (cosine similarity above 0.99999). Tried and not kept: 8-bit ONNX
Runtime (4.4x, but the head lost 1-3 points of accuracy on four of our sets),
TensorFlow in bfloat16 (no faster) and OpenVINO in bfloat16 (3x, but features at
cosine 0.995, and a 60 MB dependency).

``BackboneRunner`` runs one frozen feature model on ``uint8`` batches by the
runtime chosen for this machine:

- on a GPU, on a backend other than TensorFlow (the converter needs it), or
  without ``onnxruntime``: Keras;
- with a choice remembered for this machine, backbone, weights and image
  size: that one (its ONNX file is cached too, so nothing is converted again);
- otherwise, when enough images are to be run (``MEASURE_FROM_IMAGES``): it
  measures while it works. The first batches go through Keras (their features
  are the ones kept) and through each candidate; a candidate is taken only
  when its features match Keras' on those images (``MIN_COSINE``) and it is at
  least ``MIN_GAIN`` times as fast. The choice is remembered in the cache.

The choice, with every candidate's images per second and features' agreement,
goes into the run's notes and ``run.json`` (``RunSummary.feature_runtime``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tl_core.features import ORIGINAL, view_of
from tl_core.files import atomic_write, cache_key, default_cache_dir

KERAS, ONNX = "keras", "onnxruntime"
TITLES = {KERAS: "Keras", ONNX: "ONNX Runtime"}
MIN_COSINE = 0.999  # the least cosine similarity, image by image, between a candidate's features and Keras'
MIN_GAIN = 1.15  # a candidate must be this much faster than Keras to be worth a second program
MEASURE_FROM_IMAGES = 512  # fewer images to run do not repay a conversion (about 3 s for MobileNetV2)
TIMED_BATCHES = 2  # batches timed on every candidate, after one that warms them up

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass
class RuntimeChoice:
    """Which runtime runs the frozen backbone, and the measurement behind it.

    Attributes:
        runtime: ``"keras"`` or ``"onnxruntime"``.
        reason: Why, in words.
        images_per_second: Each runtime measured here (empty when none was measured).
        min_cosine: Each candidate's least cosine similarity to Keras' features on the measured images.
        images_compared: How many images the features were compared on.
        remembered: True when the choice was measured earlier on this machine (by a run or the advice).
    """

    runtime: str
    reason: str
    images_per_second: dict[str, float] = field(default_factory=dict)
    min_cosine: dict[str, float] = field(default_factory=dict)
    images_compared: int = 0
    remembered: bool = False

    @property
    def title(self) -> str:
        return f"{TITLES.get(self.runtime, self.runtime)} (float32)"

    @property
    def speedup(self) -> float | None:
        """The chosen runtime's speed over Keras', where both were measured."""
        keras, chosen = self.images_per_second.get(KERAS), self.images_per_second.get(self.runtime)
        return chosen / keras if keras and chosen else None

    def describe(self) -> str:
        """One line for the run's notes."""
        return f"The frozen backbone runs on {self.title}: {self.reason}"

    def to_dict(self) -> dict:
        return {**asdict(self), "title": self.title}

    @classmethod
    def from_dict(cls, data: dict) -> RuntimeChoice:
        known = {name: data[name] for name in ("runtime", "reason", "images_per_second", "min_cosine", "images_compared", "remembered") if name in data}
        return cls(**known)


@dataclass
class Candidate:
    """A runtime that may run the backbone: ``make()`` builds its forward pass on ``uint8`` batches (slow: a conversion)."""

    name: str
    make: Callable[[], Forward]


class BackboneRunner:
    """One frozen feature model on ``uint8`` batches, by Keras or by the runtime chosen for this machine.

    Args:
        reference: Keras' own forward pass of the model (``tl_core.features.compiled_forward``).
        identity: What makes the features what they are: backbone, its settings and weights, image size
            (``backbone_identity``); the remembered choice and the converted file are keyed by it.
        images: How many images this runner is expected to run (all views together).
        candidates: The other runtimes to try (``onnx_candidate``); none means Keras, and ``keras_only`` says why.
        keras_only: Why Keras runs it without a measurement (a GPU, another backend, ...); "" to allow candidates.
        cache_dir: Where the choice is remembered.
        timer: The clock (tests pass a fake one).
    """

    def __init__(
        self,
        reference: Forward,
        identity: str,
        images: int,
        candidates: list[Candidate] = (),
        keras_only: str = "",
        cache_dir: str | Path | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.reference, self.timer = reference, timer
        self.choice_file = choice_file(identity, cache_dir)
        self.candidates = {candidate.name: candidate for candidate in candidates}
        self.chosen: Forward | None = None
        self.choice: RuntimeChoice | None = None
        self._built: dict[str, Forward] = {}
        self._seconds: dict[str, float] = {}
        self._images_timed = 0
        self._cosines: dict[str, list[float]] = {}
        self._batches = 0
        self._failed = ""
        if keras_only or not self.candidates:
            self._settle(RuntimeChoice(KERAS, keras_only or "no other runtime is installed."))
            return
        remembered = self._remembered()
        if remembered is not None and (remembered.runtime == KERAS or remembered.runtime in self.candidates):
            self._settle(remembered)
        elif images < MEASURE_FROM_IMAGES:
            self._settle(RuntimeChoice(KERAS, f"{images} images are too few to repay converting the backbone for another runtime (from {MEASURE_FROM_IMAGES})."))

    def forward(self, view: str = ORIGINAL) -> Forward:
        """The forward pass on ``uint8`` batches (as ``view`` shows them: ``tl_core.features.view_of``); ``float32`` features out."""

        def run(batch: np.ndarray) -> np.ndarray:
            return self._run(view_of(np.asarray(batch), view))

        return run

    def keras_images_per_second(self, measured: float | None) -> float | None:
        """Keras' own speed here, from a speed ``measured`` through this runner: what time estimates count in.

        The estimates multiply Keras' forward pass by the chosen runtime's measured speed-up
        (``tl_core.training.estimate.feature_speedup``), so a speed measured on ONNX Runtime is
        brought back to Keras' (or taken from this pass's side-by-side measurement) before it is remembered.
        """
        choice = self.choice
        if choice is not None and not choice.remembered and KERAS in choice.images_per_second:
            return choice.images_per_second[KERAS]  # measured side by side during this pass
        if measured and choice is not None and choice.runtime != KERAS and choice.speedup:
            return measured / choice.speedup
        return measured

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.chosen is None and self.choice is not None:
            self.chosen = self._start(self.choice)
        if self.chosen is not None:
            return np.asarray(self.chosen(batch), dtype=np.float32)
        return self._measure(batch)

    def _measure(self, batch: np.ndarray) -> np.ndarray:
        """Keras' features of the batch (the ones kept); every candidate runs the same batch, compared and timed."""
        warming = self._batches == 0
        self._batches += 1
        if warming:
            features = np.asarray(self.reference(batch), dtype=np.float32)  # traces: not timed
            for name, candidate in list(self.candidates.items()):
                try:
                    self._built[name] = candidate.make()
                    self._compare(name, self._built[name](batch), features)
                except Exception as error:  # noqa: BLE001 - a runtime that cannot take this model is simply not used
                    del self.candidates[name]
                    self._failed = f"{TITLES.get(name, name)} could not run this backbone ({' '.join(str(error).split())[:200]})"
            if not self._built:
                self._settle(RuntimeChoice(KERAS, (self._failed or "no other runtime could run it") + "."))
            return features
        started = self.timer()
        features = np.asarray(self.reference(batch), dtype=np.float32)
        self._seconds[KERAS] = self._seconds.get(KERAS, 0.0) + self.timer() - started
        for name, forward in self._built.items():
            started = self.timer()
            output = forward(batch)
            self._seconds[name] = self._seconds.get(name, 0.0) + self.timer() - started
            self._compare(name, output, features)
        self._images_timed += len(batch)
        if self._batches > TIMED_BATCHES:
            self._decide()
        return features

    def _compare(self, name: str, output: np.ndarray, reference: np.ndarray) -> None:
        self._cosines.setdefault(name, []).extend(cosine_similarities(np.asarray(output, dtype=np.float32), reference).tolist())

    def _decide(self) -> None:
        speeds = {name: round(self._images_timed / max(seconds, 1e-9), 1) for name, seconds in self._seconds.items()}
        cosines = {name: round(float(min(values)), 6) for name, values in self._cosines.items()}
        compared = len(next(iter(self._cosines.values()), []))
        keras_speed = speeds[KERAS]
        passing = [name for name in self._built if cosines[name] >= MIN_COSINE]
        best = max(passing, key=lambda name: speeds[name], default=None)
        if best is not None and speeds[best] >= MIN_GAIN * keras_speed:
            reason = (
                f"{speeds[best]:.0f} images/s against Keras' {keras_speed:.0f} here ({speeds[best] / keras_speed:.1f}x), "
                f"with the same features (cosine similarity at least {cosines[best]:.5f} on {compared} of your images)."
            )
            choice = RuntimeChoice(best, reason, speeds, cosines, compared)
        else:
            drifted = [f"{TITLES.get(name, name)} (cosine {cosines[name]:.4f})" for name in self._built if name not in passing]
            why = f"features differ from Keras' in {', '.join(drifted)}" if drifted else f"no runtime was at least {MIN_GAIN:g}x as fast"
            choice = RuntimeChoice(KERAS, f"{why}; measured on {compared} of your images ({', '.join(f'{TITLES.get(n, n)} {s:.0f}' for n, s in speeds.items())} images/s).", speeds, cosines, compared)
        self._settle(choice)
        if choice.runtime != KERAS or len(passing) < len(self._cosines):
            # Remembered: a faster runtime, or one whose features drift. A runtime merely not fast enough is measured
            # again next time (a busy machine can hide its speed), which costs a few batches, not a conversion.
            self.choice_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.choice_file, lambda temporary: Path(temporary).write_text(json.dumps(choice.to_dict(), indent=2)))

    def _settle(self, choice: RuntimeChoice) -> None:
        """Records the choice; its forward pass starts with the next batch (a runner never used converts nothing)."""
        self.choice = choice
        self.chosen = self._built.get(choice.runtime) if choice.runtime != KERAS else self.reference
        self._built.clear()  # a runtime not chosen frees its session

    def _start(self, choice: RuntimeChoice) -> Forward:
        """The chosen runtime's forward pass; Keras' when it cannot start (its file gone and no converter, say)."""
        try:
            return self.candidates[choice.runtime].make()
        except Exception as error:  # noqa: BLE001 - the features are still computed, by Keras
            self.choice = RuntimeChoice(KERAS, f"{choice.title} was chosen here before but could not start ({' '.join(str(error).split())[:200]}).")
            return self.reference

    def _remembered(self) -> RuntimeChoice | None:
        return remembered_choice(self.choice_file)


def choice_file(identity: str, cache_dir: str | Path | None = None) -> Path:
    """Where this machine's choice for a backbone (``backbone_identity``) is remembered."""
    return runtimes_folder(cache_dir) / f"{cache_key('runtime-v1', machine_fingerprint(), identity)}.json"


def runtimes_folder(cache_dir: str | Path | None = None) -> Path:
    """The cache folder's ``runtimes/``: the choices measured on this machine and the converted ONNX files."""
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "runtimes"


def remembered_choice(path: Path) -> RuntimeChoice | None:
    """The choice an earlier run on this machine measured and kept (``choice_file``), or None."""
    try:
        choice = RuntimeChoice.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    choice.remembered = True
    return choice


def cosine_similarities(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row by row cosine similarity (two zero rows count as equal)."""
    features, reference = features.reshape(len(features), -1), reference.reshape(len(reference), -1)
    dot = np.sum(features * reference, axis=1)
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    both_zero = (norms == 0) & (np.abs(features - reference).max(axis=1) == 0)
    return np.where(both_zero, 1.0, dot / np.maximum(norms, 1e-30))


def backbone_identity(spec, weights_identity: str, image_size: int) -> str:
    """What the frozen backbone's features depend on: architecture, its settings, weights and input size."""
    return cache_key("backbone-v1", *spec.identity, weights_identity, image_size)


def machine_fingerprint() -> str:
    """The processor, its instruction sets and the runtimes' versions: what a measured speed depends on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("onnxruntime", "tensorflow", "keras"):
        try:
            versions.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package}=none")
    return "|".join([platform.machine(), processor_name(), str(os.cpu_count()), ",".join(instruction_sets()), *versions])


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def instruction_sets() -> list[str]:
    """The vector instruction sets that decide a CPU's speed at this work (Linux; empty elsewhere)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [name for name in wanted if name in present]
    except OSError:
        pass
    return []


def onnx_candidate(model, identity: str, cache_dir: str | Path | None = None) -> Candidate:
    """ONNX Runtime on ``model`` converted by ``tf2onnx`` (TensorFlow backend), the ONNX file cached by ``identity``."""

    def make() -> Forward:
        import onnxruntime

        from tl_core.runs.portable import INPUT_NAME, onnx_bytes

        folder = runtimes_folder(cache_dir)
        path = folder / f"{cache_key('onnx-v1', identity, _version('tf2onnx'))}.onnx"
        if not path.is_file():
            content = onnx_bytes(model)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda temporary: Path(temporary).write_bytes(content))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def forward(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {INPUT_NAME: np.asarray(batch, dtype=np.float32)})[0]

        return forward

    return Candidate(ONNX, make)


def backbone_runner(model, spec, weights_identity: str, image_size: int, images: int, *, device_kind: str | None = None, cache_dir: str | Path | None = None) -> BackboneRunner:
    """The runner of a frozen feature model on this machine (see the module's docstring for the rules).

    ``device_kind`` is ``"CPU"`` or ``"GPU"`` (None: found with ``tl_core.device.detect_device``).
    """
    import keras

    from tl_core.features import compiled_forward

    if device_kind is None:
        from tl_core.device import detect_device

        device_kind = detect_device().kind
    identity = backbone_identity(spec, weights_identity, image_size)
    reference = compiled_forward(model, image_size)
    backend = keras.config.backend()
    if device_kind != "CPU":
        return BackboneRunner(reference, identity, images, keras_only="the backbone runs on the GPU.", cache_dir=cache_dir)
    if backend != "tensorflow":
        return BackboneRunner(reference, identity, images, keras_only=f"converting it for ONNX Runtime needs the TensorFlow backend (this run uses {backend}).", cache_dir=cache_dir)
    if _version("onnxruntime") is None or _version("tf2onnx") is None:
        return BackboneRunner(reference, identity, images, keras_only="ONNX Runtime or tf2onnx is not installed (pip install -r requirements.txt).", cache_dir=cache_dir)
    return BackboneRunner(reference, identity, images, [onnx_candidate(model, identity, cache_dir)], cache_dir=cache_dir)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
