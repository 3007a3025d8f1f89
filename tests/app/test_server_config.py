"""The server's own settings: it listens on this machine only, with an upload limit."""

from __future__ import annotations

import tomllib

from conftest import REPO


def test_the_server_listens_on_localhost_with_an_upload_limit() -> None:
    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost"
    assert settings["browser"]["serverAddress"] == "localhost"
    assert settings["server"]["maxUploadSize"] == 4096
