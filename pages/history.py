"""History: every run in the runs folder, to reopen, compare side by side, or delete.

The rows come from each run folder's ``run.json`` and ``metrics.json``
(through the engine); this page loads no model. Opening a run makes it the
one the Evaluate and Export pages show.
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.errors import TLError
from ui.charts import compared_curves

state = st.session_state
engine = state["engine"]
runs_root = state["workspace"].runs_root

st.title("History")
st.markdown(
    f"Every run kept in `{runs_root}`, newest first; they stay there when the app restarts. Open one to see its evaluation and "
    "files again, compare two side by side, or delete the ones you no longer need."
)

records = engine.list_runs(runs_root)
if not records:
    st.info("No runs yet. Every model you train is kept here with its settings, curves and files.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

job = state["job"]
training_dir = job.state().run_dir if job is not None and job.state().is_running else None
by_folder = {str(record.run_dir): record for record in records}


def label(record) -> str:
    accuracy = f" · {record.test_accuracy:.1%}" if record.test_accuracy is not None else ""
    return f"{record.created[:16].replace('T', ' ')} · {record.dataset or record.name} · {record.strategy.replace('_', ' ') or record.status}{accuracy}"


st.dataframe(
    pd.DataFrame([
        {
            # What tells runs apart first; the rest of the settings after.
            "created": record.created[:16].replace("T", " "), "dataset": record.dataset, "strategy": record.strategy.replace("_", " "),
            "test accuracy": None if record.test_accuracy is None else 100 * record.test_accuracy,
            "minutes": None if record.seconds is None else round(record.seconds / 60, 1),
            "estimated minutes": None if record.estimated_seconds is None else round(record.estimated_seconds / 60, 1), "status": record.status,
            "epochs": record.epochs, "phases": record.phases, "kept epoch": record.best_epoch,
            "backbone": record.backbone, "device": record.device, "image size": record.image_size, "frozen layers": record.frozen_layers,
            "images": record.images, "label decisions": record.label_decisions, "classes": record.classes, "seed": record.seed, "fingerprint": record.fingerprint, "folder": record.name,
        }
        for record in records
    ]),
    hide_index=True, width="stretch",
    column_config={
        "test accuracy": st.column_config.NumberColumn(format="%.1f%%"), "minutes": st.column_config.NumberColumn(format="%.1f min"),
        "estimated minutes": st.column_config.NumberColumn(format="%.1f min", help="What the estimate said when the run started."),
        "kept epoch": st.column_config.NumberColumn(help="The epoch whose weights the model holds: the lowest validation loss of the run."),
    },
)

st.subheader("One run")
folders = list(by_folder)
current = state["run_dir"] if state["run_dir"] in by_folder else None
chosen = st.selectbox("Run", folders, index=folders.index(current) if current else 0, format_func=lambda folder: label(by_folder[folder]), key="history_run")
selected = by_folder[chosen]
if selected.problem:
    (st.error if selected.status == "failed" else st.warning)(f"**{selected.status.capitalize()}**: {selected.problem}")
openable = selected.has_model and selected.test_accuracy is not None
open_column, delete_column, _ = st.columns([2, 1, 3])
if chosen == state["run_dir"]:
    open_column.button("Shown on Evaluate and Export", disabled=True, key="history_open", width="stretch")
elif open_column.button(
    "Open on Evaluate and Export", type="primary", icon=":material/open_in_new:", disabled=not openable, key="history_open", width="stretch",
    help=None if openable else "This run has no model and evaluation to show.",
):
    state["run_dir"] = chosen
    st.rerun()
not_yours = engine.may_delete(selected)  # on a shared app: only whoever trained a run deletes it
with delete_column.popover("Delete…", icon=":material/delete:", disabled=chosen == training_dir or bool(not_yours), width="stretch",
                           help="This run is still training; stop it first." if chosen == training_dir else not_yours or None):
    st.markdown(f"Deletes the folder `{Path(chosen).name}` with its model files and reports. This cannot be undone.")
    if st.button("Delete permanently", type="primary", key="history_delete"):
        try:
            engine.delete_run(chosen, runs_root)
        except TLError as error:
            st.error(str(error))
        else:
            if state["run_dir"] == chosen:
                state["run_dir"] = None
            state.pop("history_run", None)
            state["history_compare"] = [folder for folder in state.get("history_compare", []) if folder != chosen]
            st.toast(f"Deleted {Path(chosen).name}.")
            st.rerun()
if state["run_dir"] == chosen:
    st.page_link("pages/evaluate.py", label="See its evaluation", icon=":material/fact_check:")

# Training again: the same settings on the data loaded now (typically the same folder with images added).
dataset = state["dataset"]
data_dir = str(state["data_dir"] or (dataset.root if dataset is not None else ""))
can_train_again = selected.config and selected.status in ("finished", "stopped") and dataset is not None and training_dir is None
if dataset is not None:
    st.caption(
        f"**Train again** runs this run's settings on the data loaded now ({len(dataset.records):,} images in `{Path(data_dir).name}`). "
        "Images it used keep their split (held-out ones stay held out), unchanged images are not decoded again and their features are reused, "
        "so after adding photos only the new ones go through the network; training starts from this run's weights."
    )
if st.button(
    "Train again on the data loaded now", icon=":material/replay:", disabled=not can_train_again, key="history_train_again",
    help=None if can_train_again else "Load the data on the Data page first, pick a finished run, and wait until no run is training.",
):
    try:
        config = engine.config_from_run(chosen, data_dir, str(state["workspace"].new_run_dir(selected.strategy or "run")))
        state["train_config"] = config
        state["job"] = engine.start_training(config, state["workspace"])
    except TLError as error:
        st.error(str(error))
    else:
        st.switch_page("pages/train.py")

st.subheader("Compare two runs")
pair = st.multiselect(
    "Runs to compare", folders, format_func=lambda folder: label(by_folder[folder]), max_selections=2, key="history_compare",
    placeholder="Choose two runs",
)
if len(pair) == 2:
    first, second = (by_folder[folder] for folder in pair)
    names = {"A": first, "B": second}
    summary = pd.DataFrame([
        {
            "run": name, "folder": run.name, "test accuracy": None if run.test_accuracy is None else 100 * run.test_accuracy,
            "epochs": run.epochs, "minutes": None if run.seconds is None else round(run.seconds / 60, 1),
        }
        for name, run in names.items()
    ])
    st.dataframe(summary, hide_index=True, column_config={"test accuracy": st.column_config.NumberColumn(format="%.1f%%"), "minutes": st.column_config.NumberColumn(format="%.1f min")})
    comparison = engine.compare_runs(first, second)
    if first.fingerprint and not comparison.same_data:
        decisions = f" Label decisions: A {first.label_decisions or 'none'}; B {second.label_decisions or 'none'}." if first.label_decisions or second.label_decisions else ""
        if comparison.same_held_out:
            st.caption(f"The two runs trained on different data (their fingerprints differ), but both were judged on the same {comparison.same_held_out:,} held-out images, so their accuracies compare directly.{decisions}")
        else:
            st.caption(f"The two runs trained on different data (their fingerprints differ), and were not judged on the same images, so their accuracies do not compare directly.{decisions}")
    curve_columns = st.columns(2)
    for column, figure in zip(curve_columns, compared_curves({f"A · {first.name}": first.history, f"B · {second.name}": second.history}), strict=True):
        column.plotly_chart(figure, width="stretch", config={"displayModeBar": False})
    table = pd.DataFrame([{"setting": key, "A": left, "B": right, "differs": "●" if differs else ""} for key, left, right, differs in comparison.settings])
    differing = comparison.differing
    st.markdown(f"**Settings**: {len(differing)} of {len(comparison.settings)} differ" + (f" ({', '.join(differing)})" if differing else "") + "; they are listed first.")
    st.dataframe(
        table.style.apply(lambda row: ["background-color: #fff3cd" if row["differs"] else ""] * len(row), axis=1),
        hide_index=True, width="stretch", height=min(38 + 35 * len(table), 500),
    )
elif pair:
    st.caption("Choose a second run.")
