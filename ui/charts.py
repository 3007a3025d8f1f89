"""Plotly figures and small renderers shared by the app's pages.

The pages stay short by asking this module for ready figures: learning
curves (Train and Evaluate draw the same ones), the confusion matrix, the
ROC curve and the confidence bars of a prediction. Every function takes
plain data (lists, dicts, the engine's dataclasses) and returns a figure, so
the figures can be checked without a browser. Nothing here imports
TensorFlow or Keras.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

TRAIN_COLOR = "#1f77b4"
VALIDATION_COLOR = "#ff7f0e"
WARNING_COLOR = "#d62728"
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # runs compared side by side
OVERFITTING_LABEL = "validation loss rising: overfitting from here"
PHASE_NAMES = {
    "head": "head",
    "fine_tune": "fine-tuning",
    "from_scratch": "training from scratch",
}


def learning_curves(history: Sequence[dict], overfit_epoch: int | None = None) -> list[go.Figure]:
    """Loss and accuracy per epoch, training against validation.

    Args:
        history: One dict per finished epoch with ``epoch``, ``loss``,
            ``accuracy``, ``val_loss``, ``val_accuracy`` and ``phase``
            (missing or None values leave a gap).
        overfit_epoch: The epoch from which validation loss rose while
            training loss fell; marked with a vertical line on both charts.

    Returns:
        Two figures: loss, then accuracy.
    """
    epochs = [entry.get("epoch", number) for number, entry in enumerate(history, start=1)]
    figures = []
    for metric, title in (("loss", "Loss (lower is better)"), ("accuracy", "Accuracy (higher is better)")):
        figure = go.Figure()
        for prefix, name, color, dash in (("", "training", TRAIN_COLOR, "solid"), ("val_", "validation", VALIDATION_COLOR, "dash")):
            figure.add_scatter(
                x=epochs,
                y=[entry.get(prefix + metric) for entry in history],
                name=name,
                mode="lines+markers",
                line={"color": color, "dash": dash},
                hovertemplate=f"epoch %{{x}}<br>{name} {metric}: %{{y:.3f}}<extra></extra>",
            )
        _mark_phase_changes(figure, history, epochs)
        if overfit_epoch is not None:
            # Near the right edge the label would run off the chart, so it goes to the left of the line there.
            side = "left" if epochs and overfit_epoch > (epochs[0] + epochs[-1]) / 2 else "right"
            figure.add_vline(
                x=overfit_epoch,
                line={"color": WARNING_COLOR, "dash": "dot", "width": 2},
                annotation_text=OVERFITTING_LABEL,
                annotation_position=f"top {side}",
                annotation_font_color=WARNING_COLOR,
            )
        figure.update_layout(
            title=title,
            height=330,
            margin={"t": 50, "b": 10, "l": 10, "r": 10},
            legend={"orientation": "h", "yanchor": "bottom", "y": -0.35, "x": 0},
            hovermode="x unified",
        )
        figure.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 15 else None)
        if metric == "accuracy":
            figure.update_yaxes(tickformat=".0%", range=[0, 1.05])
        else:
            figure.update_yaxes(rangemode="tozero")
        figures.append(figure)
    return figures


def compared_curves(histories: dict[str, Sequence[dict]]) -> list[go.Figure]:
    """Validation loss and accuracy per epoch of several runs on the same charts, one colour per run.

    Args:
        histories: Each run's label and its epochs (as ``learning_curves`` takes them).

    Returns:
        Two figures: validation loss, then validation accuracy.
    """
    figures = []
    for metric, title in (("val_loss", "Validation loss (lower is better)"), ("val_accuracy", "Validation accuracy (higher is better)")):
        figure = go.Figure()
        for (label, history), color in zip(histories.items(), RUN_COLORS, strict=False):
            figure.add_scatter(
                x=[entry.get("epoch", number) for number, entry in enumerate(history, start=1)],
                y=[entry.get(metric) for entry in history],
                name=label,
                mode="lines+markers",
                line={"color": color},
                hovertemplate=f"{label}<br>epoch %{{x}}: %{{y:.3f}}<extra></extra>",
            )
        figure.update_layout(
            title=title, height=330, margin={"t": 50, "b": 10, "l": 10, "r": 10},
            legend={"orientation": "h", "yanchor": "bottom", "y": -0.35, "x": 0},
        )
        figure.update_xaxes(title="epoch")
        if metric == "val_accuracy":
            figure.update_yaxes(tickformat=".0%")
        else:
            figure.update_yaxes(rangemode="tozero")
        figures.append(figure)
    return figures


def _mark_phase_changes(figure: go.Figure, history: Sequence[dict], epochs: list[int]) -> None:
    """A thin grey line where one training phase hands over to the next (warm-up to fine-tuning)."""
    for previous, entry, epoch in zip(history, history[1:], epochs[1:], strict=False):
        if entry.get("phase") and entry.get("phase") != previous.get("phase"):
            figure.add_vline(
                x=epoch - 0.5,
                line={"color": "grey", "dash": "dash", "width": 1},
                annotation_text=f"{PHASE_NAMES.get(entry['phase'], entry['phase'])} starts",
                annotation_position="bottom right",
                annotation_font_color="grey",
            )


def confusion_heatmap(class_names: Sequence[str], counts: Sequence[Sequence[int]], normalized: Sequence[Sequence[float]] | None = None) -> go.Figure:
    """The confusion matrix as a heatmap: rows are true classes, columns predicted classes.

    Args:
        class_names: Class names in matrix order.
        counts: Image counts per (true, predicted) cell.
        normalized: The same matrix divided by each row's total; when given,
            colours and cell labels show shares of the true class instead of counts.

    Returns:
        The heatmap, first class at the top-left corner.
    """
    names = [str(name) for name in class_names]
    row_totals = [sum(row) for row in counts]
    shares = normalized if normalized is not None else [[cell / total if total else 0.0 for cell in row] for row, total in zip(counts, row_totals, strict=True)]
    values = normalized if normalized is not None else counts
    labels = [[f"{share:.0%}" for share in row] for row in shares] if normalized is not None else [[str(cell) for cell in row] for row in counts]
    details = [[[count, total, share] for count, share in zip(row, share_row, strict=True)] for row, share_row, total in zip(counts, shares, row_totals, strict=True)]
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            text=labels,
            texttemplate="%{text}" if len(names) <= 25 else None,
            customdata=details,
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalized is not None else max(max(row) for row in counts) or 1,
            colorbar={"title": "share" if normalized is not None else "images", "tickformat": ".0%" if normalized is not None else None},
            hovertemplate="true: %{y}<br>predicted: %{x}<br>%{customdata[0]} of %{customdata[1]} images (%{customdata[2]:.1%})<extra></extra>",
        )
    )
    side = max(360, min(900, 60 + 42 * len(names)))
    figure.update_layout(height=side, margin={"t": 30, "b": 10, "l": 10, "r": 10})
    figure.update_xaxes(title="predicted class", type="category", side="bottom")
    figure.update_yaxes(title="true class", type="category", autorange="reversed")
    return figure


def roc_figure(curve: dict, auc: float | None, positive_class: str) -> go.Figure:
    """The ROC curve of a two-class model, with the diagonal of guessing.

    Args:
        curve: ``{"fpr": [...], "tpr": [...], "thresholds": [...]}``.
        auc: Area under the curve.
        positive_class: The class whose probability is the score.
    """
    figure = go.Figure()
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="chance (AUC 0.5)", line={"color": "grey", "dash": "dash"}, hoverinfo="skip",
    )
    thresholds = curve.get("thresholds") or [None] * len(curve["fpr"])
    figure.add_scatter(
        x=curve["fpr"],
        y=curve["tpr"],
        mode="lines+markers",
        name=f"model (AUC {auc:.3f})" if auc is not None else "model",
        line={"color": TRAIN_COLOR, "width": 3},
        fill="tozeroy",
        fillcolor="rgba(31, 119, 180, 0.12)",
        customdata=thresholds,
        hovertemplate="false positive rate %{x:.2f}<br>true positive rate %{y:.2f}<br>threshold %{customdata:.3f}<extra></extra>",
    )
    figure.update_layout(
        title=f"Positive class: {positive_class}",
        height=420,
        margin={"t": 50, "b": 10, "l": 10, "r": 10},
        legend={"x": 0.55, "y": 0.08},
    )
    figure.update_xaxes(title="false positive rate", range=[-0.01, 1.01], constrain="domain")
    figure.update_yaxes(title="true positive rate", range=[-0.01, 1.01], scaleanchor="x", scaleratio=1)
    return figure


def confidence_bars(top: Sequence[tuple[str, float]]) -> go.Figure:
    """Horizontal bars of the most probable classes, the best on top."""
    names = [str(name) for name, _ in top][::-1]
    probabilities = [float(probability) for _, probability in top][::-1]
    colors = ["#c7d7ea"] * (len(names) - 1) + [TRAIN_COLOR] if names else []
    figure = go.Figure(
        go.Bar(
            x=probabilities,
            y=names,
            orientation="h",
            text=[f"{probability:.0%}" for probability in probabilities],
            textposition="outside",
            marker_color=colors,
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    figure.update_layout(height=50 + 34 * max(len(names), 1), margin={"t": 5, "b": 5, "l": 5, "r": 5}, showlegend=False)
    figure.update_xaxes(range=[0, 1.18], tickformat=".0%", showgrid=False, visible=False)
    figure.update_yaxes(type="category")
    return figure


def show_predictions(predictions: Sequence, previews: Sequence, names: Sequence[str] | None = None, per_row: int = 2) -> None:
    """Draws each prediction as a card: the image, the predicted class and its top classes as bars.

    Args:
        predictions: ``tl_core.runs.folder.Prediction`` objects.
        previews: One thumbnail array (or None) per prediction.
        names: File names to show (the upload's own names); the prediction's
            file name when None.
        per_row: Cards per row.
    """
    names = list(names) if names is not None else [Path(prediction.path).name for prediction in predictions]
    cards = list(zip(predictions, previews, names, strict=True))
    for start in range(0, len(cards), per_row):
        columns = st.columns(per_row)
        for index, (column, (prediction, preview, name)) in enumerate(zip(columns, cards[start : start + per_row], strict=False), start=start):
            with column.container(border=True):
                if prediction.error:
                    st.warning(f"**{name}**: no prediction, {prediction.error}.")
                    continue
                image_column, answer_column = st.columns([1, 2])
                if preview is not None:
                    image_column.image(preview, width=140)
                answer_column.markdown(f"**{prediction.predicted_class}** · {prediction.confidence:.0%} sure")
                answer_column.caption(name)
                answer_column.plotly_chart(confidence_bars(prediction.top), width="stretch", config={"displayModeBar": False}, key=f"prediction_bars_{index}")
