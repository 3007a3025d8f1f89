"""Where a backbone's starting weights come from, and what to say when they cannot be had.

``--weights imagenet`` uses Keras' own download-and-cache: the file goes to
``$KERAS_HOME/models/`` (default ``~/.keras/models/``). Offline, a user puts
the file there by hand; the messages here name the file and the folder.
"""

from __future__ import annotations

import hashlib
import os
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
    text = " ".join(str(error).split())
    if weights == "imagenet":
        target = keras_models_folder() / spec.weights_file
        if target.exists():
            return WeightsError(
                f"The ImageNet weights file '{target}' for {spec.display_name} could not be loaded ({text[:200]}). "
                "It is probably incomplete: delete it and run again, or pass a good copy with --weights PATH."
            )
        return WeightsError(
            f"Could not download the ImageNet weights for {spec.display_name} (no network?): Keras wanted the file "
            f"'{spec.weights_file}'. Put a copy at '{target}' ($KERAS_HOME/models/, default ~/.keras/models/), "
            f"pass a local weights file with --weights PATH, or train without pretrained weights with --weights none."
        )
    return WeightsError(
        f"The weights file '{weights}' does not fit the {spec.display_name} backbone ({text[:200]}). "
        "Use a file saved from the same architecture without its classifier top."
    )
