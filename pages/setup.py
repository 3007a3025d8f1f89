"""Step 3, Setup: choose the backbone, the strategy, what stays frozen, augmentation and the training settings.

Each section below draws its widgets and returns the values chosen; the page
then turns them into one ``TrainConfig`` (checked by the engine) for the Train
page. Where the user has not chosen yet, the widgets start from the engine's
suggestion (``Engine.suggested_settings``): the same rule ``--strategy auto``
uses on the command line.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import streamlit as st

from tl_core.config import FLIP_MODES, MIRRORING_FLIPS, RECIPES, STRATEGIES, STRATEGY_DESCRIPTIONS, STRATEGY_TITLES, AugmentConfig, TrainConfig, epochs_plan, recipe_description
from tl_core.data.records import Dataset, ImageRecord
from tl_core.errors import TLError
from tl_core.models.backbones import feature_wording
from tl_core.models.blocks import freeze_wording
from tl_core.training.estimate import duration_text
from ui import state as session
from ui.charts import freeze_figure

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
VARIANTS = {"recommended": "Recommended", "quick": "Quick"}
PART_NAMES = {"start_up": "starting the training process", "setup": "setting up", "files": "writing the files", "decode": "reading images", "features": "backbone features", "head": "head", "fine_tune": "fine-tuning",
              "full_fine_tune": "fine-tuning", "from_scratch": "training", "evaluate": "evaluation", "portable files": "TFLite and ONNX files",
              "mirror features": "mirror images' features (where they pay)", "mirror head": "head on the mirror images (where they pay)"}


def remembered(key: str, value: object) -> str:
    """Gives a widget key its starting value on this visit and returns the key."""
    if key not in state:
        state[key] = value
    return key


def show_device() -> None:
    """The device first: nobody should find out after an hour that the GPU was not used."""
    with st.spinner("Checking which device training will use…"):
        device, backend = engine.device(), engine.backend()
    if device.kind == "GPU":
        st.success(f"**Training will run on the GPU: {device.name}**  \n{device.describe()}", icon=":material/memory:")
    else:
        st.info(
            f"**Training will run on the CPU.**  \n{device.describe()}  \nOn a CPU every pass of the images through the network counts: "
            "the estimate at the bottom of this page gives this plan's time here, and a smaller image size or the quick recipe shortens it.",
            icon=":material/computer:",
        )
    st.caption(f"Keras backend: {backend.title} ({backend.reason}). Set TL_CORE_BACKEND=tensorflow, jax or torch before starting the app to choose another.")


def choose_backbone_and_strategy(defaults: TrainConfig, recommendation) -> tuple:
    """Section 1: the pretrained network and the strategy; returns (spec, strategy)."""
    recommended = recommendation.strategy if recommendation is not None else None
    specs = {spec.name: spec for spec in engine.backbones()}
    start = state.get("chosen_backbone") or defaults.backbone  # the network adopted on the Scenario page, else the last visit's
    model_column, strategy_column = st.columns(2, gap="large")
    with model_column:
        st.subheader("Pretrained network")
        backbone = st.selectbox(
            "Backbone", list(specs), format_func=lambda name: f"{specs[name].display_name} · pretrained at {specs[name].default_size} px · {specs[name].parameters / 1e6:.1f} M parameters",
            key=remembered("setup_backbone", start if start in specs else next(iter(specs))),
            help="The network whose ImageNet weights are reused. Bigger networks are usually more accurate and always slower.",
            on_change=lambda: state.update(chosen_backbone=state["setup_backbone"]),  # the next visit starts from it
        )
        st.caption(specs[backbone].description)
    with strategy_column:
        st.subheader("Strategy")
        if specs[backbone].joined:  # two networks side by side: nothing to fine-tune block by block
            strategy = "feature_extraction"
            st.radio("How to reuse the pretrained network", [strategy], format_func=lambda name: STRATEGY_TITLES[name] + (" · recommended" if name == recommended else ""), key="setup_strategy_joined")
            st.caption("This backbone joins two networks' features, so it only extracts features. To fine-tune, pick one network.")
        else:
            strategy = st.radio(
                "How to reuse the pretrained network", STRATEGIES, format_func=lambda name: STRATEGY_TITLES[name] + (" · recommended" if name == recommended else ""),
                captions=[description[0].upper() + description[1:] + "." for description in (STRATEGY_DESCRIPTIONS[name] for name in STRATEGIES)],
                key=remembered("setup_strategy", state.get("chosen_strategy") or recommended or "feature_extraction"),
                on_change=lambda: state.update(chosen_strategy=state["setup_strategy"]),  # the next visit starts from it
            )
        advice = session.recalled_value(state, session.ADVICE, state["dataset"].fingerprint())
        overridden = advice.override_text() if advice is not None and advice.recommendation.strategy == recommended else ""
        if recommendation is None:
            st.caption("Step 2 recommends a strategy once it knows how similar your images are to ImageNet.")
            st.page_link("pages/scenario.py", label="Open step 2 · Scenario", icon=":material/grid_view:")
        elif strategy != recommended:
            st.info(
                f"Step 2 recommended **{STRATEGY_TITLES[recommended].lower()}** for your data (scenario {recommendation.scenario}: {recommendation.title}). "
                f"{overridden + ' ' if overridden else ''}{TRADE_OFFS[strategy]}"
            )
        elif overridden:
            st.caption(f"Recommended by the measurement on Step 2: {overridden}")
    return specs[backbone], strategy


def choose_what_trains(spec, strategy: str, dataset: Dataset, previous: TrainConfig | None, suggested) -> tuple[int, object]:
    """Section 2: the freeze depth (for fine-tuning) and the freeze map; returns (frozen layers, the layer map)."""
    st.subheader("What trains")
    try:
        with st.spinner(f"Reading the layers of {spec.display_name}…"):
            layer_map = engine.layer_map(spec.name)
    except TLError as error:
        st.error(str(error))
        st.stop()
    total = len(layer_map.layers)
    if strategy == "fine_tune":
        frozen_layers = choose_freeze_depth(spec, layer_map, previous, suggested)
    else:
        frozen_layers = total if strategy == "feature_extraction" else 0
        frozen_text = f"Both networks ({', '.join(member.display_name for member in spec.member_specs)}) stay frozen" if spec.joined else f"All {total} layers stay frozen"
        st.caption({
            "feature_extraction": f"{frozen_text}. Their output for each image is computed once and cached, and only "
            + ("a new head per network trains on it; the model averages their answers." if spec.joined else "the new head trains on it."),
            "full_fine_tune": f"No layer is frozen: all {total} layers retrain at a low learning rate after the head's warm-up (BatchNorm layers excepted).",
            "from_scratch": f"Nothing is frozen and nothing pretrained is used: all {total} layers start from random weights and train with the head.",
        }[strategy])
    heads = len(spec.member_dims)  # a joined backbone has a head per network (tl_core.models.build.joined_head)
    head_parameters = (spec.feature_dim + heads) * dataset.num_classes
    backbone_trains = 0 if strategy == "feature_extraction" else layer_map.trainable_parameters(frozen_layers, train_batchnorm=strategy == "from_scratch")
    picture_column, numbers_column = st.columns([3, 1], gap="medium")
    with picture_column:
        unit = st.radio("Block width by", ["layers", "parameters"], horizontal=True, key="setup_block_unit", persist_state="session")
        st.plotly_chart(freeze_figure(layer_map, frozen_layers, strategy, head_parameters, unit, heads), width="stretch", config={"displayModeBar": False})
    with numbers_column:
        st.metric(
            "Parameters that train", f"{backbone_trains + head_parameters:,}",
            help=f"Backbone {backbone_trains:,} + new head{'s' if heads > 1 else ''} {head_parameters:,} ({feature_wording(spec)} × {dataset.num_classes} classes "
            + (f"+ {dataset.num_classes} biases per head)." if heads > 1 else f"+ {dataset.num_classes} biases)."),
        )
        st.metric("Layers frozen", f"{frozen_layers} of {total}")
        st.metric(
            "Parameters not trained", f"{max(sum(layer.parameters for layer in layer_map.layers) - backbone_trains, 0):,}",
            help="Frozen weights, plus the running statistics of BatchNorm layers, which are never trained by the optimiser.",
        )
    return frozen_layers, layer_map


def choose_freeze_depth(spec, layer_map, previous: TrainConfig | None, suggested) -> int:
    """The freeze slider, by block, starting from the last visit's depth or the engine's suggestion."""
    total = len(layer_map.layers)
    if previous is not None and previous.backbone == spec.name and previous.freeze_layers is not None:
        start = previous.freeze_layers
    else:
        start = suggested.freeze_layers
        if suggested.freeze_reason.startswith("measured"):
            st.caption(f"Starting from the measured suggestion: {freeze_wording(layer_map.blocks, start)} ({suggested.freeze_reason}).")
    block_ends = {block.end: block for block in layer_map.blocks[:-1]}
    if block_ends:
        frozen_layers = st.select_slider(
            "Last frozen block", options=list(block_ends), format_func=lambda end: f"{block_ends[end].name} (the first {end} layers)",
            key=remembered(f"setup_freeze_{spec.name}", min(block_ends, key=lambda end: abs(end - start))), persist_state="page",
            help="Early blocks detect generic edges and textures and are worth keeping; later blocks hold ImageNet-specific parts. "
            "Freezing more trains faster and overfits less; freezing less adapts more to your images.",
        )
    else:
        frozen_layers = st.slider("Layers kept frozen", 0, total, key=remembered(f"setup_freeze_{spec.name}", min(start, total)), persist_state="page")
    wording = freeze_wording(layer_map.blocks, frozen_layers)
    st.caption(f"Freeze depth: **{wording}**, at a tenth of the learning rate after the head's warm-up. BatchNorm layers always stay frozen.")
    return frozen_layers


def choose_augmentation(
    strategy: str, dataset: Dataset, defaults: TrainConfig, previous: TrainConfig | None, suggested, centre_crop: bool
) -> tuple[bool, int, AugmentConfig]:
    """Section 3: whether and how training images are changed, with a preview (of the middles, with ``centre_crop``); returns (augment, cached views, settings)."""
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
        flip = st.selectbox(
            "Flips", FLIP_MODES, format_func=FLIP_NAMES.get, disabled=not augment,
            key=remembered("setup_flip", defaults.augmentation.flip if previous is not None and defaults.augmentation.flip in FLIP_MODES else suggested.flip),
            help="Up-down flips suit images without a natural up (microscopy, satellite), not photos of upright things.",
        )
        amounts = {
            name: st.slider(label, 0.0, 0.5, step=0.05, disabled=not augment, key=remembered(f"setup_{name}", getattr(defaults.augmentation, name)))
            for name, label in (("rotation", "Rotation (share of a full turn)"), ("zoom", "Zoom (share of the size)"), ("translation", "Shift (share of width and height)"), ("contrast", "Contrast change"))
        }
        how = (
            "the head also learns from each image turned by a quarter, half and three-quarter turn, mirrored or not (their features are computed "
            "after the first model, where they pay)" if strategy == "feature_extraction" else "each training image is also turned by a random number of quarter turns"
        )
        turns = st.checkbox(
            "Turned images are the same class", disabled=not augment or flip not in MIRRORING_FLIPS,
            key=remembered("setup_turns", bool(defaults.augmentation.turns) if previous is not None else suggested.turns),
            help=f"For images where up is anywhere (aerial scenes, microscope images, surfaces): {how}, and the model averages its answers over all "
            "eight turned and mirrored views (in the saved model too, so each prediction costs eight passes). "
            + ("The advice measured that turned images read as the same class here." if suggested.turns else "The advice did not find turned images to read as the same class here."),
        )
        augmentation = AugmentConfig(flip=flip, turns=turns and flip in MIRRORING_FLIPS, **amounts)
        if augment:
            st.caption(
                f"Up to ±{augmentation.rotation * 360:.0f}° rotation, ±{augmentation.zoom:.0%} zoom, ±{augmentation.translation:.0%} shift, "
                f"±{augmentation.contrast:.0%} contrast; flips: {FLIP_NAMES[flip].lower()}"
                + ("; quarter turns, with the answers averaged over the eight turned and mirrored views." if augmentation.turns else ".")
            )
    with preview_column:
        show_preview(dataset, augment, augment_views, augmentation, strategy, centre_crop)
    return augment, int(augment_views) if augment else 0, augmentation


def show_preview(dataset: Dataset, augment: bool, augment_views: int, augmentation: AugmentConfig, strategy: str, centre_crop: bool) -> None:
    """A few training images and random versions of them, as the augmentation changes them (their middles, with ``centre_crop``)."""
    if not augment:
        st.info("Augmentation is off: the network sees every training image as it is. On small datasets, augmentation is one of the best guards against overfitting.")
        return
    state.setdefault("setup_preview_seed", 0)
    records = preview_records(dataset, PREVIEW_CLASSES)
    try:
        grid = augmented_versions(engine, tuple(record.path for record in records), tuple(sorted(augmentation.to_dict().items())), state["setup_preview_seed"], centre_crop)
    except TLError as error:
        st.error(str(error))
    else:
        if strategy == "feature_extraction" and not augment_views:
            extra = "their mirror images and turned views (the eight turns and mirrors)" if augmentation.turns else "their mirror images"
            st.caption(f"Preview only: with 0 augmented views, feature extraction trains on the original images and, with left-right flips, {extra}.")
        if centre_crop:
            st.caption("Shown as the network will see them: the middle of each image (the box *Middle of each image* below).")
        captions = ["original"] + [f"version {number}" for number in range(1, PREVIEW_VERSIONS + 1)]
        for record, versions in zip(records, grid, strict=True):
            st.markdown(f"**{record.class_name}** · `{Path(record.path).name}`")
            st.image(list(versions), width=112, caption=captions)
    st.button("New random versions", icon=":material/casino:", on_click=lambda: state.update(setup_preview_seed=state.get("setup_preview_seed", 0) + 1))


def preview_records(dataset: Dataset, count: int) -> list[ImageRecord]:
    """The first training image of up to ``count`` classes spread over the class list."""
    picks = sorted({int(round(index)) for index in np.linspace(0, dataset.num_classes - 1, min(count, dataset.num_classes))})
    records = []
    for class_index in picks:
        in_class = [record for record in dataset.records if record.class_name == dataset.class_names[class_index]]
        records.append(([record for record in in_class if record.split == "train"] or in_class)[0])
    return records


@st.cache_data(max_entries=16, show_spinner=False)
def augmented_versions(_engine, paths: tuple[str, ...], settings: tuple, seed: int, centre_crop: bool) -> np.ndarray:
    """Originals and augmented versions, remembered so that unrelated widget changes do not recompute them."""
    return _engine.augment_preview(list(paths), PREVIEW_SIZE, AugmentConfig(**dict(settings)), versions=PREVIEW_VERSIONS, seed=seed, centre_crop=centre_crop)


def choose_training(spec, strategy: str, dataset: Dataset, defaults: TrainConfig, previous: TrainConfig | None, mirrors: bool) -> dict:
    """Section 4: the recipe or its quick variant, epochs, image size, batch size, learning rate and the rest; returns TrainConfig fields."""
    st.subheader("Training")
    recipe_column, notes_column = st.columns([1, 3], gap="medium")
    variant = recipe_column.radio(
        "Recipe", list(VARIANTS), format_func=VARIANTS.get, key=remembered(f"setup_recipe_{strategy}", "quick" if previous is not None and previous.strategy == strategy and previous.quick else "recommended"),
        help="The recommended recipe is what measured best in our benchmarks. The quick one makes fewer passes over the images: a first look in a fraction of the time.",
    )
    quick = variant == "quick"
    notes_column.caption(recipe_description(strategy, quick))
    suggested = engine.suggested_settings(dataset, spec.name, strategy, quick, session.recalled_value(state, session.ADVICE, dataset.fingerprint()))
    # The last visit's values when it used the same strategy and recipe; otherwise the engine's suggestion.
    start = previous if previous is not None and previous.strategy == strategy and previous.quick == quick else suggested
    first_row = st.columns(4)
    epochs = first_row[0].number_input(
        "Head epochs (at most)" if strategy == "feature_extraction" else "Epochs", min_value=1, max_value=1000, step=1, persist_state="page",
        key=remembered(f"setup_epochs_{strategy}_{variant}", start.epochs), help="Passes over the training images. Early stopping ends the run sooner when validation loss stops improving.",
    )
    if strategy in ("fine_tune", "full_fine_tune"):
        warmup_epochs = first_row[1].number_input(
            "Warm-up epochs (head only, at most)", min_value=0, max_value=1000, step=1, persist_state="page", key=remembered(f"setup_warmup_{strategy}_{variant}", start.warmup_epochs),
            help="The new head first trains alone on cached features (seconds) until its validation loss stops improving, so its random start "
            "does not send large, damaging updates into the pretrained layers.",
        )
    else:
        warmup_epochs = 0
        first_row[1].caption("No warm-up: " + ("the head is all that trains." if strategy == "feature_extraction" else "everything trains from the start."))
    advised_size = suggested.image_size or spec.default_size
    sizes = sorted({size for size in FAST_IMAGE_SIZES if spec.min_size <= size < spec.default_size} | {spec.default_size, advised_size})
    remembered_size = defaults.image_size if previous is not None and previous.backbone == spec.name and defaults.image_size in sizes else advised_size

    def size_words(size: int) -> str:
        kind = " (advised)" if size == advised_size and suggested.image_size else " (the network's own)" if size == spec.default_size else " (faster)"
        return f"{size} px{kind}"

    image_size = first_row[2].selectbox(
        "Image size", sizes, format_func=size_words, key=remembered(f"setup_image_size_{spec.name}", remembered_size),
        help=f"Images are resized to this square. {spec.display_name}'s ImageNet weights saw {spec.default_size} px; smaller is faster, mostly on a CPU, and can cost some accuracy "
        "unless the images are small themselves: then a size near their own is as good and many times faster.",
    )
    centre_crop = first_row[2].checkbox(
        "Middle of each image", key="setup_centre_crop",
        help="Learn from, and answer from, the middle 80 % of each side of the image: the subject then fills more of the network's view. "
        "It helps where the subject sits in the middle of the photo (pets, plants, products) and hurts where the edges matter (scenes, surfaces). "
        + ("The advice measured that the middles read better here." if suggested.centre_crop else "The advice did not find the middles to read better here."),
    )
    if suggested.image_size_reason:
        st.caption(suggested.image_size_reason)
    batch_size = first_row[3].select_slider(
        "Batch size", BATCH_SIZES, key=remembered("setup_batch_size", defaults.batch_size if defaults.batch_size in BATCH_SIZES else 32),
        help="Images per training step. Larger batches use more memory; lower it if training runs out of memory.",
    )
    return {
        "quick": quick, "epochs": int(epochs), "warmup_epochs": int(warmup_epochs), "image_size": int(image_size), "batch_size": int(batch_size), "centre_crop": bool(centre_crop),
        "learning_rate_schedule": suggested.learning_rate_schedule, **choose_more_training(strategy, dataset, defaults, previous, start, suggested, variant, mirrors),
    }


def choose_more_training(strategy: str, dataset: Dataset, defaults: TrainConfig, previous: TrainConfig | None, start, suggested, variant: str, mirrors: bool) -> dict:
    """The second row of section 4: learning rate, class weights, test-time flip, patience and seed."""
    row = st.columns(5)
    learning_rate = row[0].select_slider(
        "Learning rate", LEARNING_RATES, format_func=lambda rate: f"{rate:g}", key=remembered("setup_learning_rate", min(LEARNING_RATES, key=lambda rate: abs(rate - defaults.learning_rate))),
        help="How big each update is. For fine-tuning, the backbone's layers use a tenth of it.",
    )
    if strategy in ("fine_tune", "full_fine_tune"):
        row[0].caption(f"Head {learning_rate:g}, backbone layers {learning_rate / 10:g}, warmed up over the first epoch, then decayed (cosine).")
    class_weights = row[1].checkbox(
        "Class weights", key=remembered("setup_class_weights", defaults.class_weights if previous is not None and defaults.class_weights is not None else suggested.class_weights),
        help=f"Weights each image by how rare its class is, so small classes count as much as big ones. Your largest class has {dataset.imbalance_ratio():.1f}× the images of the smallest; "
        "on from 3×.",
    )
    test_time_flip = row[2].checkbox(
        "Test-time flip", key=remembered(f"setup_tta_{strategy}_{variant}", bool(start.test_time_flip)), disabled=not mirrors,
        help="Each prediction is the average of the model's answers for the image and its mirror image, in the evaluation and inside the exported "
        "model file (which then does the same for anyone who loads it). Needs left-right flips: a mirrored digit or letter is not the same class.",
    )
    patience = row[3].number_input(
        "Early stopping patience", min_value=0, max_value=100, step=1, persist_state="page", key=remembered(f"setup_patience_{strategy}_{variant}", start.early_stopping_patience),
        help="Stop after this many epochs without a better validation loss (0: never stop early). The best epoch's weights are kept either way.",
    )
    seed = row[4].number_input(
        "Seed", min_value=0, max_value=2**31 - 1, step=1, key=remembered("setup_seed", defaults.seed),
        help="Decides the generated train/validation/test split, the starting weights, shuffling and augmentation. The same seed repeats a run.",
    )
    return {"learning_rate": float(learning_rate), "class_weights": class_weights, "test_time_flip": bool(test_time_flip and mirrors), "early_stopping_patience": int(patience), "seed": int(seed)}


def show_ready(config: TrainConfig, spec, blocks) -> None:
    """The plan in one sentence, its estimated time here, and every setting."""
    details = []
    if config.strategy == "fine_tune":
        details.append(freeze_wording(blocks, config.freeze_layers))
    if config.augment and (config.strategy != "feature_extraction" or config.augment_views):
        details.append("with augmentation" + (f" ({config.augment_views} cached views)" if config.strategy == "feature_extraction" else ""))
    if config.class_weights:
        details.append("class weights on")
    if config.test_time_flip:
        details.append("test-time flip")
    if config.crops_centre:
        details.append(f"the middle of each image (the model takes {config.input_size} px)")
    extra = f"; {'; '.join(details)}" if details else ""
    st.success(
        f"Ready: {STRATEGY_TITLES[config.strategy].lower()} with {spec.display_name} at {config.image_size} px: {epochs_plan(config)}{extra}.",
        icon=":material/check_circle:",
    )
    show_estimate(config)
    with st.expander("All settings of this run"):
        st.json({name: value for name, value in config.to_dict().items() if name != "out_dir"}, expanded=True)


def show_estimate(config: TrainConfig) -> None:
    """Roughly how long the run takes here, where the time goes, and what the other recipe would take."""
    try:
        with st.spinner("Timing this device's forward pass (once per network and image size)…"):
            estimate = engine.estimate(config, dataset)
            other = engine.estimate(replace(config, quick=not config.quick, **dict.fromkeys(RECIPES[config.strategy])).validated(), dataset)
    except TLError as error:
        st.caption(f"No time estimate: {error}")
        return
    columns = st.columns([1, 3])
    columns[0].metric("Estimated time", estimate.describe().removeprefix("about "), help=f"Rough: {estimate.basis}. Early stopping can make a run shorter.")
    parts = ", ".join(f"{PART_NAMES.get(name, name)} {duration_text(seconds)}" for name, seconds in estimate.parts.items() if seconds >= 1)
    columns[1].caption(f"On this device ({estimate.basis}): {parts}. The {'recommended' if config.quick else 'quick'} recipe would take about {duration_text(other.seconds)}.")


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
show_device()
spec, strategy = choose_backbone_and_strategy(defaults, state["recommendation"])
try:
    suggested = engine.suggested_settings(dataset, spec.name, strategy, False, session.recalled_value(state, session.ADVICE, dataset.fingerprint()))
except TLError as error:
    st.error(str(error))
    st.stop()
frozen_layers, layer_map = choose_what_trains(spec, strategy, dataset, previous, suggested)
# The box sits with the training settings below; its key is seeded here so that the preview above shows the same framing.
centre_crop_key = remembered("setup_centre_crop", bool(defaults.centre_crop) if previous is not None else suggested.centre_crop)
augment, augment_views, augmentation = choose_augmentation(strategy, dataset, defaults, previous, suggested, bool(state[centre_crop_key]))
training = choose_training(spec, strategy, dataset, defaults, previous, augmentation.mirrors)
st.divider()
try:
    config = TrainConfig(
        data_dir=state["data_dir"] or str(dataset.root), out_dir="", backbone=spec.name, strategy=strategy, freeze_layers=frozen_layers if strategy == "fine_tune" else None,
        augment=augment, augment_views=augment_views, augmentation=augmentation, **training,
    ).validated()
except TLError as error:
    state["train_config"] = None
    st.error(str(error))
    st.stop()
state["train_config"] = config
show_ready(config, spec, layer_map.blocks)
st.page_link("pages/train.py", label="Next: train the model", icon=":material/arrow_forward:")
