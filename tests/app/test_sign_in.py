"""The app in sharing mode: a session that has not signed in sees the sign-in, nothing of the app."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.service.sharing import Sharing
from ui import access

from conftest import REPO
from fake_engine import FakeEngine

APP = str(REPO / "app.py")


def test_a_session_without_a_sign_in_sees_only_the_way_to_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "sharing", lambda: Sharing("0.0.0.0", password="correct horse battery", hosts=("gpu-box.lab",)))
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Transfer Learning Studio"
    assert "Sign in again to go on" in at.warning[0].value
    assert "workspace" not in at.session_state, "no session folder is made for a visitor who has not signed in"
    assert not at.get("radio") and not at.sidebar.get("markdown")


def test_the_local_app_needs_no_sign_in() -> None:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.run()
    assert not at.exception and at.title[0].value == "1 · Your data"
