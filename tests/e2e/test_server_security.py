"""The real server (`streamlit run app.py`), probed as an attacker would: raw sockets, foreign hosts, no cookie.

What Starlette's TestClient cannot show: that the gate sits in front of
Streamlit's own WebSocket, that a chunked body is refused by the real server
before it is read, and that a shared server without a sign-in never serves.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REPO, free_port, start_app_server

pytestmark = pytest.mark.slow  # starts real servers

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """Two servers on loopback: the local app, and the same app shared with a password."""
    found, processes, logs = {}, [], []
    try:
        for name, environment in (("local", {}), ("shared", {"TL_APP_PASSWORD": PASSWORD})):
            folder = tmp_path_factory.mktemp(name)
            logs.append(open(folder / "streamlit.log", "w"))  # noqa: SIM115 - closed below
            server, url = start_app_server(folder, logs[-1], **environment)
            processes.append(server)
            found[name] = {"url": url, "folder": folder}
        yield found
    finally:
        for server in processes:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        for log in logs:
            log.close()


def _handshake(url: str, host: str, cookie: str = "") -> str:
    """The status line the server answers a WebSocket handshake to /_stcore/stream with, sent with this Host (and a matching Origin)."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as connection:
        key = base64.b64encode(os.urandom(16)).decode()
        connection.sendall((
            f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\nOrigin: http://{host}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n"
        ).encode())
        return connection.recv(4096).split(b"\r\n")[0].decode()


def _signed_in_cookie(url: str) -> str:
    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *arguments, **keywords):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Stay)
    request = urllib.request.Request(f"{url}/tl-sign-in", data=f"password={PASSWORD}".encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=20)
    assert answer.value.code == 303
    return "; ".join(header.split(";")[0] for header in answer.value.headers.get_all("set-cookie"))


def test_a_websocket_handshake_with_a_foreign_host_is_refused(servers: dict) -> None:
    url = servers["local"]["url"]
    port = urlsplit(url).port
    assert _handshake(url, f"rebind.attacker.example:{port}") == "HTTP/1.1 403 Forbidden"  # DNS rebinding: no session
    assert _handshake(url, f"127.0.0.1:{port}") == "HTTP/1.1 101 Switching Protocols"
    assert _handshake(url, f"localhost:{port}") == "HTTP/1.1 101 Switching Protocols"


def _whole_answer(connection: socket.socket) -> str:
    """Read an HTTP answer to its end: the headers may arrive in one packet and the body in the next."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return received.decode("latin-1")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_a_cross_site_simple_post_and_a_chunked_body_are_refused(servers: dict) -> None:
    url = servers["local"]["url"]
    address = urlsplit(url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # What a no-cors fetch from a page on another local port sends: text/plain, its own Origin, no custom header.
    request = urllib.request.Request(f"{url}/tl-upload/token/batch", data=b'{"files": []}\n', method="POST", headers={"Content-Type": "text/plain", "Origin": "http://localhost:5173"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=20)
    assert refused.value.code == 403 and "X-TL-Upload" in refused.value.read().decode()

    # A chunked batch of 13 MB against a 12 MB cap: the answer comes after the first chunk, before the rest is sent.
    with socket.create_connection((address.hostname, address.port), timeout=20) as connection:
        connection.sendall((
            f"POST /tl-upload/token/batch HTTP/1.1\r\nHost: {address.netloc}\r\nOrigin: {url}\r\nX-TL-Upload: 1\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode() + b"100000\r\n" + b"x" * 0x100000 + b"\r\n")
        answer = _whole_answer(connection)
    assert answer.startswith("HTTP/1.1 411") and "without a Content-Length (a chunked body)" in answer, answer[:300]


def test_a_shared_server_lets_nothing_through_before_the_sign_in(servers: dict) -> None:
    url = servers["shared"]["url"]
    port = urlsplit(url).port
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{url}/_stcore/host-config", timeout=20)
    assert refused.value.code == 401
    assert _handshake(url, f"127.0.0.1:{port}") == "HTTP/1.1 403 Forbidden"
    cookie = _signed_in_cookie(url)
    assert _handshake(url, f"127.0.0.1:{port}", cookie) == "HTTP/1.1 101 Switching Protocols"
    assert _handshake(url, f"rebind.attacker.example:{port}", cookie) == "HTTP/1.1 403 Forbidden"


def test_a_server_others_can_reach_does_not_start_without_a_sign_in(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "TL_APP_PASSWORD"}
    completed = subprocess.run(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(free_port()), "--server.address", "0.0.0.0", "--server.headless", "true"],
        cwd=REPO, env={**environment, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 2
    assert "Transfer Learning Studio did not start. The app is set to listen on '0.0.0.0', where other computers can reach it, but no sign-in is configured." in completed.stderr
    assert list(tmp_path.glob("tl_core_session_*")) == []
