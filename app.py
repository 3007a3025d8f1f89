"""Guided transfer learning: `streamlit run app.py`.

``streamlit run`` first imports this file and finds ``app``, an ``st.App``:
Streamlit's server plus the folder uploader's routes (``ui/folder_upload.py``),
the sign-in page and the gate in front of everything (``ui/access.py``). A
server that others could reach without a sign-in does not start
(``ui.access.check_can_start``); when it stops cleanly, every session's folder
is removed. The server then runs the same file as the page script on every
rerun (there ``__name__`` is ``"__main__"``), and as a script it signs the
session in (on a shared app) and routes. Each step of
the path is a page in ``pages/``; the state they share lives in
``st.session_state``, set up here once (``ui/state.py`` lists the keys): the
``engine`` the pages call (``tl_core.service.engine.Engine``; tests put a fake
here), this session's ``workspace`` (uploads, never shared with other
sessions), the dataset in use, the Scenario and Setup pages' choices, the
training job and the run the Evaluate and Export pages show.
"""

import contextlib
import functools

import streamlit as st
from starlette.middleware import Middleware

from tl_core.service.engine import Engine
from tl_core.service.workspace import Workspace, remove_session_folders
from ui import access, memory
from ui import state as session
from ui.folder_upload import upload_routes


@contextlib.asynccontextmanager
async def lifespan(_app):
    """The server's life: when it stops cleanly, the folders of all its sessions go (uploads, unpacked zips)."""
    try:
        yield None
    finally:
        remove_session_folders()


def route_every_address_through_this_file() -> None:
    """Makes every address (``/history``, ``/train``) run this file first, from the server's first session on.

    Streamlit decides per server whether a ``pages/`` folder beside the entry file means its first kind of
    multipage app, where an address runs that page's file on its own; it drops that guess only once some
    session has called ``st.navigation``. So after a start or restart, a tab left open on ``/train`` (it
    reconnects by itself) or a bookmarked ``/data`` ran the page without this file's set-up and showed a
    KeyError for ``engine``, until someone opened the root address. The pages are always declared here
    with ``st.navigation``, so the guess is settled before any session runs.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


if __name__ != "__main__":
    access.check_can_start()
    route_every_address_through_this_file()
    app = st.App(__file__, routes=upload_routes() + access.routes(), middleware=[Middleware(access.AccessGate)], lifespan=lifespan)


def main() -> None:
    """Signs the session in (on a shared app), sets up its shared state once, draws the sidebar and runs the chosen page."""
    st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/model_training:", layout="wide")

    rights = access.session_access()
    if rights is None:
        access.sign_in_screen()
        st.stop()
    state = st.session_state
    session.set_up(state, functools.partial(Engine, rights), Workspace.create)
    state["workspace"].touch()  # a live session's folder is never swept, however long it sits idle

    pages = [
        st.Page("pages/data.py", title="Data", icon=":material/folder_open:", default=True),
        st.Page("pages/labels.py", title="Labels", icon=":material/label:"),
        st.Page("pages/scenario.py", title="Scenario", icon=":material/grid_view:"),
        st.Page("pages/setup.py", title="Setup", icon=":material/tune:"),
        st.Page("pages/train.py", title="Train", icon=":material/monitoring:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/export.py", title="Export & try", icon=":material/download:"),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
    ]
    navigation = st.navigation(pages)

    adopt_finished_run(state)
    training = state["job"] is not None and state["job"].state().is_running
    with st.sidebar:
        st.caption("Transfer Learning Studio")
        if rights.sharing:
            access.sign_out_control()
        # Refreshes itself while a run trains, on whatever page is open.
        st.fragment(sidebar_status, run_every=2.0 if training else None)(state)

    try:
        navigation.run()
    finally:  # also after st.stop() and st.rerun(), which end a page by raising
        memory.freeze_loaded_modules()  # the libraries the page loaded stay out of every later collection (ui/memory.py)


def adopt_finished_run(state) -> None:
    """A run that ended while the user was elsewhere becomes the model Evaluate and Export show, once."""
    job = state["job"]
    if job is None:
        return
    finished = job.state()
    if not finished.is_running and finished.test_accuracy is not None and state["adopted_run"] != finished.run_dir:
        state["run_dir"] = state["adopted_run"] = finished.run_dir


def sidebar_status(state) -> None:
    """Where the session stands: the data, the training run and the model."""
    dataset = state["dataset"]
    st.markdown(f"**Data:** {len(dataset.records):,} images, {dataset.num_classes} classes" if dataset else "**Data:** none loaded yet")
    job = state["job"]
    if job is not None:
        job_state = job.state()
        progress = f", epoch {job_state.epoch}/{job_state.epochs}" if job_state.is_running and job_state.epochs else ""
        st.markdown(f"**Training:** {job_state.status}{progress}")
        if not job_state.is_running and job_state.test_accuracy is not None and state["adopted_run"] != job_state.run_dir:
            st.rerun()  # the run just ended: redraw the page so it can show the new model
    if state["run_dir"]:
        st.markdown("**Model:** trained, see Evaluate and Export")


if __name__ == "__main__":
    main()
