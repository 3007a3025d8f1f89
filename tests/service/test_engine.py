"""The real engine facade the pages call: its numbers agree with what training does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_core.config import AugmentConfig
from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset
from tl_core.models.backbones import get_backbone
from tl_core.service.engine import Engine

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("frozen", [0, 57, 154])
def test_layer_map_counts_the_parameters_training_will_train(frozen: int) -> None:
    from tl_core.models.build import build_backbone, freeze_layers, trainable_parameter_count

    layer_map = Engine().layer_map("mobilenet_v2")
    backbone = build_backbone(get_backbone("mobilenet_v2"), "none")
    freeze_layers(backbone, frozen)
    assert layer_map.trainable_parameters(frozen) == trainable_parameter_count(backbone)
    freeze_layers(backbone, 0, train_batchnorm=True)
    assert layer_map.trainable_parameters(0, train_batchnorm=True) == trainable_parameter_count(backbone)
    assert layer_map.blocks[0].start == 0 and layer_map.blocks[-1].end == len(layer_map.layers) == 154


def test_augment_preview_puts_the_original_first(tiny_dataset: Path) -> None:
    paths = [record.path for record in scan_dataset(tiny_dataset).records[:2]]
    preview = Engine().augment_preview(paths, 40, AugmentConfig(rotation=0.2), versions=3, seed=1)
    assert preview.shape == (2, 4, 40, 40, 3) and preview.dtype == np.uint8
    np.testing.assert_array_equal(preview[0, 0], load_image(paths[0], 40))
    assert not np.array_equal(preview[0, 1], preview[0, 0])
    np.testing.assert_array_equal(preview, Engine().augment_preview(paths, 40, AugmentConfig(rotation=0.2), versions=3, seed=1))


def test_augment_preview_of_the_middles_shows_what_a_centre_cropped_run_learns_from(tiny_dataset: Path) -> None:
    paths = [record.path for record in scan_dataset(tiny_dataset).records[:1]]
    middles = Engine().augment_preview(paths, 40, AugmentConfig(rotation=0.2), versions=1, seed=1, centre_crop=True)
    np.testing.assert_array_equal(middles[0, 0], load_image(paths[0], 40, centre_crop=True))
    assert not np.array_equal(middles[0, 0], load_image(paths[0], 40))


@pytest.mark.slow
def test_the_suggested_freeze_depth_is_a_block_boundary_of_the_real_backbone(tiny_dataset: Path) -> None:
    engine = Engine()
    suggested = engine.suggested_settings(scan_dataset(tiny_dataset), "mobilenet_v2", "fine_tune")
    starts = {block.start: block.name for block in engine.layer_map("mobilenet_v2").blocks}
    assert suggested.freeze_layers == 107 and starts[107] == suggested.freeze_block == "block_12"  # the first 107 of 154 layers, as docs/how-it-works.md says


def test_on_a_shared_app_pictures_are_shown_only_from_the_data_root_and_the_apps_own_uploads(tmp_path: Path) -> None:
    """A run opened from History names its images' paths; on a shared app those outside the data root stay unseen."""
    import shutil

    from conftest import write_image

    from tl_core.service.sharing import Access
    from tl_core.service.workspace import Workspace

    root, elsewhere = tmp_path / "datasets", tmp_path / "home"
    inside, outside = root / "cats" / "a.png", elsewhere / "private.png"
    for path in (inside, outside):
        write_image(path, np.full((20, 20, 3), 120, dtype=np.uint8))
    (root / "escape.png").symlink_to(outside)
    workspace = Workspace.create(runs_root=tmp_path / "runs")
    try:
        (uploaded,) = workspace.save_files("try", [("tried.png", inside.read_bytes())])
        shared = Engine(Access(sharing=True, data_root=root))
        shown = shared.thumbnails([str(inside), str(outside), str(root / "escape.png"), str(uploaded), str(root / ".." / "home" / "private.png")], size=16)
        assert [preview is not None for preview in shown] == [True, False, False, True, False]
        assert all(preview is not None for preview in Engine().thumbnails([str(inside), str(outside)], size=16))  # one person's app: every file
        assert not Engine(Access(sharing=True)).may_show(inside) and Engine(Access(sharing=True)).may_show(uploaded)  # no data root: uploads only
    finally:
        shutil.rmtree(workspace.root, ignore_errors=True)


def test_the_estimate_counts_the_start_up_of_the_runs_started_here(tmp_path: Path, tiny_dataset: Path) -> None:
    """The Setup page's figure is from the click to the result: once a run started here, its process's start-up is in it."""
    import time

    from tl_core.config import TrainConfig
    from tl_core.training.estimate import START_UP, Throughput, remember_throughput
    from tl_core.training.timings import record_start_up

    engine = Engine()
    device = engine.device().key
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir="", image_size=32, cache_dir=str(tmp_path / "cache")).validated()
    remember_throughput(Throughput(device, "mobilenet_v2", 32, 500.0, time.time()), config.cache_dir)  # the config's cache, where the estimate looks
    dataset = scan_dataset(tiny_dataset)
    before = engine.estimate(config, dataset)
    assert START_UP not in before.parts
    record_start_up(6.0, device, config.cache_dir)
    after = engine.estimate(config, dataset)
    assert after.parts[START_UP] == 6.0 and after.seconds == pytest.approx(before.seconds + 6.0, abs=0.2)
