"""The server's garbage collections stay cheap: what the libraries loaded is frozen once, and only when new modules came in."""

from __future__ import annotations

import gc
import sys
import types

import pytest

from ui import memory


@pytest.fixture
def fresh_memory(monkeypatch):
    monkeypatch.setattr(memory, "_modules_at_last_freeze", 0)
    yield
    gc.unfreeze()


def test_it_freezes_what_is_loaded_once_and_again_only_after_many_new_modules(fresh_memory, monkeypatch) -> None:
    assert memory.freeze_loaded_modules()  # the first call: every library loaded so far
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert not memory.freeze_loaded_modules()  # nothing new: a page load must not freeze its own objects
    for number in range(memory.NEW_MODULES - 1):
        monkeypatch.setitem(sys.modules, f"_memory_test_module_{number}", types.ModuleType(f"_memory_test_module_{number}"))
    assert not memory.freeze_loaded_modules()  # one short of the threshold
    monkeypatch.setitem(sys.modules, "_memory_test_module_last", types.ModuleType("_memory_test_module_last"))
    assert memory.freeze_loaded_modules()  # a library came in (Keras, scikit-learn): freeze again


def test_after_the_freeze_a_collection_walks_only_what_was_made_since(fresh_memory) -> None:
    walked_before = len(gc.get_objects())  # what a full collection walks: every object the collector tracks
    memory.freeze_loaded_modules()
    assert len(gc.get_objects()) < walked_before / 10

    class Cycle:
        pass

    made = Cycle()
    made.me = made  # garbage only a collection can free, made after the freeze
    del made
    assert gc.collect() >= 1  # still collected
