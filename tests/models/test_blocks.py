"""The freeze depth in words: one function, and the same sentence in the advice, the Setup page, the freeze map and the run's notes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.config import TrainConfig
from tl_core.models.backbones import get_backbone
from tl_core.models.blocks import block_starts, freeze_wording
from tl_core.service.engine import Engine

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine, canned_advice

MOBILENET_V2 = get_backbone("mobilenet_v2")
DEPTH = 107  # the usual depth of MobileNetV2: block_12 is the first block that trains
WORDING = "the first 107 of 154 layers frozen (stem to block_11); block_12 to top retrain"


def test_the_wording_names_the_last_frozen_and_the_first_retrained_block() -> None:
    blocks = block_starts(MOBILENET_V2)
    assert freeze_wording(blocks, DEPTH) == WORDING
    assert freeze_wording(blocks, 110) == "the first 110 of 154 layers frozen (stem to block_11 and part of block_12); the rest of block_12 to top retrain"
    assert freeze_wording(blocks, 4) == "the first 4 of 154 layers frozen (stem); block_0 to top retrain"
    assert freeze_wording(blocks, 151) == "the first 151 of 154 layers frozen (stem to block_16); top retrains"
    assert freeze_wording(blocks, 0) == "no layer frozen: all 154 layers retrain (stem to top)"
    assert freeze_wording(blocks, 154) == "all 154 layers frozen (stem to top); only the new head trains"


class RealLayers(FakeEngine):
    """The fake engine with the real backbone's layer map (built once, without weights)."""

    layer_map = Engine.layer_map


def test_the_advice_the_setup_page_the_freeze_map_and_the_notes_say_it_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import tl_core.advice.advise as advise_module
    from tl_core.advice.candidates import Candidate
    from tl_core.advice.sizes import SizeProbe
    from tl_core.data.scan import scan_dataset
    from tl_core.events import Notice
    from tl_core.models.blocks import layer_names
    from tl_core.models.build import build_backbone, build_classifier, build_head
    from tl_core.training.context import ModelParts, RunContext
    from tl_core.training.fitting import unfreeze
    from ui.charts import freeze_figure
    from ui.state import DatasetResult

    folder = make_class_folders(tmp_path / "data", {"ants": 12, "bees": 12}, size=32)
    dataset = scan_dataset(folder)
    names = list(layer_names(MOBILENET_V2))

    # The advice: measured on fake numbers, fine-tuning recommended at the usual depth (no layer's shift stands out).
    measurement = replace(canned_advice(dataset).measurement, shift_profile=[], forward_images_per_second=100.0)
    monkeypatch.setattr(advise_module, "measure_similarity", lambda *arguments: (measurement, names))
    monkeypatch.setattr(advise_module, "plan_candidates", lambda *arguments: [Candidate("fine_tune", 0.9, "benchmarks", 60.0, 8, True, recommended=True)])
    monkeypatch.setattr(advise_module, "probe_at_size", lambda dataset, backbone, size, *rest, **keywords: SizeProbe(size, 0.9, None))  # 32 px images: smaller sizes weighed too
    advice = advise_module.advise(dataset, cache_dir=str(tmp_path / "cache"))
    assert advice.fine_tune_freeze_layers == DEPTH
    assert f"Freeze depth: {WORDING}." in " ".join(advice.reasons)

    # The Setup page, starting from that advice.
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["engine"] = RealLayers()
    at.session_state["dataset"] = dataset
    at.session_state["data_dir"] = str(folder)
    at.session_state["chosen_strategy"] = "fine_tune"
    at.session_state["advice"] = DatasetResult(dataset.fingerprint(), advice)
    at.run()
    at.switch_page("pages/setup.py").run()
    assert not at.exception
    assert f"Freeze depth: **{WORDING}**" in " ".join(caption.value for caption in at.caption)
    assert WORDING in at.success[-1].value  # the plan in one sentence

    # The freeze map: its title, and every block named under the bar.
    figure = freeze_figure(Engine().layer_map("mobilenet_v2"), DEPTH, "fine_tune", 2562, "layers")
    assert figure.layout.title.text == WORDING[0].upper() + WORDING[1:]
    assert [annotation.text for annotation in figure.layout.annotations if annotation.textangle == -90] == [block.name for block in block_starts(MOBILENET_V2)] + ["head"]

    # The run's note when fine-tuning starts, which the command line prints as "note: ...".
    backbone = build_backbone(MOBILENET_V2, "none")
    head = build_head(MOBILENET_V2.feature_dim, 2, 0, 0.2)
    classifier, feature_model = build_classifier(MOBILENET_V2, backbone, head, 32)
    notes = []
    run = RunContext(TrainConfig(data_dir=str(folder), out_dir="", strategy="fine_tune", freeze_layers=DEPTH).validated(), notes.append, None, started=time.perf_counter())
    run.spec, run.model = MOBILENET_V2, ModelParts(classifier, feature_model, backbone, head)
    unfreeze(run)
    assert any(isinstance(note, Notice) and f"Fine-tuning MobileNetV2: {WORDING};" in note.message for note in notes)
