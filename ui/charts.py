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

from tl_core.advice.scenario import SCENARIOS
from tl_core.config import STRATEGY_TITLES
from tl_core.models.blocks import freeze_wording

TRAIN_COLOR = "#1f77b4"
VALIDATION_COLOR = "#ff7f0e"
WARNING_COLOR = "#d62728"
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # runs compared side by side
OVERFITTING_LABEL = "validation loss rising: overfitting from here"
# One colour per cell of the decision matrix, by scenario number; cell corners: similarity low|high on x, size small|large on y.
CELL_COLOURS = {1: "#4C78A8", 2: "#F58518", 3: "#B279A2", 4: "#54A24B"}
COLUMN_OF = {"low": 0, "high": 1}
ROW_OF = {"small": 0, "large": 1}
# Shorter strategy names that fit a cell of the matrix.
MATRIX_STRATEGY_NAMES = {
    "feature_extraction": "feature extraction",
    "fine_tune": "freeze early layers,<br>retrain the rest",
    "full_fine_tune": "fine-tune everything",
    "from_scratch": "train from scratch",
}
SEGMENT_COLOURS = {"frozen": "#94a3b8", "trains": "#f97316", "trains from random weights": "#dc2626", "new head": "#2563eb"}
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
            figure.add_vline(x=overfit_epoch, line={"color": WARNING_COLOR, "dash": "dot", "width": 2})
            # The label sits above the plotting area, where no curve runs; near the right edge it ends at the line.
            side = "right" if epochs and overfit_epoch > (epochs[0] + epochs[-1]) / 2 else "left"
            figure.add_annotation(
                x=overfit_epoch, y=1.0, yref="paper", yanchor="bottom", xanchor=side, showarrow=False,
                text=OVERFITTING_LABEL, font={"color": WARNING_COLOR, "size": 12},
            )
        figure.update_layout(
            title={"text": title, "y": 0.97, "yanchor": "top"},
            height=350,
            margin={"t": 70, "b": 10, "l": 10, "r": 10},
            legend={"orientation": "h", "yanchor": "bottom", "y": -0.35, "x": 0},
            hovermode="x unified",
        )
        figure.update_xaxes(title={"text": "epoch", "standoff": 28}, dtick=1 if len(epochs) <= 15 else None)
        figure.update_yaxes(automargin=True)
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
            figure.add_vline(x=epoch - 0.5, line={"color": "grey", "dash": "dash", "width": 1})
            # Under the plotting area, beside the epoch axis: never over a curve, never over the overfitting label above.
            figure.add_annotation(
                x=epoch - 0.5, y=0.0, yref="paper", yanchor="top", xanchor="left", yshift=-22, showarrow=False,
                text=f"{PHASE_NAMES.get(entry['phase'], entry['phase'])} starts", font={"color": "grey", "size": 11},
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
    # Every class named on both axes: Plotly would otherwise skip every other label once they crowd.
    figure.update_xaxes(title="predicted class", type="category", side="bottom", dtick=1)
    figure.update_yaxes(title="true class", type="category", autorange="reversed", dtick=1)
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


def freeze_figure(layer_map, frozen_layers: int, strategy: str, head_parameters: int, unit: str, heads: int = 1) -> go.Figure:
    """The backbone as one horizontal bar of blocks, input on the left, coloured by whether each part trains.

    Every block is named under the bar (a line joins each name to its block, where the
    blocks are too narrow for the names to sit right under them); the title gives the
    freeze depth in the wording of ``tl_core.models.blocks.freeze_wording``.

    Args:
        layer_map: The backbone's layers and blocks (``tl_core.service.engine.LayerMap``).
        frozen_layers: Layers kept frozen (the freeze line is drawn for fine-tuning).
        strategy: The strategy (training from scratch colours every block as trained from random weights).
        head_parameters: Parameters of the new head (of all of them, for a joined backbone).
        unit: ``"layers"`` or ``"parameters"``: what a block's width counts.
        heads: How many heads: one per network of a joined backbone, whose answers the model averages.
    """
    trains_as = "trains from random weights" if strategy == "from_scratch" else "trains"
    figure = go.Figure()
    shown: set[str] = set()
    position = 0.0
    freeze_line = None
    centres: list[tuple[str, float]] = []

    def add_segment(status: str, width: float, hover: str) -> None:
        figure.add_trace(go.Bar(
            x=[width], y=["network"], orientation="h", name=status, legendgroup=status, showlegend=status not in shown,
            marker={"color": SEGMENT_COLOURS[status], "line": {"color": "white", "width": 1}}, hovertemplate=hover + "<extra></extra>",
        ))
        shown.add(status)

    for block in layer_map.blocks:
        cut = min(max(frozen_layers, block.start), block.end)
        block_start = position
        for start, end, status in ((block.start, cut, "frozen"), (cut, block.end, trains_as)):
            if end <= start:
                continue
            layers = layer_map.layers[start:end]
            parameters = sum(layer.parameters for layer in layers)
            width = float(end - start) if unit == "layers" else float(parameters)
            if status == "frozen" and end == frozen_layers:
                freeze_line = position + width
            add_segment(status, width, f"<b>{block.name}</b><br>layers {start}-{end - 1} ({end - start} layers)<br>{parameters:,} parameters<br>{status}")
            position += width
        centres.append((block.name, (block_start + position) / 2))
    head_width = 4.0 if unit == "layers" else float(head_parameters)
    what = "pooling + a dense layer per network, their answers averaged" if heads > 1 else "pooling + dense layer for your classes"
    add_segment("new head", head_width, f"<b>new head{'s' if heads > 1 else ''}</b><br>{what}<br>{head_parameters:,} parameters<br>trains")
    centres.append(("head", position + head_width / 2))
    _name_blocks(figure, centres, position + head_width)
    if strategy == "fine_tune" and freeze_line is not None:
        figure.add_vline(x=freeze_line, line={"color": "#111827", "width": 3, "dash": "dot"})
        figure.add_annotation(x=freeze_line, y=1.0, yref="paper", text="freeze line", showarrow=False, xanchor="center", yanchor="bottom", font={"size": 11})
    blocks = layer_map.blocks
    frozen = {"feature_extraction": blocks[-1].end if blocks else 0, "fine_tune": frozen_layers}.get(strategy, 0)
    title = "Nothing pretrained: every layer starts from random weights" if strategy == "from_scratch" else freeze_wording(blocks, frozen).capitalize()
    figure.update_layout(
        title={"text": title, "font": {"size": 13}, "y": 0.98, "yanchor": "top"},
        barmode="stack", height=320, margin={"t": 80, "b": 10, "l": 10, "r": 10}, bargap=0.15,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0},
        xaxis={
            "title": {"text": "input → output, block widths by " + unit, "standoff": 85}, "showgrid": False, "fixedrange": True, "showticklabels": False,
            "ticks": "", "range": [0, position + head_width],
        },
        yaxis={"visible": False, "fixedrange": True, "domain": [0.55, 1.0]},
    )
    return figure


def _name_blocks(figure: go.Figure, centres: list[tuple[str, float]], width: float) -> None:
    """Writes every block's name under the bar, upright; names of narrow blocks are spread out and joined to their block by a line."""
    spread = width / len(centres)
    # An upright name needs about 12 px; the bar is at least about 600 px wide on the Setup page.
    crowded = any(later - earlier < width * 12 / 600 for (_, earlier), (_, later) in zip(centres, centres[1:], strict=False))
    for number, (name, centre) in enumerate(centres):
        label_x = spread * (number + 0.5) if crowded else centre
        figure.add_annotation(
            x=centre, y=0.55, xref="x", yref="paper", ax=label_x, ay=30, axref="x", ayref="pixel", text=name, textangle=-90,
            showarrow=True, arrowhead=0, arrowwidth=1, arrowcolor="#9ca3af", xanchor="center", yanchor="top", font={"size": 10},
            standoff=0, startstandoff=0,
        )


def class_counts_figure(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Images per class, one bar per split, side by side (``Dataset.counts()``)."""
    figure = go.Figure()
    for split, per_class in counts.items():
        figure.add_bar(x=list(per_class), y=list(per_class.values()), name=split, hovertemplate=f"%{{x}}<br>{split}: %{{y:,}} images<extra></extra>")
    figure.update_layout(barmode="group", title="Images per class and split", height=320, margin={"t": 40, "b": 10}, legend_title_text="split")
    figure.update_xaxes(title="class")
    figure.update_yaxes(title="images")
    return figure


def matrix_figure(verdict, recommendation, measured_strategy: str | None = None) -> go.Figure:
    """The 2x2 decision matrix with the dataset's cell highlighted (its row only, while similarity is unknown).

    Args:
        verdict: The dataset's size (``tl_core.advice.scenario.SizeVerdict``).
        recommendation: Where the data sits (``Recommendation``), or None while the similarity is unknown.
        measured_strategy: Where the measurement overrode the matrix, the strategy it recommends: the
            highlighted cell then shows the matrix's strategy as the prior and the measured one under it.
    """
    figure = go.Figure()
    ours = recommendation.scenario if recommendation else None
    for number, cell in SCENARIOS.items():
        left, bottom = COLUMN_OF[cell["similarity"]], ROW_OF[cell["size"]]
        highlighted = number == ours
        in_row = ours is None and cell["size"] == verdict.size
        figure.add_shape(
            type="rect", x0=left + 0.02, x1=left + 0.98, y0=bottom + 0.02, y1=bottom + 0.98, layer="below",
            fillcolor=CELL_COLOURS[number], opacity=0.55 if highlighted else 0.28 if in_row else 0.14,
            line={"color": "#1f2937" if highlighted else CELL_COLOURS[number], "width": 4 if highlighted else 1},
        )
        advice = f"<i>→ {MATRIX_STRATEGY_NAMES[cell['strategy']]}</i>"
        overridden = highlighted and measured_strategy and measured_strategy != cell["strategy"]
        if overridden:  # a line more, and the longest of all ("measured: → freeze early layers,"): a size smaller keeps it inside the cell
            advice = f"<i>matrix: {MATRIX_STRATEGY_NAMES[cell['strategy']]}</i><br><b>measured: → {MATRIX_STRATEGY_NAMES[measured_strategy]}</b>"
        figure.add_annotation(
            x=left + 0.5, y=bottom + 0.76, showarrow=False, align="center",
            text=f"<b>Scenario {number}</b><br>{cell['title']}<br>{advice}",
            font={"size": 13 if overridden else 14, "color": "#111827" if highlighted or ours is None else "#4b5563"},
        )
        # An invisible point per cell carries the hover text (shapes cannot be hovered).
        figure.add_trace(go.Scatter(
            x=[left + 0.5], y=[bottom + 0.5], mode="markers", marker={"size": 120, "opacity": 0}, showlegend=False,
            hovertemplate=f"Scenario {number}: {cell['title']}<br>Strategy: {STRATEGY_TITLES[cell['strategy']].lower()}<extra></extra>",
        ))
    numbers = f"{verdict.images_per_class:,.0f} images/class<br>(small below {verdict.threshold:,})"
    if recommendation is not None:
        marker_x = COLUMN_OF[recommendation.similarity] + 0.5
        label = f"<b>your data</b><br>{numbers}"
        if recommendation.similarity_source == "measured" and recommendation.similarity_score is not None:
            label += f"<br>measured similarity {recommendation.similarity_score:.2f}"
    else:
        marker_x = 1.0
        label = f"<b>your data</b>: {verdict.size}<br>{numbers}<br>which column? answer the question"
    marker_y = ROW_OF[verdict.size] + 0.42
    figure.add_trace(go.Scatter(
        x=[marker_x], y=[marker_y], mode="markers", showlegend=False, hoverinfo="skip",
        marker={"symbol": "star", "size": 24, "color": "#111827", "line": {"color": "white", "width": 1.5}},
    ))
    figure.add_annotation(
        x=marker_x, y=marker_y, yshift=-16, yanchor="top", showarrow=False, align="center", text=label,
        font={"size": 12, "color": "#111827"}, bgcolor="rgba(255,255,255,0.9)", bordercolor="#111827", borderwidth=1, borderpad=4,
    )
    figure.update_xaxes(
        range=[0, 2], tickvals=[0.5, 1.5], ticktext=["low: unlike ImageNet", "high: like ImageNet photos"],
        title="Similarity to the pretraining data", showgrid=False, zeroline=False, fixedrange=True,
    )
    figure.update_yaxes(
        range=[0, 2], tickvals=[0.5, 1.5], ticktext=[f"small<br>< {verdict.threshold:,}/class", f"large<br>≥ {verdict.threshold:,}/class"],
        title="Training images per class", showgrid=False, zeroline=False, fixedrange=True,
    )
    figure.update_layout(height=520, margin={"t": 20, "b": 10, "l": 10, "r": 10}, plot_bgcolor="rgba(0,0,0,0)", hovermode="closest")
    return figure


def shift_profile_figure(profile, freeze_layers: int | None) -> go.Figure:
    """How far the data moves each BatchNorm layer's statistics, input to output, with the suggested freeze line."""
    figure = go.Figure(go.Scatter(
        x=[entry.index for entry in profile], y=[entry.shift for entry in profile], mode="lines+markers",
        text=[entry.name for entry in profile], hovertemplate="layer %{x} · %{text}<br>shift %{y:.2f}<extra></extra>",
    ))
    if freeze_layers is not None:
        figure.add_vline(x=freeze_layers, line_dash="dash", annotation_text=f"freeze up to here ({freeze_layers} layers)")
    figure.update_layout(height=300, margin={"t": 30, "b": 10}, xaxis_title="layer of the backbone (input → output)", yaxis_title="shift of BatchNorm statistics")
    return figure


def comparison_figure(rows) -> go.Figure:
    """Validation accuracy (bars) and seconds (diamonds) of the strategies compared side by side (``ComparisonRow`` objects that finished)."""
    names = [STRATEGY_TITLES[row.strategy] for row in rows]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=names, y=[row.val_accuracy for row in rows], name="validation accuracy", yaxis="y"))
    figure.add_trace(go.Scatter(x=names, y=[row.seconds for row in rows], name="seconds", yaxis="y2", mode="markers", marker={"size": 14, "symbol": "diamond"}))
    figure.update_layout(
        height=320, margin={"t": 20, "b": 10}, yaxis={"title": "validation accuracy", "tickformat": ".0%", "range": [0, 1]},
        yaxis2={"title": "seconds", "overlaying": "y", "side": "right", "rangemode": "tozero"}, legend={"orientation": "h"},
    )
    return figure
