"""The missing-weights panel: which ImageNet weights files are not on this computer, where they go, and a picker to load them.

A page that needs pretrained weights (Labels, Scenario, Train) calls ``weights_panel``
before its action: with every file in place it draws nothing; otherwise it names every
missing file at once with what it is for, says which folder Keras reads them from, and
offers a file picker that saves a loaded file there (``Engine.install_weights``).
"""

from __future__ import annotations

import streamlit as st

from tl_core.errors import TLError
from tl_core.models.weights import missing_weights_message


def weights_panel(engine, backbone: str, key: str) -> bool:
    """Draws the panel when weights are missing; True when the backbone's own file is there.

    The confidence classifier's file is named too, so the user learns of every missing file at
    once, but nothing waits for it: without it the similarity is measured the other two ways.

    Args:
        engine: The session's engine.
        backbone: The backbone the page uses.
        key: A key for the picker, unique on the page.
    """
    missing = engine.missing_weights(backbone)
    if not missing:
        return True
    st.warning(missing_weights_message(missing), icon=":material/download:")
    if not engine.access.sharing:
        loaded = st.file_uploader("Load a weights file", type=["h5"], accept_multiple_files=True, key=key, help="The .h5 file under the name shown above; it is saved in Keras' folder.")
        if loaded and st.button("Save the loaded files", key=f"{key}_save", icon=":material/save:"):
            try:
                for file in loaded:
                    engine.install_weights(backbone, file.name, file.getvalue())
            except TLError as error:
                st.error(str(error))
            else:
                st.rerun()
    return not engine.missing_weights(backbone, with_classifier=False)
