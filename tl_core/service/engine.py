"""The engine as the app sees it: one object whose methods return data to draw.

Pages receive an ``Engine`` from the session state and call its methods; they
never import TensorFlow or Keras themselves. Page tests put a fake with the
same methods in its place. Heavy modules are imported inside the methods
that need them, so building an ``Engine`` is instant.

Each session's engine carries its ``Access`` (``tl_core.service.sharing``):
on a shared app the folders it reads are confined to the data root, the runs
it starts record who started them, and it deletes only those.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl_core.advice.scenario import Recommendation, recommend
from tl_core.config import AugmentConfig, TrainConfig
from tl_core.data.images import load_image
from tl_core.data.records import Dataset
from tl_core.data.scan import scan_dataset
from tl_core.device import DeviceInfo
from tl_core.models.backbones import BackboneSpec, get_backbone, list_backbones
from tl_core.models.blocks import Block
from tl_core.runs.folder import RunFile, RunReport, TrainedRun, read_report, run_files
from tl_core.runs.predict import Prediction
from tl_core.service.jobs import TrainingJob
from tl_core.service.sharing import Access
from tl_core.service.workspace import Workspace


@dataclass(frozen=True)
class LayerInfo:
    """One backbone layer, for the freeze map."""

    index: int
    name: str
    kind: str
    parameters: int
    is_batchnorm: bool
    trainable_parameters: int  # parameters that train when the layer is unfrozen (a BatchNorm layer's scale and offset, not its statistics)


@dataclass(frozen=True)
class LayerMap:
    """A backbone's layers grouped into blocks, for the freeze-depth slider and its picture."""

    backbone: str
    layers: list[LayerInfo]
    blocks: list[Block]

    def trainable_parameters(self, frozen_layers: int, train_batchnorm: bool = False) -> int:
        """Backbone parameters that train when the first ``frozen_layers`` layers are frozen.

        BatchNormalization layers stay frozen when fine-tuning pretrained weights
        (``train_batchnorm=False``); training from scratch trains them too.
        """
        return sum(
            layer.trainable_parameters if layer.is_batchnorm else layer.parameters
            for layer in self.layers[frozen_layers:]
            if train_batchnorm or not layer.is_batchnorm
        )


class Engine:
    """Everything the pages ask of the engine, for one session whose rights ``access`` says."""

    access: Access = Access()  # the local app: a fake engine that skips __init__ gets it too

    def __init__(self, access: Access | None = None) -> None:
        self.access = access or Access()

    def scan(self, path: str | os.PathLike, seed: int = 0) -> Dataset:
        return scan_dataset(path, seed=seed)

    def browse_root(self) -> Path | None:
        """Where the folder browser starts and which it never leaves (None: folders on the server are off, see ``local_folders_refusal``)."""
        return self.access.browse_root()

    def local_folders_refusal(self) -> str:
        """Why this session cannot use folders on the server ("" when it can)."""
        return self.access.local_folders_refusal()

    def local_folder(self, typed: str | os.PathLike) -> Path:
        """The folder a user typed, checked against the data root on a shared app (``Access.local_folder``).

        Raises:
            DataError: When this session may not read it.
        """
        return self.access.local_folder(typed)

    def list_folders(self, folder: str | os.PathLike | None):
        """The sub-folders of ``folder`` with their image counts, never above the browse root (``FolderListing``).

        Raises:
            DataError: When folders on the server are off for this session.
        """
        from tl_core.errors import DataError
        from tl_core.service.browse import list_folders

        root = self.browse_root()
        if root is None:
            raise DataError(self.local_folders_refusal())
        return list_folders(Path(folder) if folder else root, root)

    def save_tried_images(self, workspace: Workspace, files: list[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
        """Saves images to try a model on, given as (name from the browser, bytes), in the session's folder.

        Returns:
            The saved paths (each under a cleaned name, ``Workspace.save_files``) and the names to show
            (the base name as given, control characters written out as ``\\x00``).

        Raises:
            DataError: When a file cannot be saved.
        """
        from tl_core.service.workspace import shown_name

        paths = workspace.save_files("try", files)
        return [str(path) for path in paths], [shown_name(name) for name, _ in files]

    def write_sample(self, workspace: Workspace) -> Path:
        from tl_core.data.sample import SAMPLE_NAME, write_sample_dataset

        return write_sample_dataset(workspace.fresh_data_dir(SAMPLE_NAME))

    def thumbnails(self, paths: list[str], size: int = 96) -> list[np.ndarray | None]:
        """Small square previews; None for a file that cannot be read, or that this session may not see (``may_show``)."""
        previews: list[np.ndarray | None] = []
        for path in paths:
            try:
                previews.append(load_image(path, size) if self.may_show(path) else None)
            except Exception:  # noqa: BLE001 - a preview that fails shows as missing, the scan lists the file
                previews.append(None)
        return previews

    def may_show(self, path: str | os.PathLike) -> bool:
        """Whether this session may see an image file: any on one person's app; on a shared app, one inside the data root or
        in a session folder of this app (uploads). A run opened from History can name files anywhere on the server."""
        from tl_core.service.workspace import is_in_session_folder

        if not self.access.sharing:
            return True
        if is_in_session_folder(path):
            return True
        if self.access.data_root is None:
            return False
        try:
            return Path(path).resolve().is_relative_to(self.access.data_root.resolve())
        except (OSError, RuntimeError):
            return False

    def backbones(self) -> list[BackboneSpec]:
        return list_backbones()

    @functools.cache  # noqa: B019 - one engine per process; the backends installed do not change while it runs
    def backend(self):
        """The Keras backend runs will use (``tl_core.backend.BackendChoice``): ``$TL_CORE_BACKEND``, else the first one that sees a GPU."""
        from tl_core.backend import choose_backend

        return choose_backend()

    @functools.cache  # noqa: B019 - one engine per process; the device does not change while it runs
    def device(self) -> DeviceInfo:
        """The device runs will use, through their backend's own library (this process keeps its own Keras backend)."""
        from tl_core.device import detect_device

        return detect_device(self.backend().name)

    @functools.cache  # noqa: B019 - layer maps are pure functions of the backbone name
    def layer_map(self, backbone: str) -> LayerMap:
        import keras

        from tl_core.models.blocks import blocks_from_layer_names, build_backbone_for_inspection

        spec = get_backbone(backbone)
        model = build_backbone_for_inspection(spec)
        layers = [
            LayerInfo(
                index,
                layer.name,
                type(layer).__name__,
                int(layer.count_params()) if layer.built else 0,
                isinstance(layer, keras.layers.BatchNormalization),
                int(sum(np.prod(weight.shape) for weight in layer.trainable_weights)),
            )
            for index, layer in enumerate(model.layers)
        ]
        return LayerMap(spec.name, layers, blocks_from_layer_names(spec, [layer.name for layer in layers]))

    def suggested_settings(self, dataset: Dataset, backbone: str, strategy: str, quick: bool = False, advice=None):
        """What a run of ``strategy`` starts from on this data (``tl_core.advice.settings.SuggestedSettings``): the rule ``--strategy auto`` uses too."""
        from tl_core.advice.settings import suggested_settings

        return suggested_settings(dataset, backbone, strategy, quick, advice, layer_names=[layer.name for layer in self.layer_map(backbone).layers])

    def augment_preview(self, paths: list[str], image_size: int, augmentation: AugmentConfig, versions: int = 4, seed: int = 0, centre_crop: bool = False) -> np.ndarray:
        """``uint8`` array (images, versions + 1, size, size, 3): the original first, then augmented versions.

        With ``centre_crop`` the images are the middles a run with ``TrainConfig.centre_crop`` learns from.
        """
        from tl_core.models.augment import augment_preview

        originals = np.stack([load_image(path, image_size, centre_crop=centre_crop) for path in paths])
        changed = augment_preview(originals, augmentation, versions=versions, seed=seed)
        return np.concatenate([originals[:, None], changed], axis=1)

    def recommend(self, dataset: Dataset, similarity: str) -> Recommendation:
        return recommend(dataset, similarity)

    def advise(self, dataset: Dataset, backbone: str = "mobilenet_v2", time_budget_minutes: float = 10.0):
        """Measured advice (``tl_core.advice.advise.Advice``): about a minute on a CPU for a few hundred images."""
        from tl_core.advice.advise import advise

        return advise(dataset, backbone=backbone, time_budget_minutes=time_budget_minutes)

    def find_label_issues(self, dataset: Dataset, backbone: str = "mobilenet_v2", on_progress=None):
        """Suspect labels, near duplicates with different labels and odd ones out (``tl_core.insight.label_issues.LabelReport``).

        One pass of the backbone over every image (under a minute for 3,000 photos on a CPU); reuses cached features.
        """
        from tl_core.insight.label_issues import find_label_issues

        return find_label_issues(dataset, backbone=backbone, on_progress=on_progress)

    def label_decisions(self, root: str | os.PathLike) -> dict:
        """The label decisions saved in a dataset folder, by relative path (``tl_core.data.decisions``)."""
        from tl_core.data.decisions import load_decisions

        return load_decisions(root)

    def decisions_file(self, root: str | os.PathLike) -> bytes:
        """The label decisions file of a dataset folder, as bytes to download (empty when there is none)."""
        from tl_core.data.decisions import decisions_path

        path = decisions_path(root)
        return path.read_bytes() if path.is_file() else b""

    def decide_labels(self, root: str | os.PathLike, changes: dict) -> dict:
        """Saves label decisions (None forgets one) next to the images; returns them all."""
        from tl_core.data.decisions import decide

        return decide(root, changes)

    def compare(
        self, data_dir: str, strategies: list[str], out_root: Path, epochs: int, image_size: int | None, per_class: int | None, freeze_layers: int | None,
        flip: str = "horizontal", on_row=None, centre_crop: bool = False,
    ) -> list:
        """Trains each strategy on the same split (``tl_core.advice.compare.compare_strategies``)."""
        from tl_core.advice.compare import compare_strategies

        return compare_strategies(
            data_dir, strategies, out_root, epochs=epochs, image_size=image_size, train_images_per_class=per_class, freeze_layers=freeze_layers, flip=flip, on_row=on_row,
            centre_crop=centre_crop,
        )

    def missing_weights(self, backbone: str, with_classifier: bool = True) -> list:
        """The ImageNet weights files this backbone needs that are not on this computer (``tl_core.models.weights.NeededWeights``).

        ``with_classifier`` counts the similarity's confidence classifier too (the Scenario page's measurement).
        """
        from tl_core.models.weights import missing_weights, needed_weights

        return missing_weights(needed_weights(get_backbone(backbone), with_classifier))

    def install_weights(self, backbone: str, name: str, data: bytes) -> Path:
        """Saves a weights file the user loaded where Keras looks for it (the local app only).

        Raises:
            WeightsError: When the app is shared (its owner installs weights), or the file is not one the backbone needs or not HDF5.
        """
        from tl_core.errors import WeightsError
        from tl_core.models.weights import install_weights, needed_weights

        if self.access.sharing:
            raise WeightsError("This app is shared, so weights are installed by whoever runs it: ask the owner to put the files in Keras' folder on the server.")
        return install_weights(name, data, needed_weights(get_backbone(backbone)))

    def estimate(self, config: TrainConfig, dataset: Dataset):
        """Roughly how long ``config`` takes here when this engine starts it (``tl_core.training.estimate.Estimate``).

        The first call per network and size times the forward pass. Once a run started here, the
        estimate also counts the seconds its process takes to start (``learned_start_up``).
        """
        from tl_core.training.estimate import estimate_run, forward_throughput
        from tl_core.training.timings import learned_start_up

        spec = get_backbone(config.backbone)
        device = self.device().key
        estimate = estimate_run(config, dataset, forward_throughput(spec.name, config.image_size or spec.default_size, device, config.cache_dir))
        start_up = learned_start_up(device, config.cache_dir)
        return estimate.with_start_up(start_up) if start_up else estimate

    def start_training(self, config: TrainConfig, workspace: Workspace | None = None) -> TrainingJob:
        """Starts a run in the background on this engine's backend; the session's workspace stays alive until the run ends; its ``run.json`` names this session's visitor."""
        return TrainingJob(config, keep_alive=(workspace,), created_by=self.access.visitor, backend=self.backend().name).start()

    def load_report(self, run_dir: str | os.PathLike) -> RunReport:
        """The evaluation and summary of a run folder (``tl_core.runs.folder.read_report``; no model is loaded).

        Raises:
            RunError: When the folder lacks its reports or they cannot be read.
        """
        return read_report(run_dir)

    def run_files(self, run_dir: str | os.PathLike, names: list[str] | tuple[str, ...]) -> dict[str, RunFile]:
        """The named files of a run folder with their sizes, to offer for download (``tl_core.runs.folder.run_files``)."""
        return run_files(run_dir, names)

    @functools.lru_cache(maxsize=2)  # noqa: B019 - keeps the last loaded models; run folders do not change
    def load_run(self, run_dir: str) -> TrainedRun:
        from tl_core.runs.folder import load_run

        return load_run(run_dir)

    def list_runs(self, runs_dir: str | os.PathLike) -> list:
        """Every run in the runs folder, newest first (``tl_core.runs.history.list_runs``)."""
        from tl_core.runs.history import list_runs

        return list_runs(runs_dir)

    def compare_runs(self, first, second):
        """Two history rows side by side (``tl_core.runs.history.RunComparison``): settings, and whether they were judged on the same images."""
        from tl_core.runs.history import compare_runs

        return compare_runs(first, second)

    def may_delete(self, record) -> str:
        """Why this session may not delete the run of a history row ("" when it may; ``Access.may_delete``)."""
        return self.access.may_delete(record.created_by)

    def delete_run(self, run_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> None:
        """Deletes a run folder, if this session may (``Access.may_delete``).

        Raises:
            RunError: When it is not a run folder in ``runs_dir``, may not be deleted by this session, or cannot be removed.
        """
        from tl_core.runs.history import delete_run

        delete_run(run_dir, runs_dir, may_delete=self.access.may_delete)
        Engine.load_run.cache_clear()  # a deleted run's model must not be served from memory

    def attention_maps(self, run_dir: str | os.PathLike, paths: list[str], class_names: list[str | None]) -> list[np.ndarray | None]:
        """Each image with its Grad-CAM map for the given class (None: the predicted one) laid over it; None for an unreadable image."""
        from tl_core.errors import TLError
        from tl_core.insight.explain import explain_file, overlay

        run = self.load_run(str(run_dir))
        maps = []
        for path, class_name in zip(paths, class_names, strict=True):
            if not self.may_show(path):
                maps.append(None)
                continue
            try:
                explanation, pixels = explain_file(run, path, class_name)
            except TLError:
                maps.append(None)
                continue
            maps.append(overlay(pixels, explanation.heatmap))
        return maps

    def config_from_run(self, run_dir: str | os.PathLike, data_dir: str, out_dir: str) -> TrainConfig:
        """An earlier run's settings for training again on ``data_dir`` (``tl_core.training.reuse``)."""
        from tl_core.training.reuse import config_from_run

        return config_from_run(run_dir, data_dir, out_dir)

    def export_portable(self, run_dir: str | os.PathLike, formats: list[str]) -> list:
        """Writes and checks TFLite or ONNX files for a run; returns the checks.

        In a child process (``tl_core.runs.portable.export_in_tensorflow``): TensorFlow's converters
        build graphs and sessions of their own, which the web server's process, where Streamlit
        clears Keras' session between reruns, need not hold or share; and it works whichever
        backend the app's runs use.
        """
        from tl_core.runs.portable import export_in_tensorflow

        return export_in_tensorflow(run_dir, formats)

    def predict(self, run_dir: str | os.PathLike, paths: list[str], top_k: int = 3) -> list[Prediction]:
        from tl_core.runs.predict import predict_files

        return predict_files(self.load_run(str(run_dir)), paths, top_k=top_k)
