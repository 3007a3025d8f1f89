"""Which device a run will use, and why.

Users of other tools complain that the GPU is silently unused; this module
always says which device was found and, on a CPU, the most likely reason no
GPU was found.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run uses.

    Attributes:
        kind: ``"GPU"`` or ``"CPU"``.
        name: The GPU's name (``"NVIDIA H100 80GB HBM3"``) or ``"CPU"``.
        count: Number of GPUs found (0 on CPU).
        reason: On CPU, why no GPU is used; empty on GPU.
        mixed_precision: The mixed-precision policy a run uses here (``"mixed_float16"``)
            or ``""`` for plain float32.
        compute_capability: The GPU's compute capability, e.g. ``"9.0"``.
        cpu_count: Logical CPU cores.
    """

    kind: str
    name: str
    count: int = 0
    reason: str = ""
    mixed_precision: str = ""
    compute_capability: str = ""
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def key(self) -> str:
        """What identifies this device's speed: ``GPU:NVIDIA H100 80GB HBM3 x1`` or ``CPU x8``."""
        return f"GPU:{self.name} x{self.count}" if self.kind == "GPU" else f"CPU x{self.cpu_count}"

    def describe(self) -> str:
        """One line for a user: ``GPU: NVIDIA ... (mixed_float16)`` or ``CPU (reason)``."""
        if self.kind == "GPU":
            extra = f", {self.count} GPUs" if self.count > 1 else ""
            precision = f", {self.mixed_precision}" if self.mixed_precision else ""
            return f"GPU: {self.name}{extra}{precision}"
        return f"CPU ({self.cpu_count} cores): {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)


def detect_device() -> DeviceInfo:
    """Finds the GPUs TensorFlow can use; on CPU, explains why none was found."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return DeviceInfo(kind="CPU", name="CPU", reason=_why_no_gpu(tf))
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised by an earlier run in this process; growth was set then
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    major = capability[0] if capability else 0
    # Tensor cores (compute capability 7.0 and up) make float16 much faster; older GPUs gain little.
    policy = "mixed_float16" if major >= 7 else ""
    return DeviceInfo(
        kind="GPU",
        name=details.get("device_name", gpus[0].name),
        count=len(gpus),
        mixed_precision=policy,
        compute_capability=".".join(str(part) for part in capability) if capability else "",
    )


def _why_no_gpu(tf_module) -> str:
    if not tf_module.test.is_built_with_cuda():
        return (
            "this TensorFlow build has no GPU support (e.g. tensorflow-cpu, or macOS/Windows native); "
            "on Linux with an NVIDIA GPU install 'tensorflow[and-cuda]'"
        )
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides all GPUs"
    if not (shutil.which("nvidia-smi") or os.path.exists("/proc/driver/nvidia/version")):
        return "no NVIDIA GPU driver found on this machine"
    return "an NVIDIA driver is present but TensorFlow could not load CUDA; install 'tensorflow[and-cuda]' matching your driver"


def distribution_strategy(device: DeviceInfo):
    """How a run spreads over the devices: ``MirroredStrategy`` over every GPU when there are several.

    Each GPU holds a copy of the model and takes an equal share of every batch;
    the gradients are summed across the copies. With one GPU or a CPU this is
    TensorFlow's default strategy, which changes nothing.
    """
    import tensorflow as tf

    if device.kind == "GPU" and device.count > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
