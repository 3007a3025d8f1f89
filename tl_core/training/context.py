"""What the phases of one run share: the settings, the data, the model and what has happened so far."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from tl_core.config import TrainConfig
from tl_core.data.decoded import DecodedImages
from tl_core.data.records import Dataset
from tl_core.device import DeviceInfo, Distribution
from tl_core.events import EventHandler, Notice, StopRequest
from tl_core.features import MIRRORED, ORIGINAL, compiled_forward, extra_views
from tl_core.insight.metrics import Evaluation
from tl_core.models.backbones import BackboneSpec
from tl_core.runs.folder import EarlierRun
from tl_core.runtime import BackboneRunner
from tl_core.training.estimate import Estimate


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        status: ``"finished"`` or ``"stopped"``.
        run_dir: The run folder.
        evaluation: Metrics on the evaluation split (None when stopped before any epoch).
        history: One dict per completed epoch.
        summary: The contents of ``run.json``.
    """

    status: str
    run_dir: Path
    evaluation: Evaluation | None
    history: list[dict]
    summary: dict = field(default_factory=dict)


@dataclass
class ModelParts:
    """The classifier of a run and the parts the phases train or run on their own."""

    classifier: keras.Model
    feature_model: keras.Model
    backbone: keras.Model
    head: keras.Model
    frozen_layers: int = 0


@dataclass
class RunContext:
    """What the phases of one run share: the settings, the data, the model and what has happened so far."""

    config: TrainConfig
    on_event: EventHandler
    stop: StopRequest
    started: float = field(default_factory=time.perf_counter)
    history: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cache_use: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    spec: BackboneSpec | None = None
    weights: str = ""
    image_size: int = 0
    dataset: Dataset | None = None
    device: DeviceInfo | None = None
    distribution: Distribution = field(default_factory=Distribution)
    model: ModelParts | None = None
    decoded: DecodedImages | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # ORIGINAL and, when used, MIRRORED
    estimate: Estimate | None = None
    exported: keras.Model | None = None  # the model the files hold, once trained (see exported_classifier)
    planned: int | None = None  # epochs in all, set when the last phase starts
    earlier: EarlierRun | None = None  # the run this one trains again from (config.from_run)
    reuse: dict = field(default_factory=dict)  # what was taken from it: images reused, new, removed
    warm_started: bool = False  # the whole classifier starts from the earlier run's trained weights
    created_by: str = ""  # who started the run on a shared app (RunSummary.created_by)
    runner: BackboneRunner | None = None  # the frozen backbone's forward pass, by the runtime chosen here (tl_core.runtime)
    mirrors_deferred: bool = False  # the mirror images' features are wanted but not cached: left for after the first model
    saved: dict = field(default_factory=dict)  # the model already in the run folder: its accuracy, and whether mirrors taught it
    mirror_epochs: int = 0  # the head's epochs planned on with the mirror images, after the first model (tl_core.training.mirrors)
    _compiled: dict = field(default_factory=dict, repr=False)

    def timed(self, phase: str, work: Callable, *arguments, **keywords):
        """``work(*arguments, **keywords)``, its seconds added to ``phase``'s in ``run.json``."""
        start = time.perf_counter()
        try:
            return work(*arguments, **keywords)
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - start, 3)

    def notice(self, message: str) -> None:
        self.notes.append(message)
        self.on_event(Notice(message))

    def compiled(self, model: keras.Model, augmenter=None) -> Callable:
        """``compiled_forward`` of ``model``, traced once per run for each (model, augmenter)."""
        key = (id(model), id(augmenter))
        if key not in self._compiled:
            self._compiled[key] = (model, augmenter, compiled_forward(model, self.image_size, augmenter=augmenter))  # holding the models keeps their ids theirs
        return self._compiled[key][2]

    @property
    def flips_at_test(self) -> bool:
        """Predictions average the image and its mirror image: asked for, and for feature extraction the mirror images' features are there."""
        return self.config.uses_test_time_flip and (self.config.strategy != "feature_extraction" or MIRRORED in self.features)

    @property
    def test_views(self) -> list[str]:
        """The views each prediction averages: the image, and with the test-time flip its mirror image (for feature extraction,
        every extra view the head learnt from: the turned views too where turns keep the class)."""
        if not self.flips_at_test:
            return [ORIGINAL]
        if self.config.strategy == "feature_extraction":
            return [ORIGINAL, *(view for view in self.features if view != ORIGINAL)]
        return [ORIGINAL, *extra_views(True, bool(self.config.augmentation.turns))]

    @property
    def planned_phase_epochs(self) -> dict[str, int]:
        """``TrainConfig.planned_phase_epochs``, with the head's epochs on the mirror images added once they are planned."""
        planned = self.config.planned_phase_epochs
        if self.mirror_epochs:
            planned["head"] = planned.get("head", 0) + self.mirror_epochs
        return planned

    @property
    def planned_epochs(self) -> int:
        """Epochs the run expects in all; once the images train, the warm-up's early end is known and counted."""
        return self.planned if self.planned is not None else self.config.planned_epochs
