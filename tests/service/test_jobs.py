"""Background training jobs: state folding, stop, failure, and the overfitting marker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tl_core.config import TrainConfig
from tl_core.errors import DataError
from tl_core.events import BatchEnded, EpochEnded, PhaseStarted, ProgressUpdated, TrainingFailed, TrainingFinished, TrainingStarted
from tl_core.service.jobs import JobState, TrainingJob, fold_event

from fake_engine import canned_events


def _config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), epochs=5)


def test_events_fold_into_progress_history_and_eta(tmp_path: Path) -> None:
    job = TrainingJob(_config(tmp_path))
    for event in canned_events(_config(tmp_path), ["a", "b"], epochs=2):
        job.handle(event)
    state = job.state()
    assert state.status == "running" and state.is_running
    assert state.phase == "head" and state.epochs == 5 and state.epoch == 2
    assert [entry["val_loss"] for entry in state.history] == [0.80, 0.55]
    assert state.seconds_per_epoch == pytest.approx(0.5)
    assert state.phase_seconds_left() == (pytest.approx(1.5), True)  # three epochs left at half a second each
    assert state.seconds_left() == pytest.approx(1.5)
    assert any("Augmentation is not applied" in notice for notice in state.notices)
    finished = fold_event(state, TrainingFinished(status="finished", run_dir="/runs/x", test_accuracy=0.9, seconds=3.0))
    assert finished.status == "finished" and finished.test_accuracy == 0.9 and finished.seconds_left() is None


def test_progress_and_time_left_are_per_phase_from_the_phase_own_pace(tmp_path: Path) -> None:
    """The head's fast epochs never set the pace of fine-tuning; before a phase measured anything, its estimate stands in."""
    clock = FakeClock(1000.0)
    config = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), strategy="fine_tune", epochs=4).validated()
    job = TrainingJob(config, clock=clock)
    estimate = {"seconds": 260.0, "parts": {"setup": 8.0, "features": 30.0, "head": 2.0, "fine_tune": 200.0, "evaluate": 20.0}}
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["a", "b"], counts={}, estimate=estimate))
    job.handle(PhaseStarted("features", "Reading 100 images", total=100))
    clock.advance(10)
    job.handle(ProgressUpdated("features", 50, 100))
    state = job.state()
    assert state.phase_fraction() == 0.5
    assert state.phase_seconds_left(clock()) == (pytest.approx(10.0), True)  # 50 images in 10 s: 10 s for the other 50
    assert state.seconds_left(clock()) == pytest.approx(10.0 + 2.0 + 200.0 + 20.0)  # then the estimate of the phases after it
    job.handle(PhaseStarted("head", "Warming up the new head", total=200))
    for epoch in range(1, 4):
        clock.advance(0.02)
        job.handle(EpochEnded("head", epoch, 204, {"loss": 1.0 / epoch, "val_loss": 0.5}, 0.02, epoch, 200))
    assert job.state().phase_epoch == 3 and job.state().phase_epochs == 200
    job.handle(PhaseStarted("fine_tune", "Fine-tuning", total=4))
    clock.advance(30)
    job.handle(BatchEnded("fine_tune", 4, 5, 10, {}))
    state = job.state()
    assert state.phase_first_epoch == 4 and state.phase_epoch == 1 and state.phase_epochs == 4
    assert state.seconds_per_epoch is None  # not 0.02 s from the head's epochs
    assert state.phase_seconds_left(clock()) == (pytest.approx(170.0), False)  # the estimate's 200 s less the 30 spent
    clock.advance(30)
    job.handle(EpochEnded("fine_tune", 4, 7, {"loss": 0.3, "val_loss": 0.3}, 60.0, 1, 4))
    clock.advance(25)
    job.handle(EpochEnded("fine_tune", 5, 7, {"loss": 0.2, "val_loss": 0.25}, 50.0, 2, 4))
    state = job.state()
    assert state.seconds_per_epoch == pytest.approx(50.0)  # the first epoch, with the tracing, is left out
    assert state.phase_seconds_left(clock()) == (pytest.approx(100.0), True)
    assert state.seconds_left(clock()) == pytest.approx(120.0)  # and the evaluation's estimate
    assert state.phase_fraction() == pytest.approx(0.5)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_stop_reaches_the_trainer_and_the_state(tmp_path: Path) -> None:
    release = threading.Event()
    seen_stop = []

    def trainer(config, on_event, stop):
        release.wait(5)
        seen_stop.append(stop.requested)

    job = TrainingJob(_config(tmp_path), trainer=trainer).start()
    job.stop("user pressed Stop")
    assert job.state().stop_requested
    release.set()
    state = job.wait(5)
    assert seen_stop == [True]
    assert state.status == "stopped" and state.finished_at >= state.started_at


def test_a_failing_trainer_leaves_a_failed_state_with_the_message(tmp_path: Path) -> None:
    def trainer(config, on_event, stop):
        raise MemoryError("cannot allocate 2.0 GiB")

    state = TrainingJob(_config(tmp_path), trainer=trainer).start().wait(5)
    assert state.status == "failed"
    assert state.error == "MemoryError: cannot allocate 2.0 GiB. The run ran out of memory: try a smaller batch size or image size."


def test_a_user_error_keeps_the_engine_message(tmp_path: Path) -> None:
    def trainer(config, on_event, stop):
        on_event(TrainingFailed("Found 1 class ('a') ...", "DataError"))
        raise DataError("Found 1 class ('a') ...")

    state = TrainingJob(_config(tmp_path), trainer=trainer).start().wait(5)
    assert state.status == "failed" and state.error == "Found 1 class ('a') ..."


def test_a_running_job_keeps_its_workspace_files_after_the_session_is_dropped(tmp_path: Path) -> None:
    import gc

    from tl_core.service.workspace import Workspace

    release = threading.Event()
    workspace = Workspace.create(tmp_path, runs_root=tmp_path / "runs")
    root = workspace.root
    job = TrainingJob(_config(tmp_path), trainer=lambda config, on_event, stop: release.wait(5), keep_alive=(workspace,)).start()
    del workspace, job  # what Streamlit does when a closed tab's session is forgotten
    gc.collect()
    assert root.exists()  # the run may still read the uploaded images
    release.set()


@pytest.mark.slow
def test_a_real_run_trains_in_a_child_process_and_its_events_reach_the_state(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    """Not in the web server's process: Streamlit clears Keras' session after every rerun, which would stall a run there."""
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=3, image_size=32, cache_dir=str(tmp_path / "cache"))
    job = TrainingJob(config).start()
    state = job.wait(300)
    assert state.status == "finished", state.error
    assert len(state.history) == 6 and state.test_accuracy is not None  # 3 epochs, then 3 with the mirror images (a handful of validation images: they pay)
    assert state.saved_accuracy == state.test_accuracy
    assert any(notice.startswith("Estimated time: about") for notice in state.notices)
    assert (tmp_path / "run" / "model.h5").exists()
    assert not any(thread.name.startswith("training ") for thread in threading.enumerate())  # the relay thread has ended


@pytest.mark.slow
def test_a_child_run_stops_on_request_and_a_failing_one_says_why(tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    config = TrainConfig(data_dir=str(tiny_dataset), out_dir=str(tmp_path / "run"), epochs=500, image_size=32, batch_size=2, cache_dir=str(tmp_path / "cache"))
    job = TrainingJob(config).start()
    deadline = time.time() + 300
    while not job.state().history and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    state = job.wait(300)
    assert state.status == "stopped" and 1 <= len(state.history) < 500
    assert "Stopped: stop requested by the user." in state.notices

    missing = TrainingJob(TrainConfig(data_dir=str(tmp_path / "nowhere"), out_dir=str(tmp_path / "failed"))).start().wait(300)
    assert missing.status == "failed" and "does not exist" in missing.error


def test_the_head_first_epoch_is_mostly_tracing_and_early_stopping_is_expected(tmp_path: Path) -> None:
    """Feature extraction: 200 head epochs at most, about 40 in earlier runs here, 0.02 s each once traced. The first epoch's
    0.6 s is mostly tracing, so the estimate's pace stands in; the epochs left follow early stopping, not the 200."""
    clock = FakeClock(0.0)
    config = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run")).validated()  # feature extraction: patience 20
    job = TrainingJob(config, clock=clock)
    estimate = {
        "seconds": 30.0, "parts": {"setup": 8.0, "features": 20.0, "head": 1.8}, "epochs": {"head": 200},
        "expected_epochs": {"head": 40}, "epoch_seconds": {"head": 0.02}, "trace_seconds": {"head": 1.0},
    }
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["a", "b"], counts={}, estimate=estimate))
    job.handle(PhaseStarted("head", "Training the new head", total=200))
    job.handle(EpochEnded("head", 1, 200, {"loss": 1.0, "val_loss": 0.5}, 0.6, 1, 200))
    state = job.state()
    assert state.seconds_per_epoch == pytest.approx(0.02)
    assert state.epochs_left() == 39 and state.phase_seconds_left(clock()) == (pytest.approx(0.78), True)
    for epoch in range(2, 46):  # the validation loss improves until epoch 30, then stalls
        job.handle(EpochEnded("head", epoch, 200, {"loss": 1.0 / epoch, "val_loss": 0.5 - 0.01 * min(epoch, 30)}, 0.03, epoch, 200))
    state = job.state()
    assert state.seconds_per_epoch == pytest.approx(0.03)
    assert state.epochs_left() == 5  # past the 40 expected: 15 epochs without improvement of the 20 that stop it


def test_time_left_during_a_first_head_counts_the_mirror_images_still_to_come(tmp_path: Path) -> None:
    """The mirror images' pass follows the first model where the estimate counts it; once that model is saved, it is under way or skipped."""
    clock = FakeClock(0.0)
    config = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run")).validated()
    estimate = {
        "seconds": 60.0, "parts": {"setup": 2.0, "features": 25.0, "mirror features": 25.0, "head": 1.0, "mirror head": 1.0, "files": 2.0},
        "epochs": {"head": 400}, "expected_epochs": {"head": 50}, "epoch_seconds": {"head": 0.02}, "trace_seconds": {"head": 1.0},
    }
    job = TrainingJob(config, clock=clock)
    job.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["a", "b"], counts={}, estimate=estimate))
    job.handle(PhaseStarted("head", "Training the new head", total=200))
    job.handle(EpochEnded("head", 1, 200, {"loss": 1.0, "val_loss": 0.5}, 0.6, 1, 200))
    state = job.state()
    phase_left, _ = state.phase_seconds_left(clock())
    assert state.seconds_left(clock()) == pytest.approx(phase_left + 25.0 + 2.0)  # the mirror images' pass, then the files
    without = TrainingJob(config, clock=clock)
    plain = {**estimate, "parts": {name: value for name, value in estimate["parts"].items() if not name.startswith("mirror")}}
    without.handle(TrainingStarted(config=config.to_dict(), device={}, class_names=["a", "b"], counts={}, estimate=plain))
    without.handle(PhaseStarted("head", "Training the new head", total=200))
    without.handle(EpochEnded("head", 1, 200, {"loss": 1.0, "val_loss": 0.5}, 0.6, 1, 200))
    assert without.state().seconds_left(clock()) == pytest.approx(phase_left + 2.0)



def test_the_seconds_before_the_run_start_event_are_its_start_up(tmp_path: Path) -> None:
    """Spawning the training process and importing the backend come before the run's own estimate: the job measures them."""
    config = _config(tmp_path)
    started = TrainingStarted(config=config.to_dict(), device={}, class_names=["a", "b"], counts={}, estimate={"seconds": 20.0})
    assert fold_event(JobState(started_at=1000.0), started, 1006.5).start_up_seconds == pytest.approx(6.5)
    assert fold_event(JobState(), started, 1006.5).start_up_seconds is None  # a job that never started measures nothing
    assert JobState(started_at=1000.0).start_up_seconds is None  # nor before the event


def test_a_child_process_job_files_its_start_up_for_its_device(tmp_path: Path) -> None:
    """What ``_relay_child`` does with the start event: the next estimates on that device learn the start-up from it."""
    from tl_core.device import DeviceInfo
    from tl_core.training.timings import learned_start_up

    clock = FakeClock(1007.0)
    config = TrainConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    job = TrainingJob(config, clock=clock)
    job._state = JobState(status="starting", started_at=1000.0)
    device = DeviceInfo("CPU", "CPU", cpu_count=2)
    event = TrainingStarted(config=config.to_dict(), device=device.to_dict(), class_names=["a", "b"], counts={}, estimate={"seconds": 20.0})
    job.handle(event)
    job._remember_start_up(event)
    assert learned_start_up(device.key, config.cache_dir) == pytest.approx(7.0)
    assert learned_start_up("jax GPU:other x1", config.cache_dir) is None
