"""Step 2, Scenario: place the dataset in the size x similarity matrix and recommend a strategy."""

import streamlit as st

from tl_core.advice.compare import best_row
from tl_core.advice.scenario import SCENARIOS, Recommendation, candidate_strategies, classify_size
from tl_core.config import STRATEGY_TITLES
from tl_core.errors import TLError
from tl_core.models.blocks import freeze_wording
from ui import state as session
from ui.charts import comparison_figure, matrix_figure, shift_profile_figure
from ui.weights import weights_panel

state = st.session_state
engine = state["engine"]

SIMILARITY_CHOICES = {
    "high": "Yes: everyday photos of objects, animals, people, plants or scenes",
    "low": "No: something else, such as X-rays, microscope slides, satellite images, handwriting, spectrograms or industrial textures",
}
SIMILARITY_WORDS = {"high": "similar to ImageNet", "low": "unlike ImageNet"}

st.title("2 · Where your data sits")
st.markdown(
    "Which strategy suits your data depends on two things: **how many images** each class has, and **how much they look like "
    "ImageNet**, the 1.2 million everyday photos the pretrained networks learned from. Together they place your data in one "
    "of four cells, and each cell has its own way to reuse a pretrained network."
)

dataset = state["dataset"]
if dataset is None:
    st.info("No dataset loaded yet. Load a folder of images (or the sample dataset) first; this page then measures its size and places it in the matrix.")
    st.page_link("pages/data.py", label="Go to step 1 · Data", icon=":material/folder_open:")
    st.stop()


def strategy_name(strategy: str) -> str:
    return STRATEGY_TITLES[strategy].lower()


def ask_similarity() -> str | None:
    """The user's answer to "do the images look like ImageNet photos?" (None until answered)."""
    if "scenario_similarity" not in state and state["similarity"] in SIMILARITY_CHOICES:
        state["scenario_similarity"] = state["similarity"]
    answer = st.radio(
        "Do your images look like the everyday photos ImageNet is made of?",
        list(SIMILARITY_CHOICES),
        index=None,
        format_func=SIMILARITY_CHOICES.get,
        key="scenario_similarity",
        help="Pretrained networks learned edges and textures that help almost everywhere, and object parts (fur, wheels, faces) "
        "that help mostly on photos like ImageNet's. The further your images are from such photos, the more layers must relearn.",
    )
    state["similarity"] = answer
    return answer


def similarity_text(recommendation: Recommendation) -> str:
    """How the similarity was decided: a measured score when there is one, otherwise the user's answer."""
    if recommendation.similarity_source == "measured" and recommendation.similarity_score is not None:
        return f"measured similarity {recommendation.similarity_score:.2f} (0 = unlike, 1 = alike): **{recommendation.similarity}**"
    return f"your answer: **{recommendation.similarity}** ({SIMILARITY_WORDS[recommendation.similarity]})"


def current_advice():
    """The measured advice for this dataset, if it was measured (advice for another dataset is ignored)."""
    return session.recalled_value(state, session.ADVICE, dataset.fingerprint())


def measure_similarity() -> None:
    st.caption(
        "Or let the app **measure** it on up to 500 of your images (about a minute on a CPU): how well the pretrained features "
        "separate your classes compared with random ones, how far your images shift the network's internal statistics, and how "
        "sure an ImageNet classifier is about them."
    )
    ready = weights_panel(engine, "mobilenet_v2", "scenario_weights")
    budget_column, button_column = st.columns([1, 1], vertical_alignment="bottom")
    budget = budget_column.number_input(
        "Time budget (minutes)", min_value=1.0, max_value=1440.0, value=10.0, step=1.0, key="scenario_budget",
        help="The advice recommends no strategy it expects to take longer than this on this computer, and fits fine-tuning's epochs into it.",
    )
    if button_column.button("Measure similarity", icon=":material/biotech:", key="scenario_measure", disabled=not ready):
        try:
            with st.spinner("Measuring: running the pretrained network, a random one and an ImageNet classifier on your images…"):
                session.remember(state, session.ADVICE, dataset.fingerprint(), engine.advise(dataset, time_budget_minutes=float(budget)))
        except TLError as error:
            st.error(str(error))
        else:
            st.rerun()  # redraw the page from the measurement


def show_measurement(advice) -> None:
    measurement = advice.measurement
    st.markdown(f"**Measured similarity: {measurement.similarity_score:.2f}** ({measurement.similarity}; 0.5 and above counts as high)")
    columns = st.columns(3)
    columns[0].metric("Probe gain", f"{measurement.probe_similarity:.2f}", help=(
        f"Pretrained features: {measurement.probe_accuracy:.0%} cross-validated accuracy; random weights: {measurement.random_probe_accuracy:.0%}; "
        f"chance: {measurement.chance_accuracy:.0%}. The share of the headroom above random features that pretraining wins."))
    columns[1].metric("Domain shift", f"{measurement.shift_similarity:.2f}", help=(
        f"Your images move the BatchNorm statistics by {measurement.mean_shift:.2f} on average (ImageNet-like photos: about 0.1). "
        "Less shift, higher similarity."))
    if measurement.confidence_similarity is not None:
        columns[2].metric("Confidence", f"{measurement.confidence_similarity:.2f}", help=(
            f"An ImageNet classifier is {measurement.imagenet_confidence:.0%} sure of its top class on average."))
    else:
        columns[2].metric("Confidence", "n/a", help="; ".join(measurement.notes) or "Not measured.")
    if not measurement.mirror_images_help:
        st.caption(
            f"Mirror images look like another class here (the probe loses {measurement.probe_accuracy - (measurement.mirror_probe_accuracy or 0):.1%} with them): "
            "left-right flips are turned off on the Setup page."
        )
    if st.button("Use my own answer instead", key="scenario_forget_measurement"):
        state["advice"] = None
        st.rerun()


def show_candidates(advice) -> None:
    """Every strategy weighed: expected accuracy against estimated minutes, so the user can trade one for the other."""
    import pandas as pd

    if advice.overrides_matrix:
        st.info(f"{advice.override_text()} The numbers:", icon=":material/balance:")
    sized = any(row.image_size for row in advice.candidates)  # small images: each strategy also at sizes near theirs
    networks = {spec.name: spec for spec in engine.backbones()}
    spec_size = networks[advice.backbone].default_size if advice.backbone in networks else 224
    joined = any(row.backbone for row in advice.candidates)  # feature extraction with two networks' features weighed too
    rows = [
        {
            "strategy": STRATEGY_TITLES[row.strategy] + ("  ★ recommended" if row.recommended else ""),
            **({"network": networks[row.backbone or advice.backbone].display_name} if joined else {}),
            **({"image size": f"{row.image_size or spec_size} px"} if sized else {}),
            "expected accuracy": None if row.expected_accuracy is None else 100 * row.expected_accuracy,
            "minutes here": None if row.seconds is None else round(row.seconds / 60, 1),
            "fits the budget": "yes" if row.within_budget else "no",
            "epochs": row.epochs,
        }
        for row in advice.candidates
    ]
    # Tall enough for every row (a header and 35 px a row): with sizes and networks weighed there are a dozen, and a scrolled table hides some.
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=35 * (len(rows) + 1) + 3, column_config={
        "expected accuracy": st.column_config.NumberColumn(format="%.1f%%"),
        "minutes here": st.column_config.NumberColumn(format="%.1f min"),
    })
    st.caption(
        "Expected accuracies are estimates: feature extraction's is measured on your images; fine-tuning's is feature extraction's with a share "
        "of its errors removed, a share that grows with how unlike ImageNet your images measured"
        + (" and with the turned images fine-tuning learns from" if advice.turns else "")
        + ". Compare the strategies below to measure them all on the same split."
    )
    bases = "\n".join(f"- **{row.title[0].upper() + row.title[1:]}**: {row.accuracy_basis}" for row in advice.candidates if row.accuracy_basis)
    if sized:
        bases += f"\n\n{advice.image_size_reason}"
    with st.expander("Where each expected accuracy comes from", expanded=len(advice.candidates) <= 4):
        st.caption(bases)


left_column, right_column = st.columns([2, 3], gap="large")
with left_column:
    st.subheader("How much data?")
    size_slot = st.container()  # filled in below, once the size verdict is known
    st.subheader("How similar to ImageNet?")
    advice = current_advice()
    if advice is None:
        similarity = ask_similarity()
        measure_similarity()
    else:
        show_measurement(advice)
        similarity = advice.recommendation.similarity

recommendation = None
if advice is not None:
    recommendation = advice.recommendation
elif similarity is not None:
    try:
        recommendation = engine.recommend(dataset, similarity)
    except TLError as error:
        st.error(str(error))
state["recommendation"] = recommendation
verdict = recommendation.size_verdict if recommendation is not None and recommendation.size_verdict else classify_size(dataset)

with size_slot:
    metrics = st.columns(3)
    metrics[0].metric("Training images", f"{verdict.train_images:,}")
    metrics[1].metric("Per class", f"{verdict.images_per_class:,.0f}", help=f"Mean training images per class. Below {verdict.threshold:,} per class counts as small data.")
    metrics[2].metric("Smallest class", f"{verdict.smallest_class:,}")
    st.markdown(f"Measured: your data is **{verdict.size}**. {verdict.reason}")

with right_column:
    measured_strategy = advice.recommendation.strategy if advice is not None and advice.overrides_matrix else None
    st.plotly_chart(matrix_figure(verdict, recommendation, measured_strategy), width="stretch", config={"displayModeBar": False})

if recommendation is None:
    st.info("Answer the similarity question to see which cell your data falls in and what to do about it.")
    st.stop()

st.divider()
strategy = strategy_name(recommendation.strategy)
if advice is not None and advice.chosen_backbone and advice.recommendation.strategy == recommendation.strategy:
    strategy += f" with {next(spec.display_name for spec in engine.backbones() if spec.name == advice.chosen_backbone)}"
if advice is not None and advice.overrides_matrix:
    st.subheader(f"Scenario {recommendation.scenario} · {recommendation.title}: measured, use {strategy} (the matrix alone says {strategy_name(advice.matrix_strategy)})")
else:
    st.subheader(f"Scenario {recommendation.scenario} · {recommendation.title}: use {strategy}")
st.caption(f"Size measured from the training split; similarity from {similarity_text(recommendation)}.")
if advice is not None and advice.candidates:
    show_candidates(advice)
st.markdown("\n".join(f"- {reason}" for reason in recommendation.reasons))

if advice is not None:
    with st.expander("How it was measured: the domain-shift profile and the freeze depth"):
        st.plotly_chart(shift_profile_figure(advice.measurement.shift_profile, advice.fine_tune_freeze_layers), width="stretch", config={"displayModeBar": False})
        st.caption(
            f"Each point is one BatchNormalization layer: how far your images move the statistics it learned on ImageNet. "
            f"Where the shift grows, the pretrained layers stop fitting your images: a natural place to stop freezing. "
            f"Suggested for fine-tuning: {freeze_wording(engine.layer_map(advice.backbone).blocks, advice.fine_tune_freeze_layers)}, "
            f"learning rate {advice.learning_rate:g}, augmentation {'on' if advice.augment else 'optional'}. "
            f"Measured on {advice.measurement.sample_size} images in {advice.measurement.seconds:.0f} s."
        )
        for note in advice.measurement.notes:
            st.caption(note)

if recommendation.scenario == 2:
    st.markdown("##### Two views on small data that is unlike ImageNet")
    views = st.columns(2)
    with views[0].container(border=True):
        st.markdown(
            "**Freeze the early layers, retrain the rest.** The first layers detect edges, blobs and textures, which are useful "
            "on almost any image. Keep them frozen and retrain the later layers, which learned ImageNet's object parts, at a "
            "low learning rate so your few images are not enough to wreck them."
        )
    with views[1].container(border=True):
        st.markdown(
            "**Transfer may barely help.** When the images are this different, even the later features may not fit, and a fresh, "
            "smaller model trained only on your data can do as well. Then the pretrained start mostly adds cost."
        )
    st.markdown("Neither view is right in general; your data decides. **Compare them side by side** below: same split, same seed, a few epochs each.")

chosen = state.get("chosen_strategy")
if st.button(f"Use {strategy} on the Setup page", type="primary", icon=":material/check:"):
    state["chosen_strategy"] = recommendation.strategy
    chosen = recommendation.strategy
    advised = session.recalled_value(state, session.ADVICE, dataset.fingerprint())
    state["chosen_backbone"] = advised.chosen_backbone if advised is not None and recommendation.strategy == advised.recommendation.strategy else None
if chosen == recommendation.strategy:
    st.success(f"The Setup page will start from {strategy}. You can still change the strategy there.")
elif chosen:
    st.warning(
        f"The Setup page is set to {strategy_name(chosen)} from an earlier choice, not the {strategy} recommended here. "
        "Use the button above to switch it."
    )

def show_comparison(rows) -> None:
    import pandas as pd

    table = pd.DataFrame(
        [{"strategy": STRATEGY_TITLES[row.strategy], "validation accuracy": row.val_accuracy, "validation loss": row.val_loss,
          "held-out accuracy": row.held_out_accuracy, "seconds": row.seconds, "epochs": row.epochs,
          "full run here": None if row.full_run_seconds is None else round(row.full_run_seconds / 60, 1),
          "status": row.status + (f": {row.error}" if row.error else "")}
         for row in rows]
    )
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "validation accuracy": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
        "held-out accuracy": st.column_config.NumberColumn(format="percent", help="Reported only: the pick looks at validation accuracy."),
        "seconds": st.column_config.NumberColumn(format="%.1f s"), "full run here": st.column_config.NumberColumn(format="%.1f min"),
    })
    finished = [row for row in rows if row.val_accuracy is not None]
    if finished:
        st.plotly_chart(comparison_figure(finished), width="stretch", config={"displayModeBar": False})


st.markdown("##### Compare strategies side by side")
st.caption(
    "Trains each strategy on the same split with its recipe: feature extraction in full (it reuses cached features, so it costs little), "
    "fine-tuning and training from scratch for a few epochs. The pick looks at validation accuracy only; each row also says how long a full run takes here."
)
candidates = st.multiselect("Strategies", list(STRATEGY_TITLES), default=candidate_strategies(recommendation.scenario), format_func=STRATEGY_TITLES.get, key="compare_strategies")
settings = st.columns(3)
compare_epochs = settings[0].number_input("Epochs of fine-tuning or from-scratch training", 1, 50, 2, key="compare_epochs")
compare_size = settings[1].selectbox("Image size", [96, 128, 160, 224], index=3, format_func=lambda size: f"{size} px", key="compare_size")
all_per_class = max(verdict.images_per_class, 5)
compare_per_class = settings[2].number_input(
    "Training images per class (at most)", 5, 100_000, int(min(max(all_per_class, 5), 100_000)), key="compare_per_class",
    help="All of them by default: a comparison on a subsample can pick another winner than a full run.",
)
if st.button("Run the comparison", icon=":material/compare_arrows:", disabled=not candidates, key="compare_run"):
    progress = st.status(f"Comparing {len(candidates)} strategies…", expanded=True)
    try:
        rows = engine.compare(
            str(state["data_dir"] or dataset.root), candidates, state["workspace"].new_run_dir("compare"), int(compare_epochs), int(compare_size), int(compare_per_class),
            advice.fine_tune_freeze_layers if advice is not None else None, flip=advice.flip if advice is not None else "horizontal",
            centre_crop=bool(advice is not None and advice.centre_crop),
            on_row=lambda row: progress.write(f"{STRATEGY_TITLES[row.strategy]}: validation accuracy {row.val_accuracy or 0:.1%} in {row.seconds:.0f} s"),
        )
    except TLError as error:
        progress.update(label="The comparison failed", state="error")
        st.error(str(error))
    else:
        progress.update(label="Comparison done", state="complete", expanded=False)
        session.remember(state, session.COMPARISON, dataset.fingerprint(), rows)
rows = session.recalled_value(state, session.COMPARISON, dataset.fingerprint())
if rows:
    show_comparison(rows)
    winner = best_row(rows)
    if winner is not None:
        if st.button(f"Adopt the winner: {STRATEGY_TITLES[winner.strategy].lower()}", type="primary", key="compare_adopt"):
            state["chosen_strategy"] = winner.strategy
            st.rerun()
        leader = max((row for row in rows if row.val_accuracy is not None), key=lambda row: row.val_accuracy)
        if leader is winner:
            note = f"Picked: {STRATEGY_TITLES[winner.strategy].lower()}, the best validation accuracy ({winner.val_accuracy:.1%}), by more than chance explains."
        else:
            note = (
                f"Picked: {STRATEGY_TITLES[winner.strategy].lower()} ({winner.val_accuracy:.1%}). {STRATEGY_TITLES[leader.strategy]} scored "
                f"{leader.val_accuracy:.1%}, a lead smaller than {winner.val_images or 'these'} validation images can tell from chance, and a full run of it takes longer."
            )
        st.caption(note)

with st.expander("What the other cells would mean for your data"):
    cells = st.columns(len(recommendation.alternatives))
    for column, (number, meaning) in zip(cells, sorted(recommendation.alternatives.items()), strict=True):
        cell = SCENARIOS[number]
        with column:
            st.markdown(f"**Scenario {number} · {cell['title']}**")
            st.caption(f"Strategy: {strategy_name(cell['strategy'])}")
            st.markdown(meaning)

st.page_link("pages/setup.py", label="Next: choose the model and training settings", icon=":material/arrow_forward:")
