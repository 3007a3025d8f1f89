"""Keeps the web server's garbage collections cheap, so a live Train page does not slow the run it shows.

After every script run, Streamlit runs a full garbage collection. Because Keras is loaded, it also
calls ``keras.backend.clear_session()``, which runs another. Script runs include each page load and
each refresh of the live views: the Train page's every second and the sidebar's every two seconds
while a model trains. With TensorFlow and JAX loaded, each collection walks about 460,000 objects,
about 240 ms on one core.

Measured on 2 cores, on 3,000 photos, with feature extraction: with the Train page open, the
server used 27-30 CPU seconds while the run trained. The features phase took 33-34 s, against 25 s
with the History page open. The run, in its own process, had those cores to share.

``freeze_loaded_modules`` moves the objects alive at that moment into the collector's permanent
generation, whenever many modules were imported since the last time (the libraries, once each).
Later collections then walk only the objects made since. Reference counting still frees frozen
objects as usual; only reference cycles among them are never collected. That is why the freeze
waits for new modules instead of running after every page.
"""

from __future__ import annotations

import gc
import sys

NEW_MODULES = 50  # freeze again once this many modules were imported since the last freeze

_modules_at_last_freeze = 0


def freeze_loaded_modules() -> bool:
    """Collects, then freezes what is alive, when ``NEW_MODULES`` modules were imported since the last time; True when it froze."""
    global _modules_at_last_freeze
    loaded = len(sys.modules)
    if loaded < _modules_at_last_freeze + NEW_MODULES:
        return False
    gc.collect()
    gc.freeze()
    _modules_at_last_freeze = loaded
    return True
