"""Step 3, Setup: choose the backbone, the strategy, what stays frozen, augmentation and the training settings."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tl_core.config import FLIP_MODES, RECIPES, STRATEGIES, STRATEGY_DESCRIPTIONS, STRATEGY_TITLES, AugmentConfig, TrainConfig, class_weights_default, recipe_defaults
from tl_core.data.records import Dataset, ImageRecord
from tl_core.errors import TLError
from tl_core.models.backbones import BackboneSpec
from tl_core.service.engine import LayerMap
from tl_core.training.estimate import duration_text

state = st.session_state
engine = state["engine"]

# What choosing a strategy gives and costs, shown when it differs from the recommendation.
TRADE_OFFS = {
    "feature_extraction": "Feature extraction is the fastest choice and hard to overfit, because only the new head learns. The frozen "
    "features never adapt to your images, though, which costs accuracy when they differ from ImageNet or when there is enough data to adapt them.",
    "fine_tune": "Fine-tuning lets the later layers adapt to your images, which often beats feature extraction. Each epoch pushes every "
    "image through the network, so it is slower, and with few images the retrained layers can start to memorise them.",
    "full_fine_tune": "Full fine-tuning adapts every layer: the most flexible use of the pretrained weights and the slowest. With few images "
    "per class it overfits easily, since millions of weights adjust to a few hundred pictures.",
    "from_scratch": "Training from scratch throws away what the network learned on ImageNet: it needs many images per class and many epochs, "
    "and on small data it usually scores lowest. It is still a useful baseline that shows how much transfer helps.",
}
FLIP_NAMES = {"horizontal": "Left-right", "vertical": "Up-down", "horizontal_and_vertical": "Left-right and up-down", "none": "No flips"}
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
FAST_IMAGE_SIZES = (96, 128, 160, 192, 224)
PREVIEW_SIZE = 128
PREVIEW_VERSIONS = 4
PREVIEW_CLASSES = 3
WARMUP_STRATEGIES = ("fine_tune", "full_fine_tune")
VARIANTS = {"recommended": "Recommended", "quick": "Quick"}
RECIPE_NOTES = {
    "feature_extraction": "The head trains on cached features until its validation loss stops improving (up to 200 epochs: seconds). "
    "With left-right flips, the mirror images' features train it too, and its answer for each image is averaged with the mirror image's.",
    "fine_tune": "First the head converges on cached features (warm-up), then the unfrozen layers train on augmented images for 8 epochs at a tenth of "
    "the learning rate, warmed up over the first epoch and decayed to the end; the epoch with the lowest validation loss is kept.",
    "full_fine_tune": "As fine-tuning, with every layer unfrozen: the head converges first, then 8 epochs on augmented images at a low, warmed-up and decaying rate.",
    "from_scratch": "Every layer trains from random weights on augmented images, 30 epochs with a decaying learning rate; the epoch with the lowest validation loss is kept.",
}
QUICK_NOTES = {
    "feature_extraction": "Quick: no mirror images, so each image goes through the backbone once.",
    "fine_tune": "Quick: 3 epochs of fine-tuning and no test-time flip.",
    "full_fine_tune": "Quick: 3 epochs of fine-tuning and no test-time flip.",
    "from_scratch": "Quick: 10 epochs and no test-time flip.",
}
PART_NAMES = {"setup": "setting up", "decode": "reading images", "features": "backbone features", "head": "head", "fine_tune": "fine-tuning",
              "full_fine_tune": "fine-tuning", "from_scratch": "training", "evaluate": "evaluation", "portable files": "TFLite and ONNX files"}
SEGMENT_COLOURS = {"frozen": "#94a3b8", "trains": "#f97316", "trains from random weights": "#dc2626", "new head": "#2563eb"}

st.title("3 · Model and training setup")
st.markdown("Pick the pretrained network, how much of it retrains, how the training images are varied, and how long to train.")

dataset: Dataset | None = state["dataset"]
if dataset is None:
    st.info("No dataset loaded yet. Load a folder of images (or the sample dataset) first; the settings here depend on its classes and size.")
    st.page_link("pages/data.py", label="Go to step 1 · Data", icon=":material/folder_open:")
    st.stop()

# The settings of the last visit seed the widgets; the Data page clears them when the data changes.
previous: TrainConfig | None = state["train_config"]
defaults = previous if previous is not None else TrainConfig(data_dir="", out_dir="")
recommendation = state["recommendation"]
recommended = recommendation.strategy if recommendation is not None else None
# The measured advice for this dataset (Scenario page), when there is one: freeze depth, flips and epochs start from it.
stored_advice = state.get("advice")
advice = stored_advice[1] if stored_advice and stored_advice[0] == dataset.fingerprint() else None


def remembered(key: str, value: object) -> str:
    """Gives a widget key its starting value on this visit and returns the key."""
    if key not in state:
        state[key] = value
    return key


def backbone_label(spec: BackboneSpec) -> str:
    return f"{spec.display_name} · {spec.default_size} px · {spec.parameters / 1e6:.1f} M parameters"


def strategy_label(strategy: str) -> str:
    return STRATEGY_TITLES[strategy] + (" · recommended" if strategy == recommended else "")


def remember_strategy() -> None:
    """A strategy picked here becomes the session's choice, so the next visit starts from it."""
    state["chosen_strategy"] = state["setup_strategy"]


def trainable_backbone_parameters(layer_map: LayerMap, strategy: str, frozen_layers: int) -> int:
    if strategy == "feature_extraction":
        return 0
    if strategy == "from_scratch":
        # BatchNorm layers train too here: their scale and offset (half their weights); the running statistics are not trained.
        return layer_map.trainable_parameters(0, train_batchnorm=True)
    return layer_map.trainable_parameters(frozen_layers)


def freeze_figure(layer_map: LayerMap, frozen_layers: int, strategy: str, head_parameters: int, unit: str) -> go.Figure:
    """The backbone as one horizontal bar of blocks, input on the left, coloured by whether each part trains."""
    trains_as = "trains from random weights" if strategy == "from_scratch" else "trains"
    figure = go.Figure()
    shown: set[str] = set()
    position = 0.0
    freeze_line = None

    def add_segment(label: str, status: str, width: float, hover: str) -> None:
        figure.add_trace(go.Bar(
            x=[width], y=["network"], orientation="h", name=status, legendgroup=status, showlegend=status not in shown,
            marker={"color": SEGMENT_COLOURS[status], "line": {"color": "white", "width": 1}},
            text=[label], textposition="inside", insidetextanchor="middle", textangle=0, hovertemplate=hover + "<extra></extra>",
        ))
        shown.add(status)

    for block in layer_map.blocks:
        cut = min(max(frozen_layers, block.start), block.end)
        for start, end, status in ((block.start, cut, "frozen"), (cut, block.end, trains_as)):
            if end <= start:
                continue
            layers = layer_map.layers[start:end]
            parameters = sum(layer.parameters for layer in layers)
            width = float(end - start) if unit == "layers" else float(parameters)
            if status == "frozen" and end == frozen_layers:
                freeze_line = position + width
            hover = f"<b>{block.name}</b><br>layers {start}-{end - 1} ({end - start} layers)<br>{parameters:,} parameters<br>{status}"
            add_segment(block.name, status, width, hover)
            position += width
    head_width = 1.0 if unit == "layers" else float(head_parameters)
    add_segment("head", "new head", head_width, f"<b>new head</b><br>pooling + dense layer for your classes<br>{head_parameters:,} parameters<br>trains")
    if strategy == "fine_tune" and freeze_line is not None:
        figure.add_vline(x=freeze_line, line={"color": "#111827", "width": 3, "dash": "dot"})
        figure.add_annotation(x=freeze_line, y=1.02, yref="paper", text="freeze line", showarrow=False, xanchor="center", yanchor="bottom", font={"size": 11})
    figure.update_layout(
        barmode="stack", height=190, margin={"t": 30, "b": 10, "l": 10, "r": 10}, bargap=0.15,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.12, "x": 0}, uniformtext={"minsize": 9, "mode": "hide"},
        xaxis={"title": "input → output, block widths by " + unit, "showgrid": False, "fixedrange": True},
        yaxis={"visible": False, "fixedrange": True},
    )
    return figure


def preview_records(dataset: Dataset, count: int) -> list[ImageRecord]:
    """The first training image of up to ``count`` classes spread over the class list."""
    picks = sorted({int(round(index)) for index in np.linspace(0, dataset.num_classes - 1, min(count, dataset.num_classes))})
    records = []
    for class_index in picks:
        name = dataset.class_names[class_index]
        in_class = [record for record in dataset.records if record.class_name == name]
        train = [record for record in in_class if record.split == "train"]
        records.append((train or in_class)[0])
    return records


def show_estimate(config: TrainConfig, quick: bool) -> None:
    """Roughly how long the run takes here, where the time goes, and what the other recipe would take."""
    try:
        with st.spinner("Timing this device's forward pass (once per network and image size)…"):
            estimate = engine.estimate(config, dataset)
            other = engine.estimate(replace(config, quick=not quick, **dict.fromkeys(RECIPES[config.strategy])).validated(), dataset)
    except TLError as error:
        st.caption(f"No time estimate: {error}")
        return
    columns = st.columns([1, 3])
    columns[0].metric("Estimated time", estimate.describe().removeprefix("about "), help=f"Rough: {estimate.basis}. Early stopping can make a run shorter.")
    parts = ", ".join(f"{PART_NAMES.get(name, name)} {duration_text(seconds)}" for name, seconds in estimate.parts.items() if seconds >= 1)
    columns[1].caption(
        f"On this device ({estimate.basis}): {parts}. The {'recommended' if quick else 'quick'} recipe would take about {duration_text(other.seconds)}."
    )


def next_preview() -> None:
    state["setup_preview_seed"] = state.get("setup_preview_seed", 0) + 1


@st.cache_data(max_entries=16, show_spinner=False)
def augmented_versions(_engine, paths: tuple[str, ...], settings: tuple, seed: int) -> np.ndarray:
    """Originals and augmented versions, remembered so that unrelated widget changes do not recompute them."""
    return _engine.augment_preview(list(paths), PREVIEW_SIZE, AugmentConfig(**dict(settings)), versions=PREVIEW_VERSIONS, seed=seed)


# The device first: nobody should find out after an hour that the GPU was not used.
with st.spinner("Checking which device training will use…"):
    device = engine.device()
if device.kind == "GPU":
    st.success(f"**Training will run on the GPU: {device.name}**  \n{device.describe()}", icon=":material/memory:")
else:
    st.info(
        f"**Training will run on the CPU.**  \n{device.describe()}  \nOn a CPU, feature extraction with a MobileNet at 128-160 px keeps runs to minutes.",
        icon=":material/computer:",
    )

# 1. Backbone and strategy.
specs = {spec.name: spec for spec in engine.backbones()}
model_column, strategy_column = st.columns(2, gap="large")
with model_column:
    st.subheader("Pretrained network")
    backbone = st.selectbox(
        "Backbone", list(specs), format_func=lambda name: backbone_label(specs[name]),
        key=remembered("setup_backbone", defaults.backbone if defaults.backbone in specs else next(iter(specs))),
        help="The network whose ImageNet weights are reused. Bigger networks are usually more accurate and always slower.",
    )
    spec = specs[backbone]
    st.caption(spec.description)
with strategy_column:
    st.subheader("Strategy")
    strategy = st.radio(
        "How to reuse the pretrained network", STRATEGIES, format_func=strategy_label,
        captions=[description[0].upper() + description[1:] + "." for description in (STRATEGY_DESCRIPTIONS[name] for name in STRATEGIES)],
        key=remembered("setup_strategy", state.get("chosen_strategy") or recommended or "feature_extraction"),
        on_change=remember_strategy,
    )
    if recommendation is None:
        st.caption("Step 2 recommends a strategy once it knows how similar your images are to ImageNet.")
        st.page_link("pages/scenario.py", label="Open step 2 · Scenario", icon=":material/grid_view:")
    elif strategy != recommended:
        st.info(
            f"Step 2 recommended **{STRATEGY_TITLES[recommended].lower()}** for your data (scenario {recommendation.scenario}: "
            f"{recommendation.title}). {TRADE_OFFS[strategy]}"
        )

# 2. What stays frozen and what trains.
st.subheader("What trains")
try:
    with st.spinner(f"Reading the layers of {spec.display_name}…"):
        layer_map = engine.layer_map(backbone)
except TLError as error:
    st.error(str(error))
    st.stop()
total_layers = len(layer_map.layers)
head_parameters = spec.feature_dim * dataset.num_classes + dataset.num_classes

if strategy == "fine_tune":
    block_ends = {block.end: block for block in layer_map.blocks[:-1]}
    measured = advice if advice is not None and advice.backbone == backbone else None
    if previous is not None and previous.backbone == backbone and previous.freeze_layers is not None:
        suggested = previous.freeze_layers
    elif measured is not None and 0 < measured.freeze_layers < total_layers:
        suggested = measured.freeze_layers  # where the measured domain shift grows (Scenario page)
        st.caption(f"Starting from the measured suggestion: freeze the first {suggested} layers, up to block '{measured.freeze_block}'.")
    else:
        suggested = engine.default_freeze_layers(backbone)
    if block_ends:
        start_value = min(block_ends, key=lambda end: abs(end - suggested))
        frozen_layers = st.select_slider(
            "Freeze up to and including block", options=list(block_ends), format_func=lambda end: f"{block_ends[end].name} ({end} layers)",
            key=remembered(f"setup_freeze_{backbone}", start_value), persist_state="page",
            help="Early blocks detect generic edges and textures and are worth keeping; later blocks hold ImageNet-specific parts. "
            "Freezing more trains faster and overfits less; freezing less adapts more to your images.",
        )
    else:
        frozen_layers = st.slider("Layers kept frozen", 0, total_layers, key=remembered(f"setup_freeze_{backbone}", min(suggested, total_layers)), persist_state="page")
    trained_blocks = [block.name for block in layer_map.blocks if block.end > frozen_layers]
    st.caption(
        f"The first **{frozen_layers} of {total_layers} layers** stay frozen; blocks {trained_blocks[0]} to {trained_blocks[-1]} retrain "
        "at a tenth of the learning rate after the head's warm-up. BatchNorm layers always stay frozen."
    )
elif strategy == "feature_extraction":
    frozen_layers = total_layers
    st.caption(f"All {total_layers} layers stay frozen. Their output for each image is computed once and cached, and only the new head trains on it.")
elif strategy == "full_fine_tune":
    frozen_layers = 0
    st.caption(f"No layer is frozen: all {total_layers} layers retrain at a low learning rate after the head's warm-up (BatchNorm layers excepted).")
else:
    frozen_layers = 0
    st.caption(f"Nothing is frozen and nothing pretrained is used: all {total_layers} layers start from random weights and train with the head.")

backbone_trains = trainable_backbone_parameters(layer_map, strategy, frozen_layers)
all_parameters = sum(layer.parameters for layer in layer_map.layers)
picture_column, numbers_column = st.columns([3, 1], gap="medium")
with picture_column:
    unit = st.radio("Block width by", ["layers", "parameters"], horizontal=True, key="setup_block_unit", persist_state="session")
    st.plotly_chart(freeze_figure(layer_map, frozen_layers, strategy, head_parameters, unit), width="stretch", config={"displayModeBar": False})
with numbers_column:
    st.metric(
        "Parameters that train", f"{backbone_trains + head_parameters:,}",
        help=f"Backbone {backbone_trains:,} + new head {head_parameters:,} ({spec.feature_dim} features × {dataset.num_classes} classes + {dataset.num_classes} biases).",
    )
    st.metric("Layers frozen", f"{frozen_layers} of {total_layers}")
    st.metric(
        "Parameters not trained", f"{max(all_parameters - backbone_trains, 0):,}",
        help="Frozen weights, plus the running statistics of BatchNorm layers, which are never trained by the optimiser.",
    )

# 3. Augmentation, with a preview of what it does.
st.subheader("Augmentation")
controls_column, preview_column = st.columns([1, 2], gap="large")
with controls_column:
    augment = st.checkbox(
        "Randomly change the training images", key=remembered("setup_augment", defaults.augment),
        help="Only the training split is changed, and only while training; validation and test images stay as they are.",
    )
    augment_views = 0
    if strategy == "feature_extraction":
        st.info(
            "Feature extraction computes each image's features once, so images cannot change from epoch to epoch. "
            "Augmentation reaches it through cached copies: with left-right flips, the **mirror images** (one more pass over the images, "
            "and the head averages its answers over both), and optionally **augmented views**: training images changed at random by "
            "the settings below, each view one more pass over the training images."
        )
        augment_views = st.number_input(
            "Augmented views to cache", min_value=0, max_value=5, step=1, disabled=not augment, persist_state="page",
            key=remembered("setup_augment_views", defaults.augment_views if defaults.strategy == "feature_extraction" else 0),
            help="0 means the settings below are not used for feature extraction.",
        )
    advised_flip = advice.flip if advice is not None else "horizontal"
    flip = st.selectbox(
        "Flips", FLIP_MODES, format_func=FLIP_NAMES.get, disabled=not augment,
        key=remembered("setup_flip", defaults.augmentation.flip if previous is not None and defaults.augmentation.flip in FLIP_MODES else advised_flip),
        help="Up-down flips suit images without a natural up (microscopy, satellite), not photos of upright things.",
    )
    rotation = st.slider("Rotation (share of a full turn)", 0.0, 0.5, step=0.05, disabled=not augment, key=remembered("setup_rotation", defaults.augmentation.rotation))
    zoom = st.slider("Zoom (share of the size)", 0.0, 0.5, step=0.05, disabled=not augment, key=remembered("setup_zoom", defaults.augmentation.zoom))
    translation = st.slider("Shift (share of width and height)", 0.0, 0.5, step=0.05, disabled=not augment, key=remembered("setup_translation", defaults.augmentation.translation))
    contrast = st.slider("Contrast change", 0.0, 0.5, step=0.05, disabled=not augment, key=remembered("setup_contrast", defaults.augmentation.contrast))
    augmentation = AugmentConfig(flip=flip, rotation=rotation, zoom=zoom, translation=translation, contrast=contrast)
    if augment:
        st.caption(f"Up to ±{rotation * 360:.0f}° rotation, ±{zoom:.0%} zoom, ±{translation:.0%} shift, ±{contrast:.0%} contrast; flips: {FLIP_NAMES[flip].lower()}.")

with preview_column:
    if not augment:
        st.info("Augmentation is off: the network sees every training image as it is. On small datasets, augmentation is one of the best guards against overfitting.")
    else:
        state.setdefault("setup_preview_seed", 0)
        records = preview_records(dataset, PREVIEW_CLASSES)
        try:
            grid = augmented_versions(engine, tuple(record.path for record in records), tuple(sorted(augmentation.to_dict().items())), state["setup_preview_seed"])
        except TLError as error:
            st.error(str(error))
        else:
            if strategy == "feature_extraction" and not augment_views:
                st.caption("Preview only: with 0 augmented views, feature extraction trains on the original images and, with left-right flips, their mirror images.")
            captions = ["original"] + [f"version {number}" for number in range(1, PREVIEW_VERSIONS + 1)]
            for record, versions in zip(records, grid, strict=True):
                st.markdown(f"**{record.class_name}** · `{Path(record.path).name}`")
                st.image(list(versions), width=112, caption=captions)
        st.button("New random versions", icon=":material/casino:", on_click=next_preview)

# 4. How long and how fast: the strategy's recipe, or its quick variant.
st.subheader("Training")
recipe_column, recipe_notes = st.columns([1, 3], gap="medium")
variant = recipe_column.radio(
    "Recipe", list(VARIANTS), format_func=VARIANTS.get, key=remembered(f"setup_recipe_{strategy}", "quick" if previous is not None and previous.strategy == strategy and previous.quick else "recommended"),
    help="The recommended recipe is what measured best in our benchmarks. The quick one makes fewer passes over the images: a first look in a fraction of the time.",
)
quick = variant == "quick"
recipe = recipe_defaults(strategy, quick)
recipe_notes.caption(RECIPE_NOTES[strategy] + (" " + QUICK_NOTES[strategy] if quick else ""))
# The last visit's values when it used the same strategy and recipe; otherwise the advice's epochs (fitted to its time budget) or the recipe's.
start = previous if previous is not None and previous.strategy == strategy and previous.quick == quick else None
advised_epochs = advice.epochs if advice is not None and advice.recommendation.strategy == strategy and not quick else None
first_row = st.columns(4)
uses_warmup = strategy in WARMUP_STRATEGIES
epochs = first_row[0].number_input(
    "Head epochs (at most)" if strategy == "feature_extraction" else "Epochs", min_value=1, max_value=1000, step=1, persist_state="page",
    key=remembered(f"setup_epochs_{strategy}_{variant}", start.epochs if start else advised_epochs if advised_epochs else recipe["epochs"]),
    help="Passes over the training images. Early stopping ends the run sooner when validation loss stops improving.",
)
if uses_warmup:
    warmup_epochs = first_row[1].number_input(
        "Warm-up epochs (head only, at most)", min_value=0, max_value=1000, step=1, persist_state="page",
        key=remembered(f"setup_warmup_{strategy}_{variant}", start.warmup_epochs if start else recipe["warmup_epochs"]),
        help="The new head first trains alone on cached features (seconds) until its validation loss stops improving, so its random start "
        "does not send large, damaging updates into the pretrained layers.",
    )
else:
    warmup_epochs = 0
    first_row[1].caption("No warm-up: " + ("the head is all that trains." if strategy == "feature_extraction" else "everything trains from the start."))
sizes = sorted({size for size in FAST_IMAGE_SIZES if spec.min_size <= size < spec.default_size} | {spec.default_size})
image_size = first_row[2].selectbox(
    "Image size", sizes, format_func=lambda size: f"{size} px" + (" (the network's own)" if size == spec.default_size else " (faster)"),
    key=remembered(f"setup_image_size_{backbone}", defaults.image_size if previous is not None and previous.backbone == backbone and defaults.image_size in sizes else spec.default_size),
    help=f"Images are resized to this square. {spec.display_name}'s ImageNet weights saw {spec.default_size} px; smaller is faster, mostly on a CPU, and can cost some accuracy.",
)
batch_size = first_row[3].select_slider(
    "Batch size", BATCH_SIZES, key=remembered("setup_batch_size", defaults.batch_size if defaults.batch_size in BATCH_SIZES else 32),
    help="Images per training step. Larger batches use more memory; lower it if training runs out of memory.",
)
second_row = st.columns(5)
learning_rate = second_row[0].select_slider(
    "Learning rate", LEARNING_RATES, format_func=lambda rate: f"{rate:g}",
    key=remembered("setup_learning_rate", min(LEARNING_RATES, key=lambda rate: abs(rate - defaults.learning_rate))),
    help="How big each update is. For fine-tuning, the backbone's layers use a tenth of it.",
)
if strategy in ("fine_tune", "full_fine_tune"):
    second_row[0].caption(f"Head {learning_rate:g}, backbone layers {learning_rate / 10:g}, warmed up over the first epoch, then decayed (cosine).")
imbalance = dataset.imbalance_ratio()
class_weights = second_row[1].checkbox(
    "Class weights", key=remembered("setup_class_weights", defaults.class_weights if previous is not None and defaults.class_weights is not None else class_weights_default(imbalance)),
    help=f"Weights each image by how rare its class is, so small classes count as much as big ones. Your largest class has {imbalance:.1f}× the images of the smallest; "
    "worth it from about 3×.",
)
mirrors = augment and flip in ("horizontal", "horizontal_and_vertical")
test_time_flip = second_row[2].checkbox(
    "Test-time flip", key=remembered(f"setup_tta_{strategy}_{variant}", start.test_time_flip if start else recipe["test_time_flip"]), disabled=not mirrors,
    help="Each prediction is the average of the model's answers for the image and its mirror image, in the evaluation and inside the exported "
    "model file (which then does the same for anyone who loads it). Needs left-right flips: a mirrored digit or letter is not the same class.",
)
early_stopping = second_row[3].number_input(
    "Early stopping patience", min_value=0, max_value=100, step=1, persist_state="page",
    key=remembered(f"setup_patience_{strategy}_{variant}", start.early_stopping_patience if start else recipe["early_stopping_patience"]),
    help="Stop after this many epochs without a better validation loss (0: never stop early). The best epoch's weights are kept either way.",
)
seed = second_row[4].number_input(
    "Seed", min_value=0, max_value=2**31 - 1, step=1, key=remembered("setup_seed", defaults.seed),
    help="Decides the generated train/validation/test split, the starting weights, shuffling and augmentation. The same seed repeats a run.",
)

# 5. The config the Train page starts from.
config = TrainConfig(
    data_dir=state["data_dir"] or str(dataset.root),
    out_dir="",
    backbone=backbone,
    strategy=strategy,
    freeze_layers=frozen_layers if strategy == "fine_tune" else None,
    epochs=int(epochs),
    warmup_epochs=int(warmup_epochs),
    image_size=int(image_size),
    batch_size=int(batch_size),
    learning_rate=float(learning_rate),
    augment=augment,
    augment_views=int(augment_views) if augment else 0,
    augmentation=augmentation,
    class_weights=class_weights,
    early_stopping_patience=int(early_stopping),
    learning_rate_schedule=recipe["learning_rate_schedule"],
    test_time_flip=bool(test_time_flip and mirrors),
    seed=int(seed),
    quick=quick,
)
st.divider()
try:
    config = config.validated()
except TLError as error:
    state["train_config"] = None
    st.error(str(error))
    st.stop()
state["train_config"] = config

details = []
if strategy == "fine_tune":
    details.append(f"first {frozen_layers} of {total_layers} layers frozen")
if uses_warmup and warmup_epochs:
    details.append(f"after up to {warmup_epochs} warm-up epochs")
if augment and (strategy != "feature_extraction" or augment_views):
    details.append("with augmentation" + (f" ({augment_views} cached views)" if strategy == "feature_extraction" else ""))
if class_weights:
    details.append("class weights on")
if config.test_time_flip:
    details.append("test-time flip")
extra = f" ({', '.join(details)})" if details else ""
st.success(
    f"Ready: {STRATEGY_TITLES[strategy].lower()} with {spec.display_name} at {image_size} px, {epochs} {'head ' if strategy == 'feature_extraction' else ''}epochs{extra}.",
    icon=":material/check_circle:",
)
show_estimate(config, quick)
with st.expander("All settings of this run"):
    st.json({name: value for name, value in config.to_dict().items() if name != "out_dir"}, expanded=True)

st.page_link("pages/train.py", label="Next: train the model", icon=":material/arrow_forward:")
