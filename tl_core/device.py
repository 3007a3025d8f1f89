"""Which device a run will use, on which backend, in which precision, and why not a GPU.

Users of other tools complain that the GPU is silently unused; this module
always says which device was found and, on a CPU, the most likely reason no
GPU was found, with what to install. Devices are found through the backend's
own library (``tensorflow``, ``jax``, ``torch``), without importing Keras, so
the app can say what a run will use before the run's process chooses its backend.

Precision on a GPU: ``mixed_bfloat16`` from compute capability 8.0 (Ampere and
newer: bfloat16 keeps float32's range, so no loss scaling), ``mixed_float16``
from 7.0 (tensor cores), float32 before and on Apple's GPU. The saved model
files are float32 either way.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field, fields

from tl_core.backend import BACKEND_NAMES


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run uses.

    Attributes:
        kind: ``"GPU"`` or ``"CPU"``.
        name: The GPU's name (``"NVIDIA H100 80GB HBM3"``) or ``"CPU"``.
        count: Number of GPUs found (0 on CPU).
        reason: On CPU, why no GPU is used, and what to do about it; empty on GPU.
        mixed_precision: The mixed-precision policy a run uses here (``"mixed_bfloat16"``,
            ``"mixed_float16"``) or ``""`` for plain float32.
        compute_capability: The GPU's compute capability, e.g. ``"9.0"``.
        cpu_count: Logical CPU cores.
        backend: The Keras backend (``tensorflow``, ``jax``, ``torch``).
    """

    kind: str
    name: str
    count: int = 0
    reason: str = ""
    mixed_precision: str = ""
    compute_capability: str = ""
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)
    backend: str = "tensorflow"

    @property
    def key(self) -> str:
        """What identifies this device's speed: ``jax GPU:NVIDIA H100 80GB HBM3 x1`` or ``tensorflow CPU x8``."""
        where = f"GPU:{self.name} x{self.count}" if self.kind == "GPU" else f"CPU x{self.cpu_count}"
        return f"{self.backend} {where}"

    @property
    def precision(self) -> str:
        return {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(self.mixed_precision, "float32")

    def describe(self) -> str:
        """One line for a user: ``GPU: NVIDIA ... (PyTorch, bfloat16)`` or ``CPU (8 cores, TensorFlow): reason``."""
        backend = BACKEND_NAMES.get(self.backend, self.backend)
        if self.kind == "GPU":
            extra = f", {self.count} GPUs" if self.count > 1 else ""
            return f"GPU: {self.name}{extra} ({backend}, {self.precision})"
        return f"CPU ({self.cpu_count} cores, {backend}): {self.reason}"

    def to_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision}

    @classmethod
    def from_dict(cls, data: dict) -> DeviceInfo:
        """The device ``to_dict`` described (its extra keys, such as ``precision``, are left out)."""
        return cls(**{item.name: data[item.name] for item in fields(cls) if item.name in data})


def detect_device(backend: str | None = None) -> DeviceInfo:
    """The device a run on ``backend`` (None: the active Keras backend) uses, and on a CPU why no GPU was found."""
    if backend is None:
        from tl_core.backend import active_backend

        backend = active_backend()
    finder = {"tensorflow": _tensorflow_device, "jax": _jax_device, "torch": _torch_device}[backend]
    return finder()


def _policy(capability: tuple[int, int] | None) -> str:
    major = capability[0] if capability else 0
    return "mixed_bfloat16" if major >= 8 else "mixed_float16" if major >= 7 else ""


def _tensorflow_device() -> DeviceInfo:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return DeviceInfo(kind="CPU", name="CPU", reason=why_no_gpu("tensorflow", tf.test.is_built_with_cuda()), backend="tensorflow")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised by an earlier run in this process; growth was set then
            tf.config.experimental.set_memory_growth(gpu, True)
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = tuple(details.get("compute_capability") or ()) or None
    return DeviceInfo(
        kind="GPU", name=details.get("device_name", gpus[0].name), count=len(gpus), mixed_precision=_policy(capability),
        compute_capability=".".join(str(part) for part in capability) if capability else "", backend="tensorflow",
    )


def _jax_device() -> DeviceInfo:
    # JAX takes 75 % of the GPU's memory at its first use unless told otherwise: take it as needed, beside other processes.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    gpus = [device for device in jax.devices() if device.platform in ("gpu", "cuda", "rocm")]
    if not gpus:
        return DeviceInfo(kind="CPU", name="CPU", reason=why_no_gpu("jax"), backend="jax")
    text = str(getattr(gpus[0], "compute_capability", "") or "")
    capability = tuple(int(part) for part in text.split(".")[:2]) if text.replace(".", "").isdigit() else None
    return DeviceInfo(kind="GPU", name=gpus[0].device_kind, count=len(gpus), mixed_precision=_policy(capability), compute_capability=text, backend="jax")


def _torch_device() -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(0)
        return DeviceInfo(
            kind="GPU", name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(), mixed_precision=_policy(capability),
            compute_capability=f"{capability[0]}.{capability[1]}", backend="torch",
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return DeviceInfo(kind="GPU", name="Apple GPU (MPS)", count=1, backend="torch")
    return DeviceInfo(kind="CPU", name="CPU", reason=why_no_gpu("torch", torch.version.cuda is not None), backend="torch")


def why_no_gpu(backend: str, built_with_gpu: bool = False, system: str | None = None) -> str:
    """Why no GPU is used, in words a user can act on: the likeliest cause on this platform, and what to install."""
    system = system or platform.system()
    torch_fix = "Install PyTorch with CUDA (pip install torch --index-url https://download.pytorch.org/whl/cu128) and run with --backend torch (or auto)"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides all GPUs"
    if system == "Darwin":
        if backend == "torch":
            return "PyTorch found no Apple GPU (MPS needs macOS 12.3 or newer on Apple silicon)"
        return "TensorFlow has no working GPU support on a Mac. Install PyTorch (pip install torch) and runs will use the Apple GPU through Keras' PyTorch backend"
    has_nvidia = bool(shutil.which("nvidia-smi") or os.path.exists("/proc/driver/nvidia/version"))
    if system == "Windows" and backend == "tensorflow":
        return f"TensorFlow {_version('tensorflow')} has no GPU support on native Windows. {torch_fix}, and runs will use your GPU through Keras' PyTorch backend"
    if not has_nvidia:
        return "no NVIDIA GPU driver found on this machine"
    if backend == "tensorflow":
        if not built_with_gpu:
            return "this TensorFlow build has no GPU support (e.g. tensorflow-cpu); on Linux install 'tensorflow[and-cuda]', or " + torch_fix[0].lower() + torch_fix[1:]
        return "an NVIDIA driver is present but TensorFlow could not load CUDA; install 'tensorflow[and-cuda]' matching your driver, or " + torch_fix[0].lower() + torch_fix[1:]
    if backend == "jax":
        return "this JAX has no CUDA support; install it with pip install -U 'jax[cuda12]' (Linux), or " + torch_fix[0].lower() + torch_fix[1:]
    if not built_with_gpu:
        return "this PyTorch is a CPU build. " + torch_fix
    return "an NVIDIA driver is present but PyTorch could not use CUDA; install the PyTorch build that matches your driver (pytorch.org)"


def _version(module: str) -> str:
    from tl_core.backend import library_version

    return library_version(module) or ""


@dataclass(frozen=True)
class Distribution:
    """How a run spreads over several GPUs: the backend's own data-parallel path, or nothing to do.

    Attributes:
        replicas: Copies of the model training at once (1 on a CPU or one GPU).
        description: What is done, in words (empty with one replica).
    """

    replicas: int = 1
    description: str = ""
    strategy: object = None  # TensorFlow's MirroredStrategy, when used

    def scope(self):
        """Models and optimizers built inside are mirrored on every GPU (TensorFlow); elsewhere this changes nothing."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def distribution_strategy(device: DeviceInfo) -> Distribution:
    """One model trained on every GPU at once, by the backend's own data-parallel path; nothing on a CPU or one GPU.

    TensorFlow: ``MirroredStrategy`` (each GPU holds a copy and takes an equal share of every batch).
    JAX: Keras' distribution API (``keras.distribution.DataParallel``). PyTorch: one GPU (Keras'
    PyTorch backend has no data-parallel path of its own).
    """
    if device.kind != "GPU" or device.count < 2:
        return Distribution()
    if device.backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return Distribution(strategy.num_replicas_in_sync, "MirroredStrategy: each GPU holds a copy of the model and takes an equal share of every batch", strategy)
    if device.backend == "jax":
        import keras

        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return Distribution(device.count, "Keras' data-parallel distribution: each GPU takes an equal share of every batch")
    return Distribution(1, f"{device.count} GPUs found; Keras' PyTorch backend trains on the first one")
