"""Step 5, Evaluate: how good the trained model is, and where it goes wrong.

Everything here comes from the run folder's reports (``metrics.json`` and
``run.json``), computed on images held out from training, so this page
loads no model.
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.errors import TLError
from tl_core.insight.curves import best_epoch, epochs_in_words, overfitting_epoch, phase_spans
from ui.charts import confusion_heatmap, learning_curves, roc_figure

state = st.session_state
engine = state["engine"]

GALLERY_LIMIT = 24
GALLERY_COLUMNS = 6
MAPS_LIMIT = 8  # attention maps take about a second each on a CPU
MATRIX_BESIDE_TABLE_CLASSES = 8  # with more classes the confusion matrix takes the page's width, the per-class table below it
TABLE_ROWS_IN_VIEW = 30  # the per-class table shows this many classes without scrolling

st.title("5 · Evaluate")

job = state["job"]
run_dir = state["run_dir"]
if run_dir is None:
    if job is not None and job.state().is_running:
        st.info("The model is still training. Its evaluation appears here as soon as the run ends.")
    else:
        st.info("No trained model yet. Train one first: the evaluation on held-out images appears here when the run ends.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

try:
    report = engine.load_report(run_dir)
except TLError as error:
    st.error(str(error))
    st.page_link("pages/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

evaluation = report.evaluation
names = report.class_names
split = report.evaluated_split
two_classes = len(names) == 2 and evaluation.roc_auc is not None

if split != report.selection_split:
    honesty = (
        f"Every number below is measured on the {split} split: images the model never trained on, and that did not choose its epoch "
        f"either (the {report.selection_split} split did)."
    )
else:
    honesty = (
        f"Every number below is measured on the {split} split, images the model never trained on; the same images chose the best epoch "
        "(the data had no separate test images), so the figures are slightly optimistic."
    )
flip = ""
if report.summary.test_time_flip:  # with turns, the saved model averages the eight views (tl_core.training.context.RunContext.test_views)
    turns = ((report.summary.config or {}).get("augmentation") or {}).get("turns")
    flip = " Each prediction averages the image's eight turned and mirrored views." if turns else " Each prediction averages the image and its mirror image (test-time flip)."
st.caption(
    f"Run `{Path(run_dir).name}` · {report.summary.display_name or 'model'} · {report.summary.strategy.replace('_', ' ')} · "
    f"{len(names)} classes. {honesty}{flip}"
)

columns = st.columns(4)
columns[0].metric("Accuracy", f"{evaluation.accuracy:.1%}", help=f"Share of the {evaluation.count:,} images of the {split} split whose class was predicted right.")
columns[0].caption(f"{split} split · {evaluation.count:,} images")
columns[1].metric("Macro F1", f"{evaluation.macro_f1:.3f}", help="Mean of the per-class F1 scores, every class counting the same: low when a small class is neglected.")
if two_classes:
    columns[2].metric("ROC AUC", f"{evaluation.roc_auc:.3f}", help=f"Chance that a random '{names[1]}' image scores higher than a random '{names[0]}' image (0.5: guessing, 1: perfect).")
elif evaluation.top_k_accuracy:
    k, value = min(evaluation.top_k_accuracy.items())
    columns[2].metric(f"Top-{k} accuracy", f"{value:.1%}", help=f"Share of images whose true class is among the model's {k} most probable.")
mistakes = len(evaluation.misclassified)
columns[3].metric("Mistakes", f"{mistakes:,}", help="Images whose predicted class is wrong; they are shown at the bottom of this page.")

# Beyond a few classes the matrix needs the page's width, or its cells are too narrow for their counts and labels.
matrix_column, class_column = (st.container(), st.container()) if len(names) > MATRIX_BESIDE_TABLE_CLASSES else st.columns(2, gap="large")
with matrix_column:
    st.subheader("Confusion matrix")
    normalised = st.toggle("Normalise per true class", key="evaluate_normalised", help="Show each row as shares of that class's images (the recall view), so large and small classes compare fairly.")
    st.caption("Rows are the true classes, columns what the model predicted; the diagonal holds the right answers. Hover over a cell for details.")
    heatmap = confusion_heatmap(names, evaluation.confusion_matrix, evaluation.normalized_confusion_matrix() if normalised else None)
    st.plotly_chart(heatmap, width="stretch", key="evaluate_confusion")

with class_column:
    st.subheader("Per class")
    table = pd.DataFrame(
        [{"class": item.name, "precision": item.precision, "recall": item.recall, "F1": item.f1, "images": item.support} for item in evaluation.per_class]
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=35 * (min(len(table), TABLE_ROWS_IN_VIEW) + 1) + 3,  # every class in view up to that many (a header and 35 px a row)
        column_config={
            "precision": st.column_config.NumberColumn("precision", help="Of the images predicted as this class, the share that truly are.", format="%.2f"),
            "recall": st.column_config.NumberColumn("recall", help="Of this class's images, the share the model found.", format="%.2f"),
            "F1": st.column_config.NumberColumn("F1", help="Harmonic mean of precision and recall.", format="%.2f"),
            "images": st.column_config.NumberColumn("images", help="Images of this class in the evaluated split (support).", format="%d"),
        },
    )
    weakest = min(evaluation.per_class, key=lambda item: item.f1)
    if len(names) > 1 and weakest.f1 < evaluation.macro_f1 - 0.1:
        st.caption(f"The weakest class is **{weakest.name}** (F1 {weakest.f1:.2f}): more or clearer images of it would help most.")

    if two_classes and evaluation.roc_curve:
        st.subheader("ROC curve")
        st.caption(
            f"Each point is one decision threshold on the probability of **{names[1]}**: how many true {names[1]} images are found (up) "
            f"against how many {names[0]} images are wrongly flagged (right). The closer the curve hugs the top-left corner, the better."
        )
        st.plotly_chart(roc_figure(evaluation.roc_curve, evaluation.roc_auc, names[1]), width="stretch", key="evaluate_roc")

st.subheader("Learning curves")
if report.history:
    kept = report.summary.best_epoch or best_epoch(report.history)
    overfit = overfitting_epoch(report.history, kept_epoch=kept)
    loss_chart, accuracy_chart = learning_curves(report.history, overfit)
    left, right = st.columns(2)
    left.plotly_chart(loss_chart, width="stretch", key="evaluate_loss_chart")
    right.plotly_chart(accuracy_chart, width="stretch", key="evaluate_accuracy_chart")
    story = f"The run trained {epochs_in_words(phase_spans(report.history, report.summary.planned_phase_epochs))}; the model holds the weights of epoch {kept}, the lowest validation loss."
    if overfit is not None:
        story += f" From epoch {overfit} the validation loss rose while the training loss fell (overfitting)."
    st.caption(story)
else:
    st.caption("This run has no training history (it was stopped before an epoch finished).")

st.subheader("Misclassified images")
if not evaluation.misclassified:
    st.success(f"No mistakes: every one of the {evaluation.count:,} images of the {split} split was classified correctly.")
else:
    st.markdown("**Most confused pairs**")
    pairs = pd.DataFrame(
        [{"true class": pair.true_class, "predicted as": pair.predicted_class, "images": pair.count} for pair in evaluation.most_confused[:10]]
    )
    st.dataframe(pairs, hide_index=True, width="content")
    if len(evaluation.most_confused) > 10:
        st.caption(f"…and {len(evaluation.most_confused) - 10} more pairs with fewer mistakes.")

    # The gallery follows the pairs: the most frequent confusions first, the most confident mistakes first within each.
    shown = []
    for pair in evaluation.most_confused:
        group = [item for item in evaluation.misclassified if item.true_class == pair.true_class and item.predicted_class == pair.predicted_class]
        room = GALLERY_LIMIT - sum(len(items) for _, items in shown)
        if room <= 0:
            break
        shown.append((pair, group[:room]))
    previews = iter(engine.thumbnails([item.path for _, items in shown for item in items], size=160))
    shown_count = sum(len(items) for _, items in shown)
    if shown_count < mistakes:
        st.caption(f"Showing {shown_count} of {mistakes} misclassified images: the most frequent confusions first, the most confident mistakes first within each.")
    for pair, items in shown:
        showing = f" (showing {len(items)} of {pair.count})" if len(items) < pair.count else ""
        st.markdown(f"**{pair.true_class} → {pair.predicted_class}** · {pair.count} image{'s' if pair.count != 1 else ''}{showing}")
        for start in range(0, len(items), GALLERY_COLUMNS):
            for column, item in zip(st.columns(GALLERY_COLUMNS), items[start : start + GALLERY_COLUMNS], strict=False):
                preview = next(previews)
                caption = f"true: {item.true_class} · predicted: {item.predicted_class} ({item.confidence:.0%})"
                with column:
                    if preview is not None:
                        st.image(preview, caption=caption)  # its 160 px, or the column's width where that is narrower
                    else:
                        st.caption(f"{caption}  \n:grey[image not readable: {Path(item.path).name or 'no path'}]")
    if shown_count < mistakes:
        st.caption(f"{mistakes - shown_count} more misclassified image{'s' if mistakes - shown_count != 1 else ''} not shown: the gallery stops at {GALLERY_LIMIT}.")

    st.markdown("**Where the model looked**")
    if st.toggle(
        f"Show attention maps of the first {min(MAPS_LIMIT, mistakes)} mistakes", key="evaluate_maps",
        help="Grad-CAM: the regions of the image that raised the probability of a class, from the gradients at the backbone's last "
        "convolutional block. Loads the model; about a second per map on a CPU.",
    ):
        items = [item for _, group in shown for item in group][:MAPS_LIMIT]
        try:
            with st.spinner("Computing attention maps…"):
                maps = engine.attention_maps(run_dir, [item.path for item in items for _ in (0, 1)], [name for item in items for name in (item.true_class, item.predicted_class)])
        except TLError as error:
            st.error(str(error))
        else:
            st.caption("Red marks what speaks for the class named under each map; blue, nothing. A map for the wrong class on the "
                       "background or a watermark hints that the model learned a shortcut, or that the label is wrong.")
            for start in range(0, len(items), 2):
                columns = st.columns(6)
                for offset, item in enumerate(items[start : start + 2]):
                    index = 2 * (start + offset)
                    for column, picture, name in zip(columns[3 * offset : 3 * offset + 2], maps[index : index + 2], (item.true_class, item.predicted_class), strict=True):
                        if picture is None:
                            column.caption(f":grey[no map: {Path(item.path).name} is not readable]")
                        else:
                            column.image(picture, caption=f"{Path(item.path).name}: for '{name}'" + (" (true)" if name == item.true_class else " (predicted)"))

st.page_link("pages/export.py", label="Next: download the model and try it on new images", icon=":material/arrow_forward:")
