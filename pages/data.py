"""Step 1, Data: bring in a folder of labelled images and see what is in it."""

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core.data.images import MORE_THAN_EIGHT_BITS
from tl_core.errors import TLError
from tl_core.service.upload import format_bytes
from ui import state as session
from ui.charts import class_counts_figure
from ui.folder_upload import folder_uploader

state = st.session_state
engine = state["engine"]
workspace = state["workspace"]

st.title("1 · Your data")
st.markdown(
    "Give the app a folder with **one sub-folder per class** (for example `photos/cats/…`, `photos/dogs/…`). "
    "If it already has `train/`, `val/` and `test/` folders they are kept as they are; with `train/` and `val/` only, `val/` is kept for "
    "the final report and part of `train/` chooses the best epoch; otherwise each class is split 70/15/15 for training, validation and testing."
)

SOURCES = {
    "sample": "Sample dataset (no download)",
    "folder": "Upload a folder",
    "zip": "Upload a .zip",
    "path": "Folder on this computer",
}
# The choice outlives a visit to another page (Streamlit forgets the state of widgets a page run did not draw).
source = st.radio(
    "Where are your images?", list(SOURCES), index=list(SOURCES).index(state.get("data_source_kept", "sample")), format_func=SOURCES.get, horizontal=True, key="data_source"
)
state["data_source_kept"] = source


def short_name(name: str, most: int = 14) -> str:
    """A file name short enough for one line under a thumbnail: ``101403…cec.jpg``."""
    return name if len(name) <= most else f"{name[: most - 8]}…{name[-7:]}"


def use_folder(folder: Path, description: str) -> None:
    """Scans the folder and makes it the dataset of this session (clearing results that belonged to the old one)."""
    with st.spinner(f"Scanning {description}…"):
        dataset = engine.scan(folder)
    session.use_dataset(state, folder, dataset)
    st.rerun()  # redraw everything, the sidebar included, with the new dataset


def folder_browser() -> None:
    """The sub-folders of the browsing root with their image counts; open one, or use the folder shown."""
    refusal = engine.local_folders_refusal()
    if refusal:
        st.info(refusal, icon=":material/lock:")
        return
    root = engine.browse_root()
    st.caption(
        "The fastest way for large folders: nothing is uploaded or copied, the images are read where they are. "
        + (f"This app is shared: only folders inside `{root}` can be used. " if engine.access.sharing else "")
        + f"Browse from `{root}` (set TL_CORE_BROWSE_ROOT to start elsewhere), or type a path."
    )
    listing = engine.list_folders(state.get("browse_dir"))
    current = listing.folder  # where the listing really is: never above the root, never a folder that vanished
    header = st.columns([6, 1, 2])
    header[0].markdown(f"**{current}** · {listing.summary()}")
    if header[1].button("Up", icon=":material/arrow_upward:", disabled=current == root, key="browse_up"):
        state["browse_dir"] = str(current.parent)
        st.rerun()
    if header[2].button("Use this folder", type="primary", disabled=listing.images == 0, key="browse_use"):
        use_folder(current, str(current))
    if listing.entries:
        table = pd.DataFrame([{"folder": entry.name, "images": entry.images_text(), "sub-folders": entry.folders} for entry in listing.entries])
        picked = st.dataframe(
            table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key=f"browse_table_{current}",
            height=min(38 + 35 * len(table), 400),
        )
        st.caption("Click a row to open that folder.")
        if picked.selection.rows:
            state["browse_dir"] = str(listing.entries[picked.selection.rows[0]].path)
            st.rerun()
    else:
        st.caption("No sub-folders here.")
    typed = st.text_input("Or type a folder path", placeholder="/home/me/photos", key="data_path")
    if st.button("Use the typed folder", disabled=not typed, key="use_typed_path"):
        use_folder(engine.local_folder(typed), typed)


try:
    if source == "sample":
        from tl_core.data.sample import SAMPLE_DESCRIPTION

        st.caption(SAMPLE_DESCRIPTION)
        if st.button("Use the sample dataset", type="primary"):
            use_folder(engine.write_sample(workspace), "the sample dataset")
    elif source == "folder":
        st.caption(
            "Choose the folder itself (the one with the class folders, or with train/ val/ test/). Files keep their paths, so classes "
            "and splits come from the folder names. For tens of thousands of photos, **Folder on this computer** is faster still: nothing is copied."
        )
        upload = state.get("folder_upload")
        if upload is None or upload.progress().status == "finished":
            upload = state["folder_upload"] = workspace.open_folder_upload("folder_upload")
        ended = folder_uploader(upload, note=state.get("folder_upload_note", ""))
        if ended and ended.get("status") == "finished":
            folder = workspace.finish_folder_upload(upload)
            state["folder_upload_note"] = f"Sent {ended['files']:,} files ({format_bytes(ended['bytes'])}) in {ended['seconds']:.1f} s."
            use_folder(folder, f"{ended['files']:,} uploaded files of '{folder.name}'")
        elif ended and ended.get("status") == "cancelled":
            state["folder_upload_note"] = "Upload cancelled; nothing from it was kept. Choose a folder to start again."
            upload.cancel()  # the browser asked the server too; this makes sure, even if that request was lost
        elif ended and ended.get("status") == "failed":
            state["folder_upload_note"] = ended.get("message", "")
    elif source == "zip":
        st.caption(
            f"A .zip of up to {format_bytes(st.get_option('server.maxUploadSize') * 1024**2)} ({st.get_option('server.maxUploadSize'):,} MiB; "
            "it is held in the server's memory while it arrives). "
            "For a bigger dataset choose **Upload a folder** (sent in batches straight to disk, up to the upload limits) or **Folder on this computer**."
        )
        archive = st.file_uploader("Choose a .zip of the folder", type=["zip"], key="zip_upload")
        if archive is not None and st.button("Unpack and use", type="primary"):
            with st.spinner(f"Unpacking {archive.name}…"):
                folder = workspace.unpack_zip(archive, label=Path(archive.name).stem)  # read where it is: no copy in memory
            use_folder(folder, archive.name)
    else:
        folder_browser()
except TLError as error:
    st.error(str(error))

dataset = state["dataset"]
if dataset is None:
    st.info("No dataset loaded yet. The sample dataset walks you through the whole path in about a minute.")
    st.stop()

summary = dataset.summary()
st.divider()
copy = Path(workspace.root) in Path(summary["root"]).parents  # an upload or the sample: the app's copy, under the folder's own name
st.subheader(f"{Path(summary['root']).name} · {summary['num_images']:,} images in {summary['num_classes']} classes")
if copy:
    st.caption(f"Split: {summary['split_source']}")
    with st.expander("Where the app keeps this copy"):
        st.caption(f"`{summary['root']}`: the session's own folder, removed when the session ends. Runs record the folder's name, `{Path(summary['root']).name}`.")
else:
    st.caption(f"Folder: `{summary['root']}` · Split: {summary['split_source']}")

size = summary["image_size"]
columns = st.columns(5)
columns[0].metric("Classes", summary["num_classes"])
columns[1].metric("Images used", f"{summary['num_images']:,}")
columns[2].metric("Smallest image", f"{size['min_width']}×{size['min_height']}", help="Smallest width × height found (pixels). Every image is resized to the model's input size.")
columns[3].metric("Largest image", f"{size['max_width']}×{size['max_height']}", help="Largest width × height found (pixels).")
columns[4].metric("Imbalance", f"{summary['imbalance_ratio']:.1f}×", help="Images in the largest class divided by images in the smallest.")

if summary["imbalance_ratio"] >= 3:
    st.warning(
        f"The classes are imbalanced: the largest has {summary['imbalance_ratio']:.1f}× the images of the smallest. "
        "A model can score well by favouring the big classes; turn on class weights on the Setup page, or add images to the small classes."
    )

deep = sum(count for mode, count in summary.get("modes", {}).items() if mode in MORE_THAN_EIGHT_BITS)
if deep:
    st.caption(
        f"{'One image has' if deep == 1 else f'{deep:,} images have'} more than 8 bits per pixel (16- or 32-bit greyscale, or 16 bits per colour, "
        "as microscope, medical and satellite cameras save them). Each is stretched from black to its brightest pixel, so it keeps its levels; "
        "the Export page shows the same reading for your own code."
    )

DUPLICATE_WARNINGS = {
    "label conflict": (
        "Label conflict: {pictures} {appear} in more than one class ({files} files). The model is taught that the same image "
        "is two different things. Keep each picture only in the folder of its right class."
    ),
    "split leakage": (
        "Split leakage: {pictures} {appear} in more than one of train, validation and test ({files} files). The model is then "
        "tested on images it trained on, so its scores look better than they are. Remove the extra copies."
    ),
}


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 picture``, ``2 pictures``."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def show_duplicates(groups: list[dict]) -> None:
    """Warns about identical files (label conflicts and leakage prominently) and lists every group."""
    if not groups:
        return
    for kind, template in DUPLICATE_WARNINGS.items():
        found = [group for group in groups if group["kind"] == kind]
        if found:
            files = sum(len(group["paths"]) for group in found)
            st.warning(template.format(pictures=plural(len(found), "picture"), appear="appears" if len(found) == 1 else "appear", files=files), icon=":material/content_copy:")
    same = [group for group in groups if group["kind"] == "same class"]
    if same:
        st.info(
            f"{plural(len(same), 'picture')} {'is' if len(same) == 1 else 'are'} in the same class folder more than once, so "
            f"{'it counts' if len(same) == 1 else 'they count'} more than once in training. Remove the copies unless that is what you want."
        )
    records = {record.path: record for record in dataset.records}
    rows = [
        {
            "group": number, "kind": group["kind"], "file": dataset.relative(path),
            "class": records[path].class_name if path in records else "", "split": records[path].split if path in records else "",
        }
        for number, group in enumerate(groups, start=1)
        for path in group["paths"]
    ]
    with st.expander(f"{plural(len(groups), 'group')} of identical files (all are used)", expanded=len(groups) <= 20):
        st.caption("One row per file, paths inside the dataset folder; the files of a group share its number.")
        st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True, column_config={"group": st.column_config.NumberColumn(width="small")})


show_duplicates(summary.get("duplicates", []))

chart_column, table_column = st.columns([3, 2])
chart_column.plotly_chart(class_counts_figure(summary["counts"]), width="stretch")
counts = pd.DataFrame(summary["counts"]).fillna(0).astype(int).rename_axis("class")
counts["all"] = counts.sum(axis=1)
with table_column:
    st.markdown("**Images per class**")
    if len(counts) <= 30:
        st.table(counts.map("{:,}".format))  # plain HTML: every number can be read, copied and searched
    else:
        st.dataframe(counts, width="stretch")

st.subheader("Samples")
per_class = 6
for name in dataset.class_names:
    paths = [record.path for record in dataset.records if record.class_name == name][:per_class]
    previews = [preview for preview in engine.thumbnails(paths) if preview is not None]
    st.markdown(f"**{name}**")
    if previews:
        st.image(previews, width=96, caption=[short_name(Path(path).name) for path in paths][: len(previews)])

skipped = summary["skipped"]
if skipped:
    with st.expander(f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped, with the reason", expanded=len(skipped) <= 20):
        st.dataframe(pd.DataFrame([{"path": dataset.relative(item["path"]), "reason": item["reason"]} for item in skipped]), width="stretch", hide_index=True)
else:
    st.success(f"Every file was used ({summary['ignored_system_files']} system files such as .DS_Store passed over).")

suspicious = summary.get("suspicious", [])
if suspicious:
    with st.expander(f"{plural(len(suspicious), 'file')} used but worth a look", expanded=len(suspicious) <= 20):
        st.caption("These files are used. A name that does not match the content trips up other tools; a file that looks truncated is dropped, with a notice, if it fails to decode when training starts.")
        st.dataframe(pd.DataFrame([{"path": dataset.relative(item["path"]), "reason": item["reason"]} for item in suspicious]), width="stretch", hide_index=True)

decided = summary.get("label_decisions") or {}
if decided:
    st.info(
        f"Your label decisions are applied: {len(decided['relabelled'])} relabelled, {len(decided['excluded'])} excluded "
        f"(listed among the skipped files), {len(decided['kept'])} kept. See the Labels page."
        + (f" {len(decided['stale'])} saved decisions no longer match the files and are not applied." if decided["stale"] else ""),
        icon=":material/label:",
    )
st.page_link("pages/labels.py", label="Next: check the labels (finds images that are probably labelled wrong)", icon=":material/label:")
st.page_link("pages/scenario.py", label="Or go straight to where your data sits in the decision matrix", icon=":material/arrow_forward:")
