"""A training run in a process of its own, with a state anyone can poll.

The app starts a ``TrainingJob`` and returns at once; a page that wants to
show progress asks ``job.state()`` (cheap, thread-safe) as often as it
likes, and ``job.stop()`` asks the run to end after the current batch.
The job knows nothing about Streamlit: it folds the engine's events into a
``JobState`` snapshot.

The run trains in a child process (``multiprocessing``, started with
``spawn``), not in a thread of the web server: Streamlit clears Keras'
global state after every rerun of a page (``keras.backend.clear_session()``,
which also empties TensorFlow's kernel cache), and a page that polls a run
reruns every second. A run in the server's process then had its compiled
functions rebuilt over and over, and on a slow machine never got past its
first batch. In its own process nothing the server does touches it, its GPU
memory is returned when it ends, and the server stays responsive. A thread
relays the child's events into the state.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tl_core.config import TrainConfig
from tl_core.events import (
    BatchEnded,
    EpochEnded,
    Event,
    ModelSaved,
    Notice,
    PhaseStarted,
    ProgressUpdated,
    StopRequest,
    TrainingFailed,
    TrainingFinished,
    TrainingStarted,
    TrainingStopped,
)
from tl_core.training.timings import MIRROR_FEATURES, record_start_up

RUNNING = "running"
FINISHED = "finished"
STOPPED = "stopped"
FAILED = "failed"


# Phases that loop over epochs; the others (decode, features, evaluate, export) go through images or files.
EPOCH_PHASES = ("head", "fine_tune", "from_scratch")
# The order of a run's phases, and the parts of the time estimate (``Estimate.parts``) each one spends.
PHASE_ORDER = ("decode", "features", "head", "fine_tune", "from_scratch", "evaluate", "export")
PHASE_PARTS = {
    "decode": ("decode",), "features": ("features",), "head": ("head",), "fine_tune": ("fine_tune", "full_fine_tune"),
    "from_scratch": ("from_scratch",), "evaluate": ("evaluate",), "export": ("files", "portable files"),
}


@dataclass(frozen=True)
class JobState:
    """What a training job is doing, as of the last event.

    Progress and time left are per phase: a phase's pace comes from its own
    epochs (or images) only, since the head's epochs on cached features take a
    fraction of a second and fine-tuning's take minutes. Before a phase has
    measured anything, its time comes from the run's estimate.

    Attributes:
        status: ``"starting"``, ``"running"``, ``"finished"``, ``"stopped"`` or ``"failed"``.
        phase: The current phase (``"decode"``, ``"features"``, ``"head"``, ``"fine_tune"`` ...).
        phase_description: The phase in words.
        done: Items done in the current phase (images, or batches in an epoch).
        total: Items in the current phase (images, or batches in an epoch).
        epoch: The epoch under way or last finished (1-based, counted across phases).
        epochs: Planned epochs of the run (the warm-up's count is an upper bound until fine-tuning starts).
        history: One dict per finished epoch (loss, accuracy, val_loss, val_accuracy, seconds, phase).
        notices: Messages of the run worth showing (cache hits, skipped files, early stopping).
        error: The failure message, when the run failed.
        run_dir: The run folder.
        device: The device description from the start event.
        started_at: Clock time when the job started.
        finished_at: Clock time when it ended (0 while running).
        stop_requested: True once a stop was asked for.
        test_accuracy: Accuracy on the held-out split, when finished.
        saved_accuracy: The held-out accuracy of the model already saved in the run folder, while the run may still
            improve it (feature extraction's mirror images); None before a model is saved.
        estimate: The run's time estimate (``Estimate.to_dict()``), from the start event.
        phase_started_at: Clock time the current phase began.
        epoch_started_at: Clock time the current epoch began (the phase's start, or the last epoch's end).
        phase_first_epoch: The run's epoch number of the current phase's first epoch.
        phase_epochs: Epochs the current phase runs at most (0 for phases that are not epochs).
        planned_phase_epochs: The most epochs each phase of the run runs (``TrainConfig.planned_phase_epochs``).
        patience: Epochs without a better validation loss before a phase stops early (0: never).
        start_up_seconds: From the job's start to the run's start event: the training process spawned, the Keras
            backend imported, the folder scanned (None before that event). The run's estimate starts after it.
    """

    status: str = "starting"
    phase: str = ""
    phase_description: str = ""
    done: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    history: tuple[dict, ...] = ()
    notices: tuple[str, ...] = ()
    error: str = ""
    run_dir: str = ""
    device: dict = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    stop_requested: bool = False
    test_accuracy: float | None = None
    saved_accuracy: float | None = None
    estimate: dict = field(default_factory=dict)
    phase_started_at: float = 0.0
    epoch_started_at: float = 0.0
    phase_first_epoch: int = 0
    phase_epochs: int = 0
    planned_phase_epochs: dict = field(default_factory=dict)
    patience: int = 0
    start_up_seconds: float | None = None

    @property
    def is_running(self) -> bool:
        return self.status in ("starting", RUNNING)

    @property
    def in_epochs(self) -> bool:
        """The current phase loops over epochs (the head, fine-tuning, training from scratch)."""
        return self.phase in EPOCH_PHASES

    @property
    def phase_history(self) -> list[dict]:
        """The finished epochs of the current phase."""
        return [entry for entry in self.history if entry.get("phase") == self.phase and entry.get("epoch", 0) >= self.phase_first_epoch]

    @property
    def phase_epoch(self) -> int:
        """The epoch of the current phase under way or last finished (1-based within the phase)."""
        return max(self.epoch - self.phase_first_epoch + 1, len(self.phase_history), 0) if self.in_epochs else 0

    @property
    def epoch_under_way(self) -> bool:
        """Batches of an epoch that has not finished yet were reported."""
        return self.in_epochs and self.epoch > len(self.history) and self.total > 0

    @property
    def seconds_per_epoch(self) -> float | None:
        """The pace of the current phase, from its own epochs; None before its first epoch finished.

        The first epoch carries the tracing of the compiled steps, so once there are more it is left
        out. Alone, it counts less the tracing the estimate allows for the phase; where the estimate's
        epochs are shorter than that tracing (the head's epochs on cached features take milliseconds),
        the first epoch says little about the others, and the estimate's own pace stands in.
        """
        seconds = [entry["seconds"] for entry in self.phase_history]
        if len(seconds) > 1:
            return sum(seconds[1:]) / (len(seconds) - 1)
        if not seconds:
            return None
        group = self._estimate_group()
        trace = float((self.estimate.get("trace_seconds") or {}).get(group, 0.0))
        estimated = (self.estimate.get("epoch_seconds") or {}).get(group)
        if estimated is not None and estimated < trace:
            return float(estimated)
        return seconds[0] - trace if seconds[0] - trace >= 0.25 * seconds[0] else seconds[0]

    def _estimate_group(self) -> str:
        """The estimate's name of the current phase (full fine-tuning trains in the phase ``fine_tune``)."""
        planned = self.estimate.get("epochs") or {}
        return next((name for name in (self.phase, "full_fine_tune") if name in planned), self.phase)

    def epochs_left(self) -> int:
        """Epochs the current phase still runs: its planned ones, or fewer where early stopping is expected to end it.

        With patience, a phase runs at least until ``patience`` epochs have passed without a better
        validation loss; the estimate says how many epochs such a phase ran in earlier runs here.
        """
        finished = len(self.phase_history)
        left = max(self.phase_epochs - finished, 0)
        expected = (self.estimate.get("expected_epochs") or {}).get(self._estimate_group())
        if not self.patience or not expected:
            return left
        best = min(range(len(self.history)), key=lambda index: self.history[index].get("val_loss", float("inf")), default=None)
        since_best = sum(1 for entry in self.phase_history if best is None or entry["epoch"] > self.history[best]["epoch"])
        return min(left, max(expected - finished, self.patience - since_best, 0))

    def phase_fraction(self) -> float:
        """How far the current phase is, from 0 to 1: epochs (with the share of the epoch under way), or items."""
        if self.in_epochs:
            if not self.phase_epochs:
                return 0.0
            finished = len(self.phase_history)
            under_way = self.done / self.total if self.epoch_under_way else 0.0
            return min((finished + under_way) / self.phase_epochs, 1.0)
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def phase_seconds_left(self, now: float | None = None) -> tuple[float | None, bool]:
        """Seconds the current phase still needs, and whether that comes from the phase's own measured pace.

        For a phase of epochs: its remaining epochs at its own pace (the warm-up's at most, since early
        stopping may end it sooner). For a phase of images: the images left at the rate so far. Before
        either is measured: what the estimate gave the phase, less the time spent in it (None when unknown).
        """
        now = time.time() if now is None else now
        if self.in_epochs:
            pace = self.seconds_per_epoch
            if pace is not None:
                under_way = self.done / self.total if self.epoch_under_way else 0.0
                return max(self.epochs_left() - under_way, 0.0) * pace, True
        elif self.total and self.done and now > self.phase_started_at:
            rate = self.done / (now - self.phase_started_at)
            return (self.total - self.done) / rate, True
        estimated = self.estimated_seconds(self.phase)
        if estimated is None:
            return None, False
        return max(estimated - (now - self.phase_started_at), 0.0), False

    def estimated_seconds(self, phase: str) -> float | None:
        """What the run's estimate gave a phase (None when the estimate has no part for it)."""
        parts = self.estimate.get("parts") or {}
        found = [parts[name] for name in PHASE_PARTS.get(phase, ()) if name in parts]
        return float(sum(found)) if found else None

    def seconds_left(self, now: float | None = None) -> float | None:
        """Rough time left for the whole run: the current phase's, plus the estimate of the phases still to come; None when not running."""
        if not self.is_running or not self.phase:
            return None
        current, _ = self.phase_seconds_left(now)
        if current is None:
            return None
        position = PHASE_ORDER.index(self.phase) if self.phase in PHASE_ORDER else len(PHASE_ORDER)
        later = sum(self.estimated_seconds(phase) or 0.0 for phase in PHASE_ORDER[position + 1 :])
        if self.phase == "head" and self.saved_accuracy is None:
            # A first head whose run counts on the mirror images: their pass of the backbone comes after the first model.
            later += float((self.estimate.get("parts") or {}).get(MIRROR_FEATURES, 0.0))
        return current + later

    def elapsed_seconds(self, now: float | None = None) -> float:
        end = self.finished_at or (time.time() if now is None else now)
        return max(end - self.started_at, 0.0) if self.started_at else 0.0


class TrainingJob:
    """Runs ``tl_core.advice.auto.run_training`` in a child process and folds its events into a ``JobState``.

    Args:
        config: The run's settings.
        trainer: A function that trains in this process instead (``train(config, on_event, stop)``),
            in a daemon thread: fakes in tests. None (the default) trains the real way, in a child process.
        keep_alive: Objects the run needs until it ends, such as the session
            workspace holding the images: a browser tab closed mid-run drops the
            session, but the job keeps these (and so their files) alive until the run ends.
        created_by: Who started the run on a shared app (``RunSummary.created_by``; the child process records it).
        clock: The time in seconds (``time.time``; tests give a fake one), for the state's times and paces.
    """

    def __init__(
        self, config: TrainConfig, trainer: Callable | None = None, keep_alive: tuple = (), created_by: str = "", backend: str | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.created_by = created_by
        self.backend = backend
        self._trainer = trainer
        self._keep_alive = keep_alive
        self._stop = StopRequest()
        self._lock = threading.Lock()
        self._state = JobState(run_dir=config.out_dir)
        self._thread: threading.Thread | None = None
        self._context = multiprocessing.get_context("spawn")
        self._child_stop = self._context.Event() if trainer is None else None

    def start(self) -> TrainingJob:
        self._state = replace(self._state, status="starting", started_at=self.clock())
        work = self._relay_child if self._trainer is None else self._work
        self._thread = threading.Thread(target=work, name=f"training {self.config.out_dir}", daemon=True)
        self._thread.start()
        return self

    def stop(self, reason: str = "stop requested by the user") -> None:
        self._stop.request(reason)
        if self._child_stop is not None:
            self._child_stop.set()
        with self._lock:
            self._state = replace(self._state, stop_requested=True)

    def state(self) -> JobState:
        with self._lock:
            return self._state

    def wait(self, timeout: float | None = None) -> JobState:
        """Blocks until the job ends (or ``timeout`` seconds pass) and returns its state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state()

    def _work(self) -> None:
        try:
            self._trainer(self.config, on_event=self.handle, stop=self._stop)
        except Exception as error:  # noqa: BLE001 - the failure is shown in the state, never lost
            if self.state().status != FAILED:
                from tl_core.training.run import describe_failure

                self.handle(TrainingFailed(describe_failure(error), type(error).__name__))
        finally:
            self._finish()

    def _relay_child(self) -> None:
        """Starts the child process and folds the events it sends until it ends."""
        events = self._context.Queue()
        child = self._context.Process(
            target=train_in_child, args=(self.config, events, self._child_stop, self.created_by, self.backend), name=f"training {self.config.out_dir}", daemon=True,
        )
        try:
            child.start()
            while True:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    if child.is_alive():
                        continue
                    break  # ended without its last word (killed, out of memory)
                if event is None:
                    break
                self.handle(event)
                if isinstance(event, TrainingStarted):
                    self._remember_start_up(event)
            child.join(30)
            if child.exitcode not in (0, None) and self.state().is_running:
                self.handle(TrainingFailed(
                    f"The training process ended unexpectedly (exit code {child.exitcode}); the operating system may have stopped it for lack of memory. "
                    "Try a smaller batch size or image size.", "ProcessError",
                ))
        except Exception as error:  # noqa: BLE001 - a child that cannot start is a failed run, shown in the state
            self.handle(TrainingFailed(f"The training process could not run: {type(error).__name__}: {error}", type(error).__name__))
        finally:
            events.close()
            self._finish()

    def _remember_start_up(self, event: TrainingStarted) -> None:
        """Files how long this process took to start, for the next estimates on its device (``learned_start_up``)."""
        from tl_core.device import DeviceInfo

        seconds = self.state().start_up_seconds
        if seconds is not None:
            with contextlib.suppress(OSError):  # an estimate's detail is not worth failing the run for
                record_start_up(seconds, DeviceInfo.from_dict(event.device).key, self.config.cache_dir)

    def _finish(self) -> None:
        with self._lock:
            if self._state.is_running:  # the trainer returned without a final event
                self._state = replace(self._state, status=STOPPED if self._stop.requested else FINISHED)
            self._state = replace(self._state, finished_at=self.clock())
        self._keep_alive = ()  # the run no longer needs the session's files

    def handle(self, event: Event) -> None:
        """Folds one event into the state (public so tests can feed canned events)."""
        with self._lock:
            self._state = fold_event(self._state, event, self.clock())


def train_in_child(config: TrainConfig, events, stop_flag, created_by: str = "", backend: str | None = None) -> None:
    """The child process's work: trains, putting every event on ``events`` and None when done.

    ``stop_flag`` is a ``multiprocessing.Event`` the parent sets to stop the run after the current batch;
    ``created_by`` goes into the run's ``run.json``; ``backend`` is the Keras backend the run uses
    (None: ``auto``), chosen before Keras is imported here.
    """
    from tl_core.backend import select_backend
    from tl_core.errors import TLError

    try:
        select_backend(backend)
    except TLError as error:
        events.put(TrainingFailed(str(error), type(error).__name__))
        events.put(None)
        return
    from tl_core.advice.auto import run_training
    from tl_core.training.run import describe_failure

    failed = []

    def send(event: Event) -> None:
        if isinstance(event, TrainingFailed):
            failed.append(event)
        events.put(event)

    try:
        run_training(config, on_event=send, stop=StopRequest(_flag=stop_flag, reason="stop requested by the user"), created_by=created_by)
    except Exception as error:  # noqa: BLE001 - sent to the parent, whose state shows it
        if not failed:
            events.put(TrainingFailed(describe_failure(error), type(error).__name__))
    finally:
        events.put(None)
        events.close()
        events.join_thread()


def fold_event(state: JobState, event: Event, now: float | None = None) -> JobState:
    """The state after ``event`` at clock time ``now`` (default: ``time.time()``): a pure function, so it is easy to test."""
    now = time.time() if now is None else now
    if isinstance(event, TrainingStarted):
        config = TrainConfig.from_dict(event.config)
        return replace(
            state, status=RUNNING, device=event.device, epochs=config.planned_epochs, estimate=dict(event.estimate),
            planned_phase_epochs=config.planned_phase_epochs, patience=config.early_stopping_patience or 0,
            start_up_seconds=max(now - state.started_at, 0.0) if state.started_at else None,
        )
    if isinstance(event, PhaseStarted):
        epochs = event.total if event.phase in EPOCH_PHASES else 0
        return replace(
            state, phase=event.phase, phase_description=event.description, done=0, total=0 if epochs else event.total,
            phase_started_at=now, epoch_started_at=now, phase_first_epoch=len(state.history) + 1, phase_epochs=epochs,
        )
    if isinstance(event, ProgressUpdated):
        return replace(state, done=event.done, total=event.total)
    if isinstance(event, BatchEnded):
        return replace(state, epoch=event.epoch, done=event.batch, total=event.batches)
    if isinstance(event, EpochEnded):
        entry = {"epoch": event.epoch, "phase": event.phase, "seconds": event.seconds, **event.metrics}
        return replace(
            state, epoch=event.epoch, epochs=event.epochs, history=state.history + (entry,), epoch_started_at=now,
            phase_epochs=max(state.phase_epochs, event.phase_epochs), done=0, total=0,
        )
    if isinstance(event, Notice):
        return replace(state, notices=state.notices + (event.message,))
    if isinstance(event, ModelSaved):
        return replace(state, saved_accuracy=event.test_accuracy, run_dir=event.run_dir)
    if isinstance(event, TrainingStopped):
        return replace(state, notices=state.notices + (f"Stopped: {event.reason}.",))
    if isinstance(event, TrainingFinished):
        return replace(state, status=event.status, test_accuracy=event.test_accuracy, run_dir=event.run_dir)
    if isinstance(event, TrainingFailed):
        return replace(state, status=FAILED, error=event.message)
    return state
