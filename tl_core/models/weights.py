"""Where a backbone's starting weights come from, and what to say when they cannot be had.

``--weights imagenet`` uses Keras' own download-and-cache: the file goes to
``$KERAS_HOME/models/`` (default ``~/.keras/models/``). Offline, a user puts
the file there by hand; the messages here name the file and the folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import WeightsError
from tl_core.models.backbones import BackboneSpec


def keras_models_folder() -> Path:
    """The folder Keras looks in for downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def weights_identity(spec: BackboneSpec, weights: str) -> str:
    """A string that changes whenever the weights a backbone starts from change (for cache keys)."""
    if weights == "none":
        return "none"
    if weights == "imagenet" and spec.members:
        return "|".join(weights_identity(member, weights) for member in spec.member_specs)
    if weights == "imagenet":
        cached = keras_models_folder() / spec.weights_file
        stamp = f"{cached.stat().st_size}:{cached.stat().st_mtime_ns}" if cached.exists() else "download"
        return f"imagenet:{spec.weights_file}:{stamp}"
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    return f"file:{digest}"


def check_weights_option(weights: str) -> str:
    """Normalises ``--weights`` to ``"imagenet"``, ``"none"`` or an existing file path."""
    lowered = weights.strip().lower()
    if lowered in ("imagenet", "none"):
        return lowered
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"Weights file '{weights}' does not exist. Pass 'imagenet', 'none', or the path of a "
            ".h5 / .weights.h5 file saved from the same backbone without its top."
        )
    return str(path.resolve())


def weights_error(spec: BackboneSpec, weights: str, error: Exception) -> WeightsError:
    """The message for weights that cannot be had: what is missing or broken, where it goes, what to do.

    It holds no command-line option, since the app shows it too; the command line adds its own
    (``--weights PATH``, ``--weights none``) to a ``WeightsError``.
    """
    text = " ".join(str(error).split())
    if weights == "imagenet":
        target = keras_models_folder() / spec.weights_file
        if target.exists():
            return WeightsError(
                f"The ImageNet weights file '{target}' for {spec.display_name} could not be loaded ({text[:200]}). "
                "It is probably incomplete: delete it and put a good copy in its place."
            )
        missing = WeightsError(
            f"The ImageNet weights for {spec.display_name} are not on this computer and could not be downloaded (no network?). "
            f"Missing: '{spec.weights_file}'. Put a copy in '{keras_models_folder()}' ($KERAS_HOME/models/, default ~/.keras/models/) and try again."
        )
        missing.command_line = "Or, on the command line: --weights PATH trains from a weights file of your own, --weights none from random weights."
        return missing
    return WeightsError(
        f"The weights file '{weights}' does not fit the {spec.display_name} backbone ({text[:200]}). "
        "Use a file saved from the same architecture without its classifier top."
    )


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The ImageNet classifier whose confidence is one of the similarity's measurements (tl_core.advice.similarity).
CLASSIFIER_WEIGHTS_FILE = "mobilenet_7_5_224_tf.h5"


@dataclass(frozen=True)
class NeededWeights:
    """A weights file the app reads from Keras' folder, and what it is for."""

    name: str
    purpose: str

    @property
    def path(self) -> Path:
        return keras_models_folder() / self.name


def needed_weights(spec: BackboneSpec, with_classifier: bool = True) -> list[NeededWeights]:
    """The ImageNet weights files the app uses with this backbone: its own (without the top) and the confidence classifier's."""
    needed = [NeededWeights(member.weights_file, f"{member.display_name} without its classifier top: training, the label check and the similarity probe") for member in spec.member_specs]
    if with_classifier and CLASSIFIER_WEIGHTS_FILE not in spec.weights_files:
        needed.append(NeededWeights(CLASSIFIER_WEIGHTS_FILE, "MobileNet 0.75's ImageNet classifier: the similarity's confidence measurement"))
    return needed


def missing_weights(needed: list[NeededWeights]) -> list[NeededWeights]:
    """Those of ``needed`` that are not in Keras' folder."""
    return [item for item in needed if not item.path.is_file()]


def missing_weights_message(missing: list[NeededWeights]) -> str:
    """Every missing file at once, what each is for, and where it goes ("" when none is missing)."""
    if not missing:
        return ""
    files = "; ".join(f"'{item.name}' ({item.purpose})" for item in missing)
    count = "file is" if len(missing) == 1 else f"{len(missing)} files are"
    return (
        f"{'This ImageNet weights' if len(missing) == 1 else 'These ImageNet weights'} {count} not on this computer, and without a network they cannot be downloaded: "
        f"{files}. Put {'it' if len(missing) == 1 else 'them'} in '{keras_models_folder()}' (the folder $KERAS_HOME/models, ~/.keras/models when "
        "KERAS_HOME is not set), or load each file here."
    )


def install_weights(name: str, data: bytes, needed: list[NeededWeights]) -> Path:
    """Saves a weights file the user loaded into Keras' folder, under the name Keras asks for.

    Raises:
        WeightsError: When the name is not one of ``needed`` or the bytes are not an HDF5 file.
    """
    from tl_core.files import atomic_write

    names = [item.name for item in needed]
    if name not in names:
        raise WeightsError(f"'{name}' is not one of the weights files the app needs here ({', '.join(names)}). Load the file with one of those names.")
    if not data.startswith(HDF5_SIGNATURE):
        raise WeightsError(f"'{name}' is not an HDF5 weights file (its first bytes are not HDF5's signature). Load the .h5 file Keras publishes under that name.")
    target = keras_models_folder() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return target
