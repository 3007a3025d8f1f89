"""Step 4, Train: start the run chosen on Setup and watch it learn.

The run is a ``TrainingJob`` kept in the session state: it trains in a
child process, so moving to another page and back neither stops it nor
loses its curves (they are redrawn from the job's state). While it runs, a
fragment polls the job once a second and redraws only itself.
"""

import dataclasses

import streamlit as st

from tl_core.config import STRATEGY_TITLES
from tl_core.errors import TLError
from tl_core.insight.curves import overfitting_epoch
from ui.charts import learning_curves

state = st.session_state
engine = state["engine"]
workspace = state["workspace"]

# Phases that loop over epochs; the others (decode, features, evaluate, export) go through images.
EPOCH_PHASES = ("head", "fine_tune", "from_scratch")

st.title("4 · Train")

train_config = state["train_config"]
dataset = state["dataset"]
job = state["job"]

if train_config is None or dataset is None:
    st.info("Choose a model and the training settings first: the Setup page turns your choices into a training plan.")
    st.page_link("pages/setup.py", label="Go to Setup", icon=":material/tune:")
    if job is None:
        st.stop()


def augmentation_text(config) -> str:
    """How the plan augments: feature extraction only through cached mirror images and augmented views."""
    flip = " · test-time flip" if config.uses_test_time_flip else ""
    if not config.augment:
        return "no augmentation" + flip
    if config.strategy == "feature_extraction":
        cached = (["mirror images where they pay"] if config.mirrored_features else []) + ([f"{config.augment_views} augmented views"] if config.augment_views else [])
        return (" and ".join(cached) if cached else "no augmentation (features are cached once)") + flip
    return "augmented" + flip


def duration(seconds: float) -> str:
    """Seconds in words for a person: "45 s", "3 min", "1 h 20 min"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def pace_text(job_state) -> str:
    """ "12 s/epoch · about 1 min left", or "" before the first epoch ends."""
    pace = job_state.seconds_per_epoch
    if pace is None:
        return ""
    parts = [f"{pace:.1f} s/epoch" if pace < 10 else f"{duration(pace)}/epoch"]
    left = job_state.eta_seconds
    if left is not None:
        parts.append("almost done" if left < 1 else f"about {duration(left)} left")
    return " · ".join(parts)


def progress_of(job_state) -> tuple[float, str]:
    """The progress bar's fraction and text for the current phase."""
    if job_state.status == "starting" or not job_state.phase:
        return 0.0, "Starting: loading TensorFlow and checking the data…"
    parts = [job_state.phase_description or job_state.phase]
    if job_state.phase in EPOCH_PHASES and job_state.epochs:
        finished = len(job_state.history)
        in_epoch = job_state.epoch > finished and job_state.total > 0
        fraction = (finished + (job_state.done / job_state.total if in_epoch else 0.0)) / job_state.epochs
        if in_epoch:
            parts.append(f"epoch {job_state.epoch}/{job_state.epochs}, batch {job_state.done}/{job_state.total}")
        else:
            parts.append(f"{finished}/{job_state.epochs} epochs done")
        pace = pace_text(job_state)
        if pace:
            parts.append(pace)
    elif job_state.total:
        fraction = job_state.done / job_state.total
        parts.append(f"{job_state.done:,}/{job_state.total:,}")
    else:
        # A step without a count (saving the files): the bar keeps showing how far training got.
        fraction = len(job_state.history) / job_state.epochs if job_state.epochs else 0.0
    return min(max(fraction, 0.0), 1.0), " · ".join(parts)


def show_curves(history) -> None:
    """Loss and accuracy charts, with the overfitting point marked and explained."""
    if not history:
        st.caption("The loss and accuracy charts appear when the first epoch ends.")
        return
    overfit = overfitting_epoch(history)
    loss_chart, accuracy_chart = learning_curves(history, overfit)
    left, right = st.columns(2)
    left.plotly_chart(loss_chart, width="stretch", key="train_loss_chart")
    right.plotly_chart(accuracy_chart, width="stretch", key="train_accuracy_chart")
    if overfit is not None:
        st.caption(
            f":red[**Overfitting from epoch {overfit}.**] After it the training loss kept falling while the validation loss rose: "
            "the model starts to memorise the training images instead of learning what tells the classes apart. "
            "The run keeps the weights of the epoch with the lowest validation loss; more augmentation, fewer epochs "
            "or a smaller head help next time."
        )


def show_job(job, was_running: bool) -> None:
    """Everything about the job: status, progress, curves, notices and the outcome."""
    job_state = job.state()
    adopted = False  # True when this run's model has just become the one Evaluate and Export show
    if job_state.is_running:
        if job_state.stop_requested:
            st.markdown(f":orange-badge[:material/hourglass_top: Stopping] after the current batch · running for {duration(job_state.elapsed_seconds)}")
        else:
            st.markdown(f":blue-badge[:material/sync: Training] running for {duration(job_state.elapsed_seconds)}")
        fraction, text = progress_of(job_state)
        st.progress(fraction, text=text)
        if job_state.saved_accuracy is not None:
            st.info(
                f"**A model is saved already ({job_state.saved_accuracy:.1%} on held-out images) and ready on the Export page once the run ends.** "
                "The run goes on; a model it tries to improve is saved again only if it does better on the validation images, and Stop keeps the saved one.",
                icon=":material/task_alt:",
            )
    elif job_state.status == "failed":
        st.error(job_state.error)
        st.markdown("If the run ran out of memory or was very slow, try a **smaller batch size or image size** on the Setup page, then start again.")
        st.page_link("pages/setup.py", label="Back to Setup", icon=":material/tune:")
    else:
        epochs_done = len(job_state.history)
        if job_state.test_accuracy is not None:
            adopted = state["adopted_run"] != job_state.run_dir
            if adopted:  # once: a run reopened on the History page afterwards stays the one shown
                state["run_dir"] = state["adopted_run"] = job_state.run_dir
            took = duration(job_state.elapsed_seconds)
            how = f"Finished in {took}." if job_state.status == "finished" else f"Stopped after {epochs_done} epoch{'s' if epochs_done != 1 else ''} ({took}); the best epoch so far was kept."
            st.success(
                f"{how} **Accuracy on held-out images: {job_state.test_accuracy:.1%}** "
                f"(images the model never trained on). Run folder: `{job_state.run_dir}`",
                icon=":material/check_circle:",
            )
        else:
            st.warning("The run stopped before any epoch finished, so no model was saved. Start it again and let at least one epoch finish.")

    show_curves(job_state.history)
    if job_state.notices:
        with st.expander(f"Notes from the run ({len(job_state.notices)})"):
            st.markdown("\n".join(f"- {notice}" for notice in job_state.notices))

    if (was_running and not job_state.is_running) or adopted:
        # Once, when the run ends or its model becomes the current one: redraw the whole page so the
        # buttons and the sidebar catch up. The rerun finds the fragment not polling and the model
        # already adopted, so it cannot loop.
        st.rerun()


running = job is not None and job.state().is_running

if train_config is not None and dataset is not None:
    backbone = next((spec for spec in engine.backbones() if spec.name == train_config.backbone), None)
    size = train_config.image_size or (backbone.default_size if backbone else None)
    epochs = f"{train_config.epochs} epochs"
    if train_config.strategy == "feature_extraction":
        epochs = f"up to {train_config.epochs} head epochs"
    if train_config.uses_warmup and train_config.warmup_epochs:
        epochs += f" after a warm-up of the head (up to {train_config.warmup_epochs} epochs)"
    summary = [
        backbone.display_name if backbone else train_config.backbone,
        STRATEGY_TITLES.get(train_config.strategy, train_config.strategy).lower(),
        epochs,
        f"{size}×{size} px" if size else "default size",
        f"batch {train_config.batch_size}",
        f"learning rate {train_config.learning_rate:g}",
        augmentation_text(train_config),
    ]
    if train_config.class_weights:
        summary.append("class weights")
    st.markdown(f"**Plan:** {' · '.join(summary)}, on {len(dataset.records):,} images in {dataset.num_classes} classes.")
    try:
        estimate = engine.estimate(train_config, dataset).describe()
        # Once a run has cached the images and features, the next one with these settings is much shorter.
        expected = f" · another run with these settings: {estimate}" if job is not None else f" · expected to take {estimate}"
    except TLError:
        expected = ""
    st.caption(f"Device: {engine.device().describe()}{expected}")

    start_column, stop_column, _ = st.columns([1, 1, 4])
    if start_column.button("Start training", type="primary", icon=":material/play_arrow:", disabled=running, key="train_start", width="stretch"):
        try:
            config = dataclasses.replace(train_config, out_dir=str(workspace.new_run_dir(train_config.strategy)))
            state["job"] = engine.start_training(config, workspace)
        except TLError as error:
            st.error(str(error))
        else:
            st.rerun()
    if running:
        stop_column.button(
            "Stop", icon=":material/stop:", key="train_stop", width="stretch", on_click=job.stop, disabled=job.state().stop_requested,
            help="Ends the run after the current batch; the best epoch so far is saved and evaluated.",
        )
        st.caption("Only one run at a time. You can move to other pages: training goes on, and this page shows it again when you come back.")

if job is None:
    st.info("Press **Start training** to begin. The charts update every second while the model trains.")
    st.stop()

st.divider()
st.fragment(show_job, run_every=1.0 if running else None)(job, running)

if not running and state["run_dir"]:
    st.page_link("pages/evaluate.py", label="Next: see what the model gets right and wrong", icon=":material/arrow_forward:")
