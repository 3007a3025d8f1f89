"""The server's own settings: it listens on this machine only, answers to the loopback names only, with an upload limit."""

from __future__ import annotations

import tomllib

from tl_core.service.sharing import LOOPBACK_NAMES

from conftest import REPO


def test_the_server_listens_on_localhost_with_an_upload_limit() -> None:
    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost"
    assert settings["browser"]["serverAddress"] == "localhost"
    # Streamlit's uploader holds a .zip in memory while it arrives: 1 GB; bigger sets go through the folder uploader.
    assert settings["server"]["maxUploadSize"] == 1024


def test_the_server_answers_only_to_the_loopback_names() -> None:
    # DNS rebinding: a page whose name is made to point at 127.0.0.1 must not get a session.
    settings = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert tuple(settings["server"]["allowedHosts"]) == LOOPBACK_NAMES


def test_a_clean_server_stop_removes_every_session_folder(tmp_path) -> None:
    # app.py as `streamlit run` imports it: the st.App, its gate, and the lifespan that cleans up when the server stops.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import asyncio
        import app
        from starlette.middleware import Middleware
        from tl_core.service.workspace import Workspace
        from ui.access import AccessGate

        sessions = [Workspace.create({str(tmp_path)!r}) for _ in range(2)]
        assert app.app._user_lifespan is app.lifespan
        assert [entry.cls for entry in app.app._user_middleware] == [AccessGate]

        async def serve_then_stop():
            async with app.lifespan(app.app):
                assert all(session.root.exists() for session in sessions)

        asyncio.run(serve_then_stop())
        print(sorted(path.name for path in __import__("pathlib").Path({str(tmp_path)!r}).iterdir()))
    """)
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"
