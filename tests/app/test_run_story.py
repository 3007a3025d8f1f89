"""One story of a run: a short real fine-tuning, replayed into the app on a fake clock.

The engine trains tiny images (a head warm-up that stops early, then fine-tuning); its
events feed a TrainingJob whose clock is fake, and the Train and History pages (AppTest,
fake engine for everything but the run) are read at the phases' boundaries. The plan, the
progress totals, the notes, the History and run.json must agree on the epochs, the kept
epoch and where each phase starts and ends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.config import TrainConfig, epochs_plan
from tl_core.data.scan import scan_dataset
from tl_core.events import BatchEnded, EpochEnded, PhaseStarted, ProgressUpdated
from tl_core.insight.curves import best_epoch, epochs_in_words, phase_spans
from tl_core.service.jobs import TrainingJob
from tl_core.service.workspace import Workspace

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine

WARMUP, FINE_TUNE = 30, 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def open_page(job: TrainingJob, config: TrainConfig, workspace: Workspace, page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["engine"] = FakeEngine()
    at.session_state["workspace"] = workspace
    at.session_state["data_dir"] = config.data_dir
    at.session_state["dataset"] = scan_dataset(config.data_dir)
    at.session_state["train_config"] = config
    at.session_state["job"] = job
    at.run()
    at.switch_page(page).run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_plan_progress_notes_history_and_run_json_tell_the_same_story(tmp_path: Path, imagenet_weights: Path) -> None:
    from tl_core.training.run import train

    data = make_class_folders(tmp_path / "data", {"circles": 12, "squares": 12, "stripes": 12}, size=32)
    for index, (source, target) in enumerate((("circles", "squares"), ("squares", "stripes"), ("stripes", "circles")) * 2):
        (data / source / f"{source}_{index:03d}.png").rename(data / target / f"moved_{index}.png")  # wrong labels: the head's validation loss stops improving
    workspace = Workspace.create(tmp_path / "workspaces", runs_root=tmp_path / "runs")
    config = TrainConfig(
        data_dir=str(data), out_dir=str(workspace.new_run_dir("fine_tune")), strategy="fine_tune", image_size=32, batch_size=8,
        warmup_epochs=WARMUP, epochs=FINE_TUNE, early_stopping_patience=2, learning_rate=0.05, cache_dir=str(tmp_path / "cache"),
    ).validated()
    events = []
    result = train(config, on_event=events.append)
    summary = json.loads((Path(config.out_dir) / "run.json").read_text())

    # run.json: the phases, the kept epoch and the history agree with each other.
    history = summary["history"]
    spans = phase_spans(history, config.planned_phase_epochs)
    head, fine_tune = spans
    assert [phase["phase"] for phase in summary["phases"]] == ["head", "fine_tune"]
    assert (summary["phases"][0]["first_epoch"], summary["phases"][0]["last_epoch"]) == (1, head.last_epoch)
    assert (summary["phases"][1]["first_epoch"], summary["phases"][1]["last_epoch"]) == (head.last_epoch + 1, len(history))
    assert fine_tune.epochs == FINE_TUNE and head.epochs <= WARMUP
    assert summary["best_epoch"] == best_epoch(history) == result.summary.best_epoch
    assert summary["timings"]["total"]["estimated"] == summary["estimate"]["seconds"]

    # Replayed on a fake clock: each epoch takes the seconds it took, and the page reads the job at each phase boundary.
    clock = FakeClock()
    job = TrainingJob(config, clock=clock)
    seen = {}
    for event in events:
        if isinstance(event, EpochEnded | ProgressUpdated | BatchEnded):
            clock.now += getattr(event, "seconds", 0.1)
        job.handle(event)
        state = job.state()
        if isinstance(event, EpochEnded) and event.phase_epoch == 1:  # the end of each phase's first epoch
            seen[event.phase] = open_page(job, config, workspace, "pages/train.py").get("progress")[0].proto.text
            assert state.phase_epochs == config.planned_phase_epochs[event.phase] and state.phase_first_epoch == event.epoch
        if isinstance(event, PhaseStarted) and event.phase == "fine_tune":
            assert state.phase_first_epoch == head.last_epoch + 1
    assert f"epoch 1 of at most {WARMUP}" in seen["head"]
    assert f"epoch 1 of {FINE_TUNE} (epoch {fine_tune.first_epoch} of the run)" in seen["fine_tune"]
    assert re.search(r"about \d+ s left in this phase", seen["fine_tune"]) or "almost done with this phase" in seen["fine_tune"]

    # The finished run on the Train page: the plan, the outcome and the notes.
    at = open_page(job, config, workspace, "pages/train.py")
    plan = next(element.value for element in at.markdown if element.value.startswith("**Plan:**"))
    assert epochs_plan(config) in plan
    assert f"a warm-up of the head on cached features (at most {WARMUP} epochs" in plan and f"then {FINE_TUNE} epochs of fine-tuning" in plan
    outcome = at.success[0].value
    assert f"trained {epochs_in_words(spans)}; the model keeps the weights of epoch {summary['best_epoch']}" in outcome
    notes = job.state().notices
    kept = [note for note in notes if note.startswith("The model keeps the weights of epoch")]
    assert kept == [note for note in summary["notes"] if note.startswith("The model keeps the weights of epoch")]
    assert f"epoch {summary['best_epoch']}" in kept[0] and epochs_in_words(spans) in kept[0]
    assert head.stopped_early  # the planted wrong labels stop the warm-up's validation loss from improving
    warm_up_best = best_epoch(history[: head.last_epoch])
    assert any(note.startswith(f"The head's warm-up stopped early after epoch {head.last_epoch}") and f"weights of epoch {warm_up_best} " in note for note in notes)
    assert not any("keeping epoch" in note or f"/{config.planned_epochs}" in note for note in notes)

    # The History: epochs, phases and kept epoch as run.json has them.
    at = open_page(job, config, workspace, "pages/history.py")
    row = at.dataframe[0].value.iloc[0]
    assert row["epochs"] == len(history)
    assert row["phases"] == f"{head.epochs} warm-up + {fine_tune.epochs} fine-tuning"
    assert row["kept epoch"] == summary["best_epoch"]
    assert row["dataset"] == "data"
