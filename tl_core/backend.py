"""Which Keras backend the engine runs on, and the few lines that differ between backends.

Keras 3 runs the same models on TensorFlow, JAX or PyTorch. The engine is
written with ``keras`` and ``keras.ops``; what differs per backend lives here
and nowhere else:

- choosing the backend before Keras is imported (``select_backend``): ``auto``
  takes the first installed backend that sees a GPU (TensorFlow with CUDA, JAX
  with CUDA, PyTorch with CUDA, ROCm or Apple's MPS), else TensorFlow on the
  CPU (else whichever backend is installed); on Linux without a GPU device
  (``gpu_device_possible``) no library is asked;
- ``value_and_gradients``: a function's value and its gradients with respect
  to some tensors (Grad-CAM and the head's training step);
- ``compiled``: a function compiled the backend's way (``tf.function``,
  ``jax.jit``; PyTorch runs eagerly).

Finding a GPU imports the backend's own library (``tensorflow``, ``jax`` or
``torch``), never Keras, so the app can say which device a run will use
without choosing the backend of its own process.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tl_core.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")
CHOICES = ("auto", *BACKENDS)
BACKEND_VARIABLE = "TL_CORE_BACKEND"  # auto, tensorflow, jax or torch; --backend on the command line wins
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# On Linux a GPU that a backend could use shows one of these: NVIDIA's driver (also inside a container given the GPU),
# WSL 2's GPU device, or AMD's ROCm device.
GPU_DEVICE_PATTERNS = ("/proc/driver/nvidia/version", "/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses and why.

    Attributes:
        name: ``tensorflow``, ``jax`` or ``torch``.
        reason: Why this one, in words (``auto``: which backends saw a GPU).
    """

    name: str
    reason: str

    @property
    def title(self) -> str:
        return BACKEND_NAMES[self.name]


def installed_backends() -> list[str]:
    """The backends whose library is installed here, in the order ``auto`` tries them."""
    return [name for name in BACKENDS if _installed(_MODULES[name])]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def requested_backend(requested: str | None = None) -> str:
    """``requested`` (or ``$TL_CORE_BACKEND``, or Keras' own ``$KERAS_BACKEND``, or ``auto``), checked.

    Raises:
        ConfigError: For a name that is not a backend, or a backend that is not installed.
    """
    given = requested or os.environ.get(BACKEND_VARIABLE) or os.environ.get("KERAS_BACKEND") or "auto"
    name = given.strip().lower().replace("pytorch", "torch")
    if name not in CHOICES:
        raise ConfigError(f"Unknown backend '{given}'. Choose one of: {', '.join(CHOICES)}.")
    if name != "auto" and name not in installed_backends():
        raise ConfigError(
            f"The {BACKEND_NAMES[name]} backend was asked for, but '{_MODULES[name]}' is not installed in this Python ({sys.executable}). "
            f"Install it (docs/gpu.md says how for each platform), or use --backend auto."
        )
    return name


def choose_backend(requested: str | None = None, gpu_probe: Callable[[str], bool] | None = None) -> BackendChoice:
    """The backend ``requested`` names, or for ``auto`` the first installed one that sees a GPU.

    Args:
        requested: ``auto``, ``tensorflow``, ``jax`` or ``torch`` (None: ``$TL_CORE_BACKEND``, else ``auto``).
        gpu_probe: Whether a backend sees a GPU (tests pass a fake); ``sees_gpu`` by default.
    """
    name = requested_backend(requested)
    if name != "auto":
        return BackendChoice(name, "asked for")
    installed = installed_backends()
    if not installed:
        raise ConfigError("No Keras backend is installed: install tensorflow (pip install -r requirements.txt), or jax, or torch.")
    fallback = "tensorflow" if "tensorflow" in installed else installed[0]
    if gpu_probe is None and not gpu_device_possible():
        # Asking JAX and PyTorch too would import them (about 1.6 s each here) only to hear "no".
        return BackendChoice(fallback, f"auto: this machine shows no GPU device (no NVIDIA driver, WSL GPU or ROCm device), so {BACKEND_NAMES[fallback]} on the CPU")
    probe = gpu_probe or remembered_gpu_probe
    for candidate in installed:
        if probe(candidate):
            return BackendChoice(candidate, f"auto: {BACKEND_NAMES[candidate]} sees a GPU")
    return BackendChoice(fallback, f"auto: no installed backend ({', '.join(BACKEND_NAMES[name] for name in installed)}) sees a GPU")


def gpu_device_possible(system: str | None = None, present: Callable[[str], bool] | None = None) -> bool:
    """False only where no backend can see a GPU: Linux with none of ``GPU_DEVICE_PATTERNS``.

    Elsewhere (macOS with Apple's GPU, Windows) only the libraries can tell, so ``auto`` asks them.

    Args:
        system: ``platform.system()``'s answer (tests pass another).
        present: Whether a path pattern matches a file (tests pass a fake).
    """
    if (system or platform.system()) != "Linux":
        return True
    present = present or (lambda pattern: bool(glob.glob(pattern)))
    return any(present(pattern) for pattern in GPU_DEVICE_PATTERNS)


def remembered_gpu_probe(name: str) -> bool:
    """``sees_gpu``, remembered in the cache folder per backend version and visible devices.

    Asking a backend for its GPUs imports its library (seconds); ``auto`` asks every
    installed backend, so the answers are kept until an install or the visible GPUs change.
    """
    from tl_core.files import default_cache_dir, read_json, write_json

    path = default_cache_dir() / "gpus.json"
    key = f"{name} {library_version(name)} {os.environ.get('CUDA_VISIBLE_DEVICES', '')} {os.path.exists('/proc/driver/nvidia/version')}"
    remembered = read_json(path, {})
    remembered = remembered if isinstance(remembered, dict) else {}
    if key not in remembered:
        remembered[key] = sees_gpu(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, remembered)
        except OSError:
            pass  # a read-only cache folder only means asking again next time
    return bool(remembered[key])


def sees_gpu(name: str) -> bool:
    """Whether the backend's own library finds a GPU here (imports that library, never Keras)."""
    try:
        if name == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if name == "jax":
            import jax

            return any(device.platform in ("gpu", "cuda", "rocm") for device in jax.devices())
        if name == "torch":
            import torch

            mps = getattr(torch.backends, "mps", None)
            return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))
    except Exception:  # noqa: BLE001 - a library that fails to start counts as seeing no GPU; the device line says why
        return False
    return False


def select_backend(requested: str | None = None) -> BackendChoice:
    """Chooses the backend and tells Keras, before Keras is imported in this process.

    Raises:
        ConfigError: When Keras is already imported with another backend (the choice must come first).
    """
    if "keras" in sys.modules and requested_backend(requested) == "auto":
        import keras

        return BackendChoice(keras.config.backend(), f"Keras already runs on {BACKEND_NAMES[keras.config.backend()]} in this process")
    choice = choose_backend(requested)
    if "keras" in sys.modules:
        import keras

        if keras.config.backend() != choice.name:
            raise ConfigError(
                f"Keras is already running on {keras.config.backend()} in this process, so the {choice.title} backend cannot be used here. "
                f"Start a new process with KERAS_BACKEND={choice.name} (or --backend {choice.name})."
            )
    os.environ["KERAS_BACKEND"] = choice.name
    return choice


def active_backend() -> str:
    """The backend Keras runs on in this process."""
    import keras

    return keras.config.backend()


def value_and_gradients(function: Callable, tensors: Sequence) -> tuple:
    """``function(tensors)``'s value and its gradients with respect to each of ``tensors``.

    ``function`` takes the list of tensors and returns ``(value, auxiliary)``: a scalar to
    differentiate and anything else to pass through. Written once per backend.

    Returns:
        ``(value, auxiliary, gradients)``, the gradients in the order of ``tensors``.
    """
    import keras

    backend = active_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = list(tensors)
        watched = [tensor.value if isinstance(tensor, keras.Variable) else tensor for tensor in tensors]  # a Keras variable wraps a tf.Variable
        with tf.GradientTape() as tape:
            tape.watch(watched)
            value, auxiliary = function(tensors)
        return value, auxiliary, tape.gradient(value, watched)
    if backend == "jax":
        import jax

        (value, auxiliary), gradients = jax.value_and_grad(function, has_aux=True)(list(tensors))
        return value, auxiliary, gradients
    if backend == "torch":
        import torch

        leaves = [tensor.detach().requires_grad_(True) for tensor in tensors]
        value, auxiliary = function(leaves)
        return value.detach(), auxiliary, list(torch.autograd.grad(value, leaves))
    raise ConfigError(f"The Keras backend '{backend}' is not supported here; use tensorflow, jax or torch.")


def compiled(function: Callable) -> Callable:
    """``function`` compiled the active backend's way (``tf.function``, ``jax.jit``); PyTorch runs it eagerly."""
    backend = active_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function


def library_version(name: str) -> str | None:
    """The installed version of a backend's library, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_MODULES[name])
    except PackageNotFoundError:
        return None
