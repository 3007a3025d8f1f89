"""Step 1b, Labels: find images that are probably labelled wrong, and decide what to do with each."""

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.data.decisions import DECISIONS_FILE, LabelDecision, changed, choice_of, choices, decide_for_many, folder_label
from tl_core.errors import TLError
from ui import state as session
from ui.weights import weights_panel

state = st.session_state
engine = state["engine"]

PER_PAGE = 12

st.title("1b · Check the labels")
st.markdown(
    "A few wrong labels cost more accuracy than any setting. This step runs the pretrained network over every image once, "
    "then trains a simple classifier on its features five times, each time leaving a fifth of the images out, so **every image is judged "
    "by a model that never saw its label**. The images it puts in another class are the suspects, least likely label first; "
    "confident learning (the `cleanlab` library) flags the surest of them."
)
st.caption(
    "Nothing is moved or deleted: your decisions are saved in a small file, "
    f"`{DECISIONS_FILE}`, in the dataset folder, and every training run applies them and records them."
)

dataset = state["dataset"]
if dataset is None:
    st.info("Load a dataset on the Data page first.")
    st.page_link("pages/data.py", label="Go to the Data page", icon=":material/folder_open:")
    st.stop()


def rescan() -> None:
    """The dataset again, with the saved decisions applied; results that described the old labels are cleared."""
    session.relabelled(state, engine.scan(state["data_dir"]))


def decision_cards(items: list[dict], decisions: dict, key: str) -> dict[str, LabelDecision | None]:
    """A grid of images, each with its facts and a decision box; returns the decision chosen for each (by relative path)."""
    chosen: dict[str, LabelDecision | None] = {}
    previews = engine.thumbnails([item["path"] for item in items], size=160)
    for start in range(0, len(items), 4):
        columns = st.columns(4)
        for column, item, preview in zip(columns, items[start : start + 4], previews[start : start + 4], strict=False):
            given = folder_label(item["relative_path"], item["label"], decisions)
            options = choices(given, dataset.class_names, item.get("suggested"))  # the suggested class first: the likely fix is one click away
            saved = choice_of(decisions.get(item["relative_path"]))
            with column:
                if preview is not None:
                    st.image(preview, width="stretch")
                else:
                    st.warning("This file cannot be read.")
                st.markdown(item["headline"])
                st.caption(f"`{item['relative_path']}` · {item['split']}")
                option = st.selectbox(
                    "Decision", options, index=options.index(saved) if saved in options else 0, format_func=lambda option, given=given: option.describe(given),
                    key=f"{key}_{state.get('decisions_saved', 0)}_{item['relative_path']}", label_visibility="collapsed",
                )
            chosen[item["relative_path"]] = option.decision(item["relative_path"], given)
    return chosen


def decision_form(name: str, items: list[dict], decisions: dict, button: str = "Save the decisions on this page", border: bool = False) -> None:
    """The cards of ``items`` in a form: their decisions are saved together, when the button is pressed."""
    with st.form(f"{name}_form", border=border):
        chosen = decision_cards(items, decisions, name)
        if st.form_submit_button(button, type="secondary" if border else "primary"):
            save(chosen, decisions)


def save(chosen: dict[str, LabelDecision | None], decisions: dict) -> None:
    """Saves the decisions that changed and reloads the dataset with them."""
    changes = changed(chosen, decisions)
    if not changes:
        st.toast("Nothing changed.")
        return
    try:
        engine.decide_labels(dataset.root, changes)
    except TLError as error:
        st.error(str(error))
        return
    state["decisions_saved"] = state.get("decisions_saved", 0) + 1  # new decision boxes, showing what is saved now
    rescan()
    state["labels_saved"] = f"Saved {len(changes)} decision{'s' if len(changes) != 1 else ''} in {Path(dataset.root) / DECISIONS_FILE}."
    st.rerun()


def paged(items: list, key: str) -> list:
    pages = max(1, -(-len(items) // PER_PAGE))
    if pages == 1:
        return items
    number = st.number_input(f"Page (of {pages}, {PER_PAGE} per page)", min_value=1, max_value=pages, value=1, step=1, key=f"{key}_page")
    return items[(number - 1) * PER_PAGE : number * PER_PAGE]


try:
    decisions = engine.label_decisions(dataset.root)
except TLError as error:
    st.error(str(error))
    st.stop()

if state.get("labels_saved"):
    st.success(state.pop("labels_saved"))

report_entry = session.recall(state, session.LABEL_REPORT, str(dataset.root))
report = report_entry.value if report_entry is not None else None

images = len(dataset.records)
button = "Look for wrong labels again" if report else "Look for wrong labels"
st.caption(f"{images:,} images with MobileNetV2's ImageNet features: about a second per 60 images on a laptop CPU the first time, seconds when the features are cached.")
ready = weights_panel(engine, "mobilenet_v2", "labels_weights")
pressed = st.button(button, type="secondary" if report else "primary", icon=":material/search:", key="find_label_issues", disabled=not ready)
# One slot for the progress bar and the error it may end in: pressing the button again replaces an old error at once.
slot = st.empty()
if pressed:
    bar = slot.progress(0.0, text=f"Starting: loading the pretrained network to read {images:,} images…")
    words = {"decode": "Reading images", "features": "Running the pretrained network", "judge": "Judging the labels: classifiers trained"}

    def progress(phase: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{words.get(phase, phase)}: {done:,} of {total:,}")

    try:
        report = engine.find_label_issues(dataset, on_progress=progress)
    except TLError as error:
        slot.error(str(error))
        st.stop()
    slot.empty()
    session.remember(state, session.LABEL_REPORT, str(dataset.root), report, labels=dataset.fingerprint())
    report_entry = session.recall(state, session.LABEL_REPORT, str(dataset.root))

if report is not None:
    if report_entry.labels != dataset.fingerprint():
        st.info("Judged before your latest decisions. Look again to judge the labels as they are now (relabelled images with their new label).")
    columns = st.columns(5)
    columns[0].metric("Images judged", f"{report.judged:,}")
    columns[1].metric("Agreement", f"{report.out_of_fold_accuracy:.1%}", help="How often the model that did not see an image predicts its given label.")
    columns[2].metric("Suspects", f"{len(report.suspects):,}", help="Images the held-out model puts in another class: wrong labels, and hard or ambiguous pictures.")
    flagged = sum(suspect.flagged for suspect in report.suspects)
    columns[3].metric("Flagged", f"{flagged:,}", help="The suspects confident learning is sure of: their probability of the other class clears that class's threshold.")
    columns[4].metric("Wrong labels, estimated", f"{report.estimated_issues:,}", help="Confident learning's estimate of how many labels are wrong, from the per-class confusion it counts.")
    st.caption(
        f"{report.method} {report.folds} folds, regularisation C = {report.regularisation:g}, {report.backbone} at {report.image_size} px, "
        f"{report.seconds:.0f} s{' (features from the cache)' if report.features_cached else ''}."
    )
    for item in report.skipped:
        st.warning(f"Not judged: {item['path']}: {item['reason']}")

    tabs = st.tabs([f"Suspects ({len(report.suspects)})", f"Near duplicates ({len(report.near_duplicates)})", f"Odd ones out ({len(report.odd_ones_out)})"])
    with tabs[0]:
        if not report.suspects:
            st.success("No label looks wrong: every image's held-out prediction agrees with its label, or is unsure.")
        else:
            st.caption(
                "Least likely label first: sorted by the first percentage, how likely the model that never saw the image finds its label; "
                "the second is how sure it is of the class it suggests. **Flagged** marks the surest cases (confident learning). Look at each "
                "picture: some suspects are hard or ambiguous images, not wrong labels; keep those."
            )
            if not flagged:
                st.info("Confident learning flags none of them: the labels look clean. The list shows the images the held-out model disagrees with; most are hard pictures, a few may be wrong labels.")
            with st.expander("Decide for many at once"):
                floor = st.slider("Suspects whose suggested class has at least this confidence", 0.5, 1.0, 0.9, 0.01, key="bulk_floor")
                picked = [suspect for suspect in report.suspects if suspect.confidence >= floor]
                action = st.radio("Do", ["exclude", "relabel"], format_func={"relabel": "Relabel each to its suggested class", "exclude": "Exclude them"}.get, horizontal=True, key="bulk_action")
                st.caption("Excluding is the safer choice for many at once: a suspect that is a hard picture rather than a wrong label is only left out, not given the wrong class.")
                if st.button(f"Apply to {len(picked)} suspect{'s' if len(picked) != 1 else ''}", disabled=not picked, key="bulk_apply"):
                    save(decide_for_many(report.suspects, floor, action, decisions), decisions)
            items = [
                {
                    "path": suspect.path, "relative_path": suspect.relative_path, "split": suspect.split, "label": suspect.given_label, "suggested": suspect.suggested_label,
                    "headline": (
                        f"labelled **{suspect.given_label}** ({suspect.given_probability:.0%}), looks like **{suspect.suggested_label}** "
                        f"({suspect.confidence:.0%}){' · :red[flagged]' if suspect.flagged else ''}"
                    ),
                }
                for suspect in paged(report.suspects, "suspects")
            ]
            decision_form("suspect", items, decisions)
    with tabs[1]:
        if not report.near_duplicates:
            st.success("No two images look alike while carrying different labels.")
        else:
            st.caption(
                "Pairs of images that are the same picture, or nearly (resized, re-encoded, slightly cropped), but sit in different classes. "
                "At most one of the labels can be right; often one copy should go."
            )
            for number, pair in enumerate(paged(report.near_duplicates, "pairs")):
                what = "identical files" if pair.identical else f"similarity {pair.similarity:.2f}"
                st.markdown(f"**{pair.labels[0]}** and **{pair.labels[1]}** · {what}")
                items = [
                    {"path": path, "relative_path": relative, "split": split, "label": label, "suggested": other, "headline": f"labelled **{label}**"}
                    for path, relative, split, label, other in zip(pair.paths, pair.relative_paths, pair.splits, pair.labels, reversed(pair.labels), strict=True)
                ]
                decision_form(f"pair{number}", items, decisions, button="Save these two decisions", border=True)
    with tabs[2]:
        if not report.odd_ones_out:
            st.success("No image stands far apart from all the others.")
        else:
            st.caption(
                "Images unlike all the others, whatever their label: a placeholder, a screenshot, a photo of something else. "
                "If one does not belong to any of your classes, exclude it. The score says how far below the typical image's "
                "closeness to its neighbours it lies, in median absolute deviations; from 4 on an image is listed."
            )
            items = [
                {
                    "path": odd.path, "relative_path": odd.relative_path, "split": odd.split, "label": odd.given_label, "suggested": None,
                    "headline": f"labelled **{odd.given_label}** · outlier score {odd.deviations:.1f}",
                }
                for odd in paged(report.odd_ones_out, "odd")
            ]
            decision_form("odd", items, decisions)

st.subheader("Your decisions")
applied = dataset.label_decisions
if not decisions:
    st.caption("None yet. Training uses every image with the label its folder gives it.")
else:
    relabelled, excluded, kept = len(applied.get("relabelled", [])), len(applied.get("excluded", [])), len(applied.get("kept", []))
    st.markdown(f"Training uses these: **{relabelled}** relabelled, **{excluded}** excluded, **{kept}** kept as they are.")
    for item in applied.get("stale", []):
        st.warning(f"Not applied: `{item['path']}`: {item['reason']}.")
    table = pd.DataFrame([{"image": path, "decision": decision.describe(), "decided": decision.decided} for path, decision in sorted(decisions.items())])
    st.dataframe(table, hide_index=True, width="stretch", height=min(38 + 35 * len(table), 360))
    columns = st.columns([3, 2, 2])
    forget = columns[0].multiselect("Undo decisions", sorted(decisions), key="forget_decisions", placeholder="Choose images")
    if columns[1].button(f"Undo {len(forget)}", disabled=not forget, key="forget_apply"):
        save(dict.fromkeys(forget), decisions)
    columns[2].download_button("Download the decisions", engine.decisions_file(dataset.root), file_name=DECISIONS_FILE, mime="application/json", key="download_decisions")
    if Path(state["workspace"].root) in Path(dataset.root).parents:
        st.caption(
            f"This dataset is the app's copy of your upload, so the decisions are saved in that copy. Download them and put `{DECISIONS_FILE}` "
            "in your own folder (next to the class folders) to keep them for later sessions."
        )

st.page_link("pages/scenario.py", label="Next: where your data sits in the decision matrix", icon=":material/arrow_forward:")
