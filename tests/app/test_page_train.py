"""The Train page through the router, with the fake engine and canned training events."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.config import AugmentConfig, TrainConfig
from tl_core.data.scan import scan_dataset
from tl_core.events import BatchEnded, PhaseStarted, TrainingFailed, TrainingFinished, TrainingStarted, TrainingStopped
from tl_core.service.jobs import TrainingJob
from tl_core.service.workspace import Workspace

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine, canned_events

APP = str(REPO / "app.py")
OVERFITTING_LABEL = "validation loss rising: overfitting from here"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data", {"ants": 6, "bees": 6}, size=32)


def open_train_page(tmp_path: Path, data_dir: Path | None = None, job: TrainingJob | None = None, with_config: bool = True) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["workspace"] = Workspace.create(tmp_path / "workspaces", runs_root=tmp_path / "runs")
    if data_dir is not None:
        at.session_state["data_dir"] = str(data_dir)
        at.session_state["dataset"] = scan_dataset(data_dir)
        if with_config:
            at.session_state["train_config"] = TrainConfig(data_dir=str(data_dir), out_dir="", epochs=5, image_size=32)
    if job is not None:
        at.session_state["job"] = job
    at.run()
    at.switch_page("pages/train.py").run()
    return at


def running_job(data_dir: Path, tmp_path: Path, epochs: int | None = None) -> TrainingJob:
    """A job fed canned events but never started: its state is "running"."""
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"), epochs=5, image_size=32)
    job = TrainingJob(config)
    for event in canned_events(config, ["ants", "bees"], epochs=epochs):
        job.handle(event)
    return job


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(element.value) for element in at.get(kind))


def chart_specs(at: AppTest) -> str:
    return "\n".join(chart.proto.spec for chart in at.get("plotly_chart"))


def test_without_settings_the_page_explains_where_to_go(tmp_path):
    at = open_train_page(tmp_path)

    assert not at.exception
    assert at.title[0].value == "4 · Train"
    assert "Choose a model and the training settings first" in at.info[0].value
    assert any(link.proto.page == "setup" for link in at.get("page_link"))
    assert not at.get("button")


def test_start_trains_with_the_fake_engine_and_shows_the_result(tmp_path, data_dir):
    at = open_train_page(tmp_path, data_dir)
    assert not at.exception
    assert "MobileNetV2 · feature extraction · the head on cached features (5 epochs) · 32×32 px" in texts(at, "markdown")
    assert "this TensorFlow build has no GPU support (fake engine) · expected to take about" in texts(at, "caption")
    assert "Press **Start training** to begin" in at.info[0].value

    at.button(key="train_start").click().run()
    assert not at.exception
    job = at.session_state["job"]
    assert job.wait(5).status == "finished"
    at.run()

    assert not at.exception
    engine = at.session_state["engine"]
    run_dir = engine.started_configs[0].out_dir
    assert Path(run_dir).parent == tmp_path / "runs"
    assert at.session_state["run_dir"] == run_dir
    assert "Accuracy on held-out images: 83.0%" in at.success[0].value
    # Next to a finished run the estimate speaks of the next one (which reuses the cached images and features).
    assert "· another run with these settings: about" in texts(at, "caption")
    specs = chart_specs(at)
    assert "Loss (lower is better)" in specs and "Accuracy (higher is better)" in specs
    assert OVERFITTING_LABEL in specs
    assert not at.button(key="train_start").disabled
    assert not at.get("progress")
    assert any(link.proto.page == "evaluate" for link in at.get("page_link"))


def test_a_running_job_shows_progress_charts_stop_and_the_overfitting_point(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path)
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    assert "Training" in texts(at, "markdown")
    progress = at.get("progress")[0].proto
    assert "Training the new head on cached features" in progress.text
    assert "epoch 5 of at most 5" in progress.text
    assert "0.5 s per epoch" in progress.text
    assert at.button(key="train_start").disabled
    assert not at.button(key="train_stop").disabled
    assert OVERFITTING_LABEL in chart_specs(at)
    assert "Overfitting from epoch 3." in texts(at, "caption")
    assert "Augmentation is not applied" in texts(at, "markdown")
    assert at.session_state["run_dir"] is None

    at.button(key="train_stop").click().run()
    assert not at.exception
    assert job.state().stop_requested
    assert at.button(key="train_stop").disabled
    assert "Stopping" in texts(at, "markdown")


def test_progress_inside_an_epoch_names_the_batch_and_the_time_left(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path, epochs=2)
    job.handle(BatchEnded("head", 3, 4, 10, {"loss": 0.5}))
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    progress = at.get("progress")[0].proto
    assert "epoch 3 of at most 5, batch 4 of 10" in progress.text
    assert "0.5 s per epoch · at most 1 s left in this phase" in progress.text  # 2.6 epochs left at 0.5 s; the head may stop sooner
    assert progress.value == 48  # (2 epochs + 4/10 of the third) of 5
    assert OVERFITTING_LABEL not in chart_specs(at)


def test_saving_the_files_is_a_phase_of_its_own(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path)
    job.handle(PhaseStarted("export", "Saving model.h5, model.keras, labels.json and reports"))
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    progress = at.get("progress")[0].proto
    assert progress.text == "Saving model.h5, model.keras, labels.json and reports"  # no count, and no estimate to guess from
    assert 0 <= progress.value < 100


def test_a_job_before_its_first_event_says_it_is_starting(tmp_path, data_dir):
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"))
    at = open_train_page(tmp_path, data_dir, TrainingJob(config))

    assert not at.exception
    assert "Starting: loading TensorFlow" in at.get("progress")[0].proto.text
    assert "The loss and accuracy charts appear when the first epoch ends." in texts(at, "caption")


def test_a_failed_job_shows_the_error_and_a_suggestion(tmp_path, data_dir):
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"))
    job = TrainingJob(config)
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["ants", "bees"], counts={}))
    job.handle(TrainingFailed("ResourceExhaustedError: OOM when allocating tensor. The run ran out of memory.", "ResourceExhaustedError"))
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    assert "ResourceExhaustedError: OOM when allocating tensor" in at.error[0].value
    assert "smaller batch size or image size" in texts(at, "markdown")
    assert at.session_state["run_dir"] is None
    assert not at.button(key="train_start").disabled


def test_a_job_stopped_before_any_epoch_leaves_no_model(tmp_path, data_dir):
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"))
    job = TrainingJob(config)
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["ants", "bees"], counts={}))
    job.handle(TrainingStopped("stop requested by the user", 0))
    job.handle(TrainingFinished(status="stopped", run_dir=config.out_dir, test_accuracy=None, seconds=1.0))
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    assert "no model was saved" in at.warning[0].value
    assert at.session_state["run_dir"] is None


def test_a_stopped_job_with_epochs_offers_its_model(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path, epochs=3)
    job.handle(TrainingFinished(status="stopped", run_dir=str(tmp_path / "run"), test_accuracy=0.8, seconds=2.0))
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    assert "Stopped after" in at.success[0].value and "at your request: trained 3 epochs of the head; the model keeps the weights of epoch 3" in at.success[0].value
    assert "Accuracy on held-out images: 80.0%" in at.success[0].value
    assert at.session_state["run_dir"] == str(tmp_path / "run")


def test_the_outcome_compares_the_time_with_the_estimate_plus_the_measured_start_up(tmp_path, data_dir):
    """A run estimates itself once its process has started; the seconds before were measured, and the page counts both."""
    clock = [1000.0]
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"), epochs=5, image_size=32)

    def trainer(config, on_event, stop):
        clock[0] += 6.0  # the training process spawned, the backend imported
        started, *rest = canned_events(config, ["ants", "bees"])
        on_event(dataclasses.replace(started, estimate={"seconds": 20.0, "parts": {"features": 15.0, "head": 5.0}}))
        for event in rest:
            on_event(event)
        clock[0] += 22.0
        on_event(TrainingFinished(status="finished", run_dir=config.out_dir, test_accuracy=0.83, seconds=22.0))

    job = TrainingJob(config, trainer=trainer, clock=lambda: clock[0]).start()
    assert job.wait(5).status == "finished"
    at = open_train_page(tmp_path, data_dir, job)

    assert not at.exception
    assert "Finished in 28 s (estimated: 26 s, with the 6 s the training process took to start)" in at.success[0].value


def test_the_run_stays_visible_after_the_data_changed(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path)
    at = open_train_page(tmp_path, data_dir, job, with_config=False)

    assert not at.exception
    assert "Choose a model and the training settings first" in at.info[0].value
    assert at.get("progress")
    assert at.get("plotly_chart")


def test_coming_back_to_the_page_redraws_the_same_run(tmp_path, data_dir):
    job = running_job(data_dir, tmp_path)
    at = open_train_page(tmp_path, data_dir, job)
    at.switch_page("pages/data.py").run()
    assert not at.exception
    at.switch_page("pages/train.py").run()

    assert not at.exception
    assert at.session_state["job"] is job
    assert not job.state().stop_requested
    assert OVERFITTING_LABEL in chart_specs(at)
    assert json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["x"] == [1, 2, 3, 4, 5]


def test_a_phase_without_a_count_says_when_it_takes_longer_than_estimated(tmp_path, data_dir):
    """Converting the files: the estimate's 14 s, then, past them, that it is taking longer (never 'almost done' for half a minute)."""
    clock = [1000.0]
    config = TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"), epochs=5, image_size=32)
    job = TrainingJob(config, clock=lambda: clock[0])
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["ants", "bees"], counts={}, estimate={"seconds": 60.0, "parts": {"files": 4.0, "portable files": 10.0}}))
    job.handle(PhaseStarted("export", "Converting the model to TensorFlow Lite and ONNX"))
    clock[0] += 5
    at = open_train_page(tmp_path, data_dir, job)
    assert "about 9 s left in this phase (estimated)" in at.get("progress")[0].proto.text
    clock[0] += 20
    at = open_train_page(tmp_path, data_dir, job)
    assert "taking longer than the 14 s estimated for this phase" in at.get("progress")[0].proto.text


@pytest.mark.parametrize(
    ("settings", "said", "not_said"),
    [
        ({}, "mirror images where they pay, for training and a test-time flip", "· test-time flip"),
        ({"augment": False}, "mirror images where they pay, for a test-time flip", "for training"),
        ({"test_time_flip": False}, "· mirror images where they pay, for training, on 12 images", "test-time flip"),
        ({"strategy": "fine_tune"}, "augmented · test-time flip", "mirror images"),
        ({"augmentation": AugmentConfig(turns=True)}, "mirror images and turned views (7 more views of each image) where they pay, for training and answers averaged over all eight", "· test-time flip"),
        ({"strategy": "fine_tune", "augmentation": AugmentConfig(turns=True)}, "augmented, with random quarter turns · answers averaged over the 8 turned and mirrored views", "mirror images"),
        # Fine-tuning's two rates: the head's and the unfrozen backbone layers' (a tenth of it unless set).
        ({"strategy": "fine_tune"}, "learning rate 0.001 for the head, 0.0001 for the backbone", "learning rate 0.001 ·"),
        ({"strategy": "fine_tune", "fine_tune_learning_rate": 3e-5}, "learning rate 0.001 for the head, 3e-05 for the backbone", "0.0001"),
        ({}, "learning rate 0.001 ·", "for the backbone"),
        ({"centre_crop": True}, "32×32 px (the middle of each image) ·", "32×32 px ·"),
        ({}, "32×32 px ·", "the middle of each image"),
    ],
)
def test_the_plan_names_the_settings_the_run_will_use(tmp_path, data_dir, settings, said, not_said):
    """Feature extraction flips at test time only where the mirror images' pass runs, and that pass runs only where it pays."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["workspace"] = Workspace.create(tmp_path / "workspaces", runs_root=tmp_path / "runs")
    at.session_state["data_dir"] = str(data_dir)
    at.session_state["dataset"] = scan_dataset(data_dir)
    at.session_state["train_config"] = TrainConfig(data_dir=str(data_dir), out_dir="", epochs=5, image_size=32, **settings).validated()
    at.run()
    at.switch_page("pages/train.py").run()
    plan = next(element.value for element in at.markdown if element.value.startswith("**Plan:**"))
    assert said in plan and not_said not in plan, plan


def test_the_run_view_keeps_its_place_on_the_page_when_the_run_ends(tmp_path, data_dir):
    """The page reruns once when a run ends: the run's view must sit at the same position in both layouts, or the
    rerun draws it a second time below the old one until the page has finished (seen in the browser for 2-5 s)."""

    def divider_position(at: AppTest) -> int:
        return next(index for index, element in enumerate(at.main.children.values()) if type(element).__name__ == "Divider")

    running = open_train_page(tmp_path, data_dir, running_job(data_dir, tmp_path))
    finished_job = TrainingJob(TrainConfig(data_dir=str(data_dir), out_dir=str(tmp_path / "run"), epochs=5, image_size=32))
    for event in canned_events(finished_job.config, ["ants", "bees"]):
        finished_job.handle(event)
    finished_job.handle(TrainingFinished(status="finished", run_dir=str(tmp_path / "run"), test_accuracy=0.9, seconds=1.0))
    finished = open_train_page(tmp_path, data_dir, finished_job)
    assert running.button(key="train_stop") is not None and finished.session_state["job"].state().status == "finished"
    assert divider_position(running) == divider_position(finished)

    # Inside the run's view, the status (a badge and a progress bar, or the outcome) is one element: the curves and
    # the notes keep their places too.
    def inside_the_view(at: AppTest) -> list[str]:
        view = list(at.main.children.values())[divider_position(at) + 1]
        return [type(element).__name__ for element in view.children.values()]

    assert "Expander" in inside_the_view(running)
    assert inside_the_view(running).index("Expander") == inside_the_view(finished).index("Expander")
