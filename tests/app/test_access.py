"""The server's gate and sign-in page (ui/access.py), through Starlette's TestClient: no real server, no network."""

from __future__ import annotations

import functools

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tl_core.service.sharing import LOOPBACK_NAMES, Access, Sharing, SignIns
from ui import access

PASSWORD = "correct horse battery"
HTML = {"Accept": "text/html,application/xhtml+xml"}


async def _page(request):
    return PlainTextResponse("the app")


async def _stream(websocket):
    await websocket.accept()
    await websocket.send_text("session")
    await websocket.close()


def _client(monkeypatch: pytest.MonkeyPatch, sharing: Sharing, base_url: str = "http://testserver") -> TestClient:
    monkeypatch.setattr(access, "sharing", lambda: sharing)
    monkeypatch.setattr(access, "sign_ins", functools.cache(lambda: SignIns(sharing.password, per_client=3)))
    monkeypatch.setattr(access, "FAILURE_DELAY_SECONDS", 0)
    app = Starlette(
        routes=[*access.routes(), Route("/", _page), Route("/_stcore/health", _page), Route("/media/x.png", _page), WebSocketRoute("/_stcore/stream", _stream)],
        middleware=[Middleware(access.AccessGate)],
    )
    return TestClient(app, base_url=base_url, follow_redirects=False)


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return _client(monkeypatch, Sharing("0.0.0.0", password=PASSWORD, hosts=("testserver",)))


def test_without_a_sign_in_only_the_sign_in_page_answers(shared: TestClient) -> None:
    page = shared.get("/train?x=1", headers=HTML)
    assert page.status_code == 303 and page.headers["location"] == "/tl-sign-in?next=/train%3Fx%3D1"
    form = shared.get("/tl-sign-in", headers=HTML)
    assert form.status_code == 200 and 'type="password"' in form.text and form.headers["x-frame-options"] == "DENY"
    media = shared.get("/media/x.png")
    assert media.status_code == 401 and media.text == "Sign in first: open /tl-sign-in and type the app's password."
    with pytest.raises(WebSocketDisconnect) as refused, shared.websocket_connect("/_stcore/stream"):
        pass
    assert refused.value.code == 1008
    assert shared.get("/_stcore/health").status_code == 200  # a monitor may still ask whether the server is up


def test_the_password_signs_in_and_signing_out_ends_it(shared: TestClient) -> None:
    answer = shared.post("/tl-sign-in?next=/train", data={"password": PASSWORD, "next": "/train"}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 303 and answer.headers["location"] == "/train"
    cookies = answer.headers.get_list("set-cookie")
    assert any(cookie.startswith("tl_signin=") and "HttpOnly" in cookie and "SameSite=lax" in cookie for cookie in cookies)
    assert any(cookie.startswith("tl_visitor=") for cookie in cookies)
    assert not any("Secure" in cookie for cookie in cookies)  # plain http: a Secure cookie would never come back
    assert shared.get("/", headers=HTML).text == "the app"
    with shared.websocket_connect("/_stcore/stream") as stream:
        assert stream.receive_text() == "session"
    visitor = shared.cookies["tl_visitor"]
    shared.get("/tl-sign-out")
    assert shared.get("/", headers=HTML).status_code == 303
    shared.post("/tl-sign-in", data={"password": PASSWORD})
    assert shared.cookies["tl_visitor"] == visitor, "the same browser stays the same visitor, so its runs stay its own"


def test_wrong_passwords_are_refused_then_paused(shared: TestClient) -> None:
    for left in (2, 1):
        wrong = shared.post("/tl-sign-in", data={"password": "guess"})
        assert wrong.status_code == 401 and f"({left} more tr" in wrong.text
        assert "tl_signin" not in shared.cookies
    paused = shared.post("/tl-sign-in", data={"password": "guess"})
    assert paused.status_code == 429 and int(paused.headers["retry-after"]) > 800
    assert shared.post("/tl-sign-in", data={"password": PASSWORD}).status_code == 429
    assert "tl_signin" not in shared.cookies


def test_a_sign_in_posted_from_another_site_or_pointing_elsewhere_goes_nowhere(shared: TestClient) -> None:
    forged = shared.post("/tl-sign-in", data={"password": PASSWORD}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "tl_signin" not in shared.cookies
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        answer = shared.post("/tl-sign-in", data={"password": PASSWORD, "next": target})
        assert answer.headers["location"] == "/"
    too_long = shared.post("/tl-sign-in", content=b"password=" + b"x" * 20_000, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert too_long.status_code == 413


def test_a_foreign_host_is_refused_on_every_route(monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS rebinding: a page of rebind.attacker.example whose name now points at 127.0.0.1.
    rebound = _client(monkeypatch, Sharing("localhost", hosts=LOOPBACK_NAMES), base_url="http://rebind.attacker.example:8501")
    answer = rebound.get("/", headers=HTML)
    assert answer.status_code == 403 and answer.text.startswith("This app answers to localhost, 127.0.0.1, ::1, not to 'rebind.attacker.example:8501'.")
    with pytest.raises(WebSocketDisconnect), rebound.websocket_connect("/_stcore/stream", headers={"Origin": "http://rebind.attacker.example:8501"}):
        pass
    local = _client(monkeypatch, Sharing("localhost", hosts=LOOPBACK_NAMES), base_url="http://127.0.0.1:8501")
    assert local.get("/", headers=HTML).text == "the app"  # the local app: no sign-in, as before
    assert _client(monkeypatch, Sharing("localhost"), base_url="http://[::1]:8501").get("/").text == "the app"  # no allowedHosts: the loopback names


def test_a_shared_app_without_a_sign_in_does_not_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(access, "sharing", lambda: Sharing("0.0.0.0", hosts=("gpu-box.lab",)))
    with pytest.raises(SystemExit) as stopped:
        access.check_can_start()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("Transfer Learning Studio did not start. The app is set to listen on '0.0.0.0', where other computers can reach it")


def test_with_an_identity_provider_the_account_is_the_visitor(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from tl_core.service.sharing import visitor_key

    monkeypatch.setattr(access, "sharing", lambda: Sharing("0.0.0.0", identity_provider=True, hosts=("gpu-box.lab",), allowed_users=("@lab.example",)))
    monkeypatch.setattr(access.st, "user", SimpleNamespace(is_logged_in=False, get=lambda key: None))
    assert access.session_access() is None  # the page shows st.login's button instead of the app
    account = {"email": "ada@lab.example"}
    monkeypatch.setattr(access.st, "user", SimpleNamespace(is_logged_in=True, get=account.get))
    assert access.session_access() == Access(sharing=True, visitor=visitor_key("oidc:ada@lab.example"))
    # Signed in by the provider, but not an account the owner listed: still outside.
    stranger = {"email": "eve@elsewhere.example"}
    monkeypatch.setattr(access.st, "user", SimpleNamespace(is_logged_in=True, get=stranger.get))
    assert access.session_access() is None


def test_behind_a_proxy_that_ends_tls_the_sign_in_cookies_are_secure(shared: TestClient) -> None:
    """The proxy speaks https to the browser and http to the app, and says so in X-Forwarded-Proto."""
    answer = shared.post("/tl-sign-in", data={"password": PASSWORD, "next": "/"}, headers={"Origin": "http://testserver", "X-Forwarded-Proto": "https"})
    cookies = answer.headers.get_list("set-cookie")
    assert answer.status_code == 303 and len(cookies) == 2 and all("Secure" in cookie for cookie in cookies)
