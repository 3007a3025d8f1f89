"""Step 4, Train: start the run chosen on Setup and watch it learn.

The run is a ``TrainingJob`` kept in the session state: it trains in a
child process, so moving to another page and back neither stops it nor
loses its curves (they are redrawn from the job's state). While it runs, a
fragment polls the job once a second and redraws only itself.
"""

import dataclasses
import time

import streamlit as st

from tl_core.config import STRATEGY_TITLES, epochs_plan
from tl_core.errors import TLError
from tl_core.insight.curves import best_epoch, epochs_in_words, overfitting_epoch, phase_spans
from ui.charts import learning_curves
from ui.weights import weights_panel

state = st.session_state
engine = state["engine"]
workspace = state["workspace"]

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
    turns = bool(config.augmentation.turns) and config.mirrors
    flip = (" · answers averaged over the 8 turned and mirrored views" if turns else " · test-time flip") if config.uses_test_time_flip else ""
    if config.strategy == "feature_extraction" and config.mirrored_features:
        # The mirror images' pass runs only where it is expected to pay; the test-time flip needs it, so it is as conditional.
        uses = (["training"] if config.augment else []) + ([("answers averaged over all eight" if turns else "a test-time flip")] if config.uses_test_time_flip else [])
        views = "mirror images and turned views (7 more views of each image)" if turns else "mirror images"
        mirrors = f"{views} where they pay" + (f", for {' and '.join(uses)}" if uses else "")
        return " and ".join([mirrors] + ([f"{config.augment_views} augmented views"] if config.augment and config.augment_views else []))
    if not config.augment:
        return "no augmentation" + flip
    if config.strategy == "feature_extraction":
        return (f"{config.augment_views} augmented views" if config.augment_views else "no augmentation (features are cached once)") + flip
    return ("augmented, with random quarter turns" if config.augmentation.turns else "augmented") + flip


def learning_rate_text(config) -> str:
    """The plan's learning rates: fine-tuning trains the head and the unfrozen backbone layers at different rates."""
    if config.uses_warmup:
        return f"learning rate {config.learning_rate:g} for the head, {config.backbone_learning_rate:g} for the backbone"
    return f"learning rate {config.learning_rate:g}"


def duration(seconds: float) -> str:
    """Seconds in words for a person: "45 s", "3 min", "1 h 20 min"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def time_left_text(job_state, now: float | None = None) -> str:
    """ "about 4 min left in this phase, 5 min in all", from the phase's own pace, or the estimate before it is measured."""
    phase_left, measured = job_state.phase_seconds_left(now)
    if phase_left is None:
        return ""
    total_left = job_state.seconds_left(now)
    countable = job_state.in_epochs or job_state.total > 0  # a phase of epochs or images measures its own pace
    if phase_left < 1 and not measured:
        estimated = job_state.estimated_seconds(job_state.phase) or 0.0
        return f"taking longer than the {duration(estimated)} estimated for this phase"
    about = "at most" if job_state.phase == "head" and measured else "about"  # early stopping may end the head's epochs sooner
    text = "almost done with this phase" if phase_left < 1 else f"{about} {duration(phase_left)} left in this phase"
    if total_left is not None and total_left - phase_left >= 1:
        text += f", {duration(total_left)} in all"
    if measured:
        return text
    return text + (" (estimated until its first epoch ends)" if job_state.in_epochs else " (estimated until the first images are through)" if countable else " (estimated)")


def progress_of(job_state, now: float | None = None) -> tuple[float, str]:
    """The progress bar's fraction and text: the current phase, from its own count and pace."""
    if job_state.status == "starting" or not job_state.phase:
        return 0.0, "Starting: loading TensorFlow and checking the data…"
    parts = [job_state.phase_description or job_state.phase]
    if job_state.in_epochs and job_state.phase_epochs:
        at_most = "at most " if job_state.phase == "head" else ""
        epoch = f"epoch {max(job_state.phase_epoch, 1)} of {at_most}{job_state.phase_epochs}"
        if job_state.phase_first_epoch > 1:
            epoch += f" (epoch {job_state.phase_first_epoch + max(job_state.phase_epoch, 1) - 1} of the run)"
        if job_state.epoch_under_way:
            epoch += f", batch {job_state.done} of {job_state.total}"
        parts.append(epoch)
        pace = job_state.seconds_per_epoch
        if pace is not None:
            parts.append(f"{pace:.1f} s per epoch" if pace < 10 else f"{duration(pace)} per epoch")
    elif job_state.total:
        parts.append(f"{job_state.done:,} of {job_state.total:,}")
    left = time_left_text(job_state, now)
    if left:
        parts.append(left)
    fraction = job_state.phase_fraction()
    if not job_state.in_epochs and not job_state.total:
        # A step without a count (saving the files): the bar follows the time the estimate gave it.
        estimated = job_state.estimated_seconds(job_state.phase)
        elapsed = (now or time.time()) - job_state.phase_started_at
        fraction = min(elapsed / estimated, 0.95) if estimated else 0.0
    return min(max(fraction, 0.0), 1.0), " · ".join(parts)


def show_curves(history, kept_epoch: int | None = None) -> None:
    """Loss and accuracy charts, with the overfitting point marked and explained (judged within each phase)."""
    if not history:
        st.caption("The loss and accuracy charts appear when the first epoch ends.")
        return
    overfit = overfitting_epoch(history, kept_epoch=kept_epoch)
    loss_chart, accuracy_chart = learning_curves(history, overfit)
    left, right = st.columns(2)
    left.plotly_chart(loss_chart, width="stretch", key="train_loss_chart")
    right.plotly_chart(accuracy_chart, width="stretch", key="train_accuracy_chart")
    if overfit is not None:
        kept = kept_epoch or best_epoch(history)
        st.caption(
            f":red[**Overfitting from epoch {overfit}.**] After it the training loss kept falling while the validation loss rose: "
            "the model started to memorise the training images instead of learning what tells the classes apart. "
            f"The run keeps the weights of epoch {kept}, its lowest validation loss; more augmentation, fewer epochs "
            "or a smaller head help next time."
        )


def outcome_text(job_state, now: float) -> str:
    """ "Finished in 9 min (estimated: 8 min, with the 6 s the training process took to start): 26 epochs: ...; the model keeps the weights of epoch 23." """
    took = duration(job_state.elapsed_seconds(now))
    estimated = job_state.estimate.get("seconds")
    start_up = job_state.start_up_seconds
    if estimated and start_up:  # the run estimates itself once started; the seconds before that were measured
        took += f" (estimated: {duration(estimated + start_up)}, with the {duration(start_up)} the training process took to start)"
    elif estimated:
        took += f" (estimated: {duration(estimated)})"
    finished = job_state.status == "finished"
    spans = phase_spans(job_state.history, job_state.planned_phase_epochs if finished else None)  # a stopped run's last phase was cut short by the stop
    kept = best_epoch(job_state.history)
    story = f"trained {epochs_in_words(spans)}" + (f"; the model keeps the weights of epoch {kept}, the lowest validation loss." if kept else ".")
    return f"Finished in {took}: {story}" if finished else f"Stopped after {took}, at your request: {story}"


def show_job(job, was_running: bool) -> None:
    """Everything about the job: status, progress, curves, notices and the outcome."""
    job_state = job.state()
    now = job.clock()
    adopted = False  # True when this run's model has just become the one Evaluate and Export show
    # The status is one element however many lines it has (running: a badge and a progress bar; finished: the
    # outcome), so the curves and notes below keep their places when the run ends and the page reruns. (The progress
    # bar may still show under the outcome until that rerun ends, under 2 s: Streamlit clears stale lines then.)
    with st.container():
        if job_state.is_running:
            if job_state.stop_requested:
                st.markdown(f":orange-badge[:material/hourglass_top: Stopping] after the current batch · running for {duration(job_state.elapsed_seconds(now))}")
            else:
                st.markdown(f":blue-badge[:material/sync: Training] running for {duration(job_state.elapsed_seconds(now))}")
            fraction, text = progress_of(job_state, now)
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
            if job_state.test_accuracy is not None:
                adopted = state["adopted_run"] != job_state.run_dir
                if adopted:  # once: a run reopened on the History page afterwards stays the one shown
                    state["run_dir"] = state["adopted_run"] = job_state.run_dir
                st.success(
                    f"{outcome_text(job_state, now)} **Accuracy on held-out images: {job_state.test_accuracy:.1%}** "
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
    epochs = epochs_plan(train_config)
    summary = [
        backbone.display_name if backbone else train_config.backbone,
        STRATEGY_TITLES.get(train_config.strategy, train_config.strategy).lower(),
        epochs,
        (f"{size}×{size} px" if size else "default size") + (" (the middle of each image)" if train_config.crops_centre else ""),
        f"batch {train_config.batch_size}",
        learning_rate_text(train_config),
        augmentation_text(train_config),
    ]
    if train_config.class_weights:
        summary.append("class weights")
    st.markdown(f"**Plan:** {' · '.join(summary)}, on {len(dataset.records):,} images in {dataset.num_classes} classes.")
    try:
        estimate = engine.estimate(train_config, dataset)
        # Once a run has cached the images and features, the next one with these settings is shorter; the estimate learns from each run.
        expected = f" · another run with these settings: {estimate.describe()}" if job is not None else f" · expected to take {estimate.describe()}"
        if estimate.learned_from:
            expected += f" (the arithmetic corrected by what {estimate.learned_from} earlier run{'s' if estimate.learned_from != 1 else ''} here took)"
    except TLError:
        expected = ""
    st.caption(f"Device: {engine.device().describe()}{expected}")

    ready = train_config.weights != "imagenet" or not train_config.uses_features or weights_panel(engine, train_config.backbone, "train_weights")
    start_column, stop_column, _ = st.columns([1, 1, 4])
    if start_column.button("Start training", type="primary", icon=":material/play_arrow:", disabled=running or not ready, key="train_start", width="stretch"):
        try:
            config = dataclasses.replace(train_config, out_dir=str(workspace.new_run_dir(train_config.strategy)))
            state["job"] = engine.start_training(config, workspace)
        except TLError as error:
            st.error(str(error))
        else:
            st.rerun()
    # One element whether the run goes on or not: the run's view below keeps its place on the page when the run
    # ends, so the page's rerun replaces it instead of drawing it a second time for a moment.
    while_running = st.container()
    if running:
        stop_column.button(
            "Stop", icon=":material/stop:", key="train_stop", width="stretch", on_click=job.stop, disabled=job.state().stop_requested,
            help="Ends the run after the current batch; the best epoch so far is saved and evaluated.",
        )
        while_running.caption("Only one run at a time. You can move to other pages: training goes on, and this page shows it again when you come back.")

if job is None:
    st.info("Press **Start training** to begin. The charts update every second while the model trains.")
    st.stop()

st.divider()
st.fragment(show_job, run_every=1.0 if running else None)(job, running)

if not running and state["run_dir"]:
    st.page_link("pages/evaluate.py", label="Next: see what the model gets right and wrong", icon=":material/arrow_forward:")
