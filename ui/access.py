"""The web side of access control: the server's gate, the sign-in page, and what a session may do.

``tl_core.service.sharing`` decides (sharing mode, the password check, the data
root, whose runs); this module applies it to Streamlit's server, which
``app.py`` builds as an ``st.App``:

- ``check_can_start()``: called before the server is built; a shared app
  without a sign-in, or with a password too short, stops here with a message
  and exit status 2.
- ``AccessGate``, the server's outermost middleware, on every request and
  WebSocket handshake: the ``Host`` must be one of ``server.allowedHosts``
  (the loopback names when that is empty), which defeats DNS rebinding on
  every route, not only on Streamlit's WebSocket. With ``TL_APP_PASSWORD``
  it also lets nothing but the sign-in page through without a valid
  sign-in cookie: no page, no WebSocket, no upload, no media file.
- ``routes()``: ``/tl-sign-in`` (a plain HTML form: no script runs before
  the password is checked) and ``/tl-sign-out``.
- ``session_access()``: what the page script's session may do (an
  ``Access``), or None when it must sign in first (``sign_in_screen``).
- ``refused(request)`` and ``read_body(request, cap)``: what the folder
  uploader's routes require of a request: a known ``Host``, an ``Origin``
  that matches it, the custom header ``X-TL-Upload`` (a cross-site page
  cannot send it without a preflight, which is never granted), and a body
  with a ``Content-Length``, read as a stream and cut off at its cap.
"""

from __future__ import annotations

import asyncio
import functools
import html
import secrets
import sys
from urllib.parse import parse_qs, quote, urlsplit

import streamlit as st
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tl_core.service.sharing import ALLOWED_USERS_VARIABLE, IDENTITY_PROVIDER, LOOPBACK_NAMES, PASSWORD, Access, AccessError, Sharing, SignIns, visitor_key

SIGN_IN_PATH = "/tl-sign-in"
SIGN_OUT_PATH = "/tl-sign-out"
SIGN_IN_COOKIE = "tl_signin"  # a sign-in: a random token the server remembers (HttpOnly)
VISITOR_COOKIE = "tl_visitor"  # who this browser is: kept across sign-ins, so its runs stay its own
UPLOAD_HEADER = "X-TL-Upload"
VISITOR_COOKIE_SECONDS = 400 * 24 * 3600
FAILURE_DELAY_SECONDS = 1.0  # every wrong password waits this long before the answer
SIGN_IN_BODY_BYTES = 8 * 1024
# Without a sign-in only these paths answer (under server.baseUrlPath).
OPEN_PATHS = (SIGN_IN_PATH, SIGN_OUT_PATH, "/_stcore/health", "/healthz")


@functools.cache
def sharing() -> Sharing:
    """The owner's settings, read once per server: ``server.address``, ``server.allowedHosts``, the environment, ``[auth]``."""
    return Sharing.from_environment(
        st.get_option("server.address") or "", st.get_option("server.allowedHosts") or (), identity_provider=_identity_provider_configured()
    )


@functools.cache
def sign_ins() -> SignIns:
    """The password check and the sign-ins of this server (one per process)."""
    return SignIns(sharing().password)


def check_can_start() -> None:
    """Stops the server before it listens when it would be open to everyone (message on stderr, exit status 2)."""
    try:
        sharing().check()
    except AccessError as error:
        print(f"Transfer Learning Studio did not start. {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def allowed_hosts() -> tuple[str, ...]:
    """The host names the app answers to: ``server.allowedHosts``, or the loopback names when that is empty."""
    return sharing().hosts or LOOPBACK_NAMES


def host_allowed(host: str | None) -> bool:
    """Whether a ``Host`` header names this app (its port ignored; ``*`` and ``*.example.org`` as in Streamlit's own check)."""
    if not host:
        return False
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if not name:
        return False
    name = name.lower().rstrip(".")
    for pattern in (entry.strip().lower().strip("[]").rstrip(".") for entry in allowed_hosts()):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


class AccessGate:
    """ASGI middleware in front of everything: a known ``Host`` always; a sign-in as well when the app has a password."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        host = request.headers.get("host")
        if not host_allowed(host):
            await _refuse(scope, receive, send, 403, (
                f"This app answers to {', '.join(allowed_hosts())}, not to '{host}'. Open it by one of those names; "
                "the owner can add names with server.allowedHosts."
            ))
            return
        if sharing().mode == PASSWORD and _path(scope) not in OPEN_PATHS and sign_ins().visitor(request.cookies.get(SIGN_IN_COOKIE)) is None:
            if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") and "text/html" in request.headers.get("accept", ""):
                target = _base_path() + _path(scope) + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                await RedirectResponse(f"{_base_path()}{SIGN_IN_PATH}?next={quote(target)}", status_code=303)(scope, receive, send)
            else:
                await _refuse(scope, receive, send, 401, f"Sign in first: open {_base_path()}{SIGN_IN_PATH} and type the app's password.")
            return
        await self.app(scope, receive, send)


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})  # before accept: the handshake gets 403
        return
    await PlainTextResponse(message, status_code=status)(scope, receive, send)


def _path(scope) -> str:
    """The request's path without ``server.baseUrlPath``."""
    path, base = scope.get("path", ""), _base_path()
    return path[len(base) :] or "/" if base and path.startswith(base) else path


def _base_path() -> str:
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def routes() -> list[Route]:
    """The sign-in page and sign-out (under ``server.baseUrlPath``); they answer only when the app has a password."""
    base = _base_path()
    return [Route(base + SIGN_IN_PATH, _sign_in, methods=["GET", "POST"]), Route(base + SIGN_OUT_PATH, _sign_out, methods=["GET", "POST"])]


async def _sign_in(request: Request) -> Response:
    if sharing().mode != PASSWORD:
        return RedirectResponse(_base_path() + "/", status_code=303)
    target = _safe_next(request.query_params.get("next", ""))
    if request.method == "GET":
        return _sign_in_page(target)
    if not _same_origin(request):
        return _sign_in_page(target, "This sign-in came from another site's page. Open the app's own sign-in page and type the password there.", 403)
    try:
        form = parse_qs((await read_body(request, SIGN_IN_BODY_BYTES)).decode("utf-8", errors="replace"))
    except BodyRefused as error:
        return _sign_in_page(target, str(error), error.status)
    target = _safe_next(form.get("next", [target])[0])
    visitor = request.cookies.get(VISITOR_COOKIE, "")
    visitor = visitor if len(visitor) == 43 and visitor.replace("-", "").replace("_", "").isalnum() else secrets.token_urlsafe(32)
    result = sign_ins().attempt(form.get("password", [""])[0], request.client.host if request.client else "", visitor)
    if not result.ok:
        await asyncio.sleep(FAILURE_DELAY_SECONDS)  # a guesser gets one answer a second at most, per connection
        answer = _sign_in_page(target, result.message, 429 if result.retry_after else 401)
        if result.retry_after:
            answer.headers["Retry-After"] = str(result.retry_after)
        return answer
    answer = RedirectResponse(target, status_code=303)
    # Behind a reverse proxy that ends TLS the app itself sees http; the proxy says https in X-Forwarded-Proto. A client
    # that claims it over plain http only keeps its own cookie from coming back.
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"
    path = _base_path() + "/"
    answer.set_cookie(SIGN_IN_COOKIE, result.token, max_age=int(sign_ins().lifetime), path=path, httponly=True, samesite="lax", secure=secure)
    answer.set_cookie(VISITOR_COOKIE, visitor, max_age=VISITOR_COOKIE_SECONDS, path=path, httponly=True, samesite="lax", secure=secure)
    return answer


async def _sign_out(request: Request) -> Response:
    sign_ins().sign_out(request.cookies.get(SIGN_IN_COOKIE))
    answer = _sign_in_page(_base_path() + "/", "You are signed out. Type the password to sign in again.", 200, notice=True)
    answer.delete_cookie(SIGN_IN_COOKIE, path=_base_path() + "/")
    return answer


def _safe_next(target: str) -> str:
    """Where to go after signing in: a path of this app only (never another site)."""
    base = _base_path() + "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target or not (target + "/").startswith(base):
        return base
    return target


def _sign_in_page(target: str, message: str = "", status: int = 200, notice: bool = False) -> HTMLResponse:
    note = f'<p class="{"note" if notice else "error"}" role="alert">{html.escape(message)}</p>' if message else ""
    page = _SIGN_IN_HTML.format(action=html.escape(_base_path() + SIGN_IN_PATH), next=html.escape(target), note=note)
    answer = HTMLResponse(page, status_code=status)
    answer.headers["Cache-Control"] = "no-store"
    answer.headers["X-Frame-Options"] = "DENY"
    answer.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    return answer


_SIGN_IN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Transfer Learning Studio</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; background: #f6f6f9; color: #262730; margin: 0;
  display: flex; min-height: 100vh; align-items: center; justify-content: center; }}
main {{ background: #fff; border: 1px solid #e6e6ea; border-radius: 0.75rem; padding: 2rem 2.25rem; width: min(26rem, 90vw);
  box-shadow: 0 2px 12px rgba(0, 0, 0, 0.05); }}
h1 {{ font-size: 1.35rem; margin: 0 0 0.25rem; }}
p {{ line-height: 1.45; }}
.lead {{ color: #5b5d6b; margin: 0 0 1.25rem; font-size: 0.95rem; }}
label {{ display: block; font-size: 0.9rem; margin-bottom: 0.35rem; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: 0.6rem 0.7rem; font-size: 1rem; border: 1px solid #c9cad3;
  border-radius: 0.5rem; }}
button {{ margin-top: 1rem; width: 100%; padding: 0.6rem; font-size: 1rem; color: #fff; background: #ff4b4b; border: 0;
  border-radius: 0.5rem; cursor: pointer; }}
.error {{ color: #b3261e; background: #fdecea; border-radius: 0.5rem; padding: 0.6rem 0.75rem; font-size: 0.9rem; }}
.note {{ color: #1b5e20; background: #e8f5e9; border-radius: 0.5rem; padding: 0.6rem 0.75rem; font-size: 0.9rem; }}
</style></head>
<body><main>
<h1>Transfer Learning Studio</h1>
<p class="lead">This app is shared. Type the password its owner gave you to sign in.</p>
{note}
<form method="post" action="{action}">
<input type="hidden" name="next" value="{next}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</main></body></html>
"""


def session_access() -> Access | None:
    """What this browser session may do, or None when it has to sign in first (the page then shows ``sign_in_screen``)."""
    settings = sharing()
    if settings.mode == PASSWORD:
        visitor = sign_ins().visitor(st.context.cookies.get(SIGN_IN_COOKIE))
        return None if visitor is None else settings.access(visitor)
    if settings.mode == IDENTITY_PROVIDER:
        if not st.user.is_logged_in or not settings.admits(st.user.get("email")):
            return None
        return settings.access(visitor_key(f"oidc:{st.user.get('email')}"))
    return Access()


def sign_in_screen() -> None:
    """What a session that is not signed in sees instead of the app."""
    st.title("Transfer Learning Studio")
    if sharing().mode == IDENTITY_PROVIDER and st.user.is_logged_in:  # signed in, by an account the owner has not listed
        st.error(
            f"The account {st.user.get('email') or 'you signed in with'} may not use this app. Sign in with another account, "
            f"or ask the app's owner to add yours to {ALLOWED_USERS_VARIABLE}.",
            icon=":material/block:",
        )
        st.button("Sign out", on_click=st.logout)
    elif sharing().mode == IDENTITY_PROVIDER:
        st.info("This app is shared: sign in to use it.", icon=":material/lock:")
        st.button("Sign in", type="primary", on_click=st.login)
    else:
        st.warning("Your sign-in has ended (you signed out, or the server restarted). Sign in again to go on.", icon=":material/lock:")
        st.link_button("Sign in", f"{_base_path()}{SIGN_IN_PATH}", type="primary")


def sign_out_control() -> None:
    """The sidebar's way out, on a shared app."""
    mode = sharing().mode
    if mode == PASSWORD:
        st.link_button("Sign out", f"{_base_path()}{SIGN_OUT_PATH}", icon=":material/logout:")
    elif mode == IDENTITY_PROVIDER:
        st.button("Sign out", icon=":material/logout:", on_click=st.logout)


def _identity_provider_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` configures ``st.login`` (an ``[auth]`` section)."""
    try:
        return bool(st.secrets.load_if_toml_exists()) and "auth" in st.secrets
    except Exception:  # noqa: BLE001 - unreadable secrets: Streamlit reports them itself; here they configure nothing
        return False


# --------------------------------------------------------------------------- what the upload routes require of a request


class BodyRefused(Exception):
    """A request body this app does not read (no length, too long, or longer than it said)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def refused(request: Request, length_required: bool = False) -> JSONResponse | None:
    """The answer to an upload request that may not come from the app's own page (or, with ``length_required``, has no Content-Length); None when it may."""
    host = request.headers.get("host")
    if not host_allowed(host):
        return _error(403, f"This upload came to the address '{host}', which is not one of the app's names ({', '.join(allowed_hosts())}). Open the app by one of those names and upload again.")
    if request.headers.get(UPLOAD_HEADER) != "1":
        return _error(403, f"This upload lacks the {UPLOAD_HEADER} header that the app's own page sends, so it came from somewhere else. Upload from the app's Data page.")
    if not _same_origin(request, required=True):
        return _error(403, f"This upload came from the page '{request.headers.get('origin')}', not from the app at '{host}'. Upload from the app's Data page.")
    if length_required and "content-length" not in request.headers:
        return _error(411, _NO_LENGTH)
    return None


def _same_origin(request: Request, required: bool = False) -> bool:
    """Whether the ``Origin`` header names the host the request came to (a missing one passes unless ``required``)."""
    origin = request.headers.get("origin")
    if not origin:
        return not required
    try:
        return urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower() != ""
    except ValueError:
        return False


async def read_body(request: Request, cap: int) -> bytes:
    """The request's body, read chunk by chunk and refused as soon as it passes ``cap`` bytes.

    Raises:
        BodyRefused: Without a ``Content-Length`` (a chunked body: 411), with one over ``cap`` (413,
            before a byte is read), or when more arrives than it said (413).
    """
    declared = request.headers.get("content-length")
    if declared is None:
        raise BodyRefused(411, _NO_LENGTH)
    try:
        declared_bytes = int(declared)
    except ValueError:
        raise BodyRefused(400, f"The request's Content-Length '{declared}' is not a number. Reload the page and try again.") from None
    if declared_bytes > cap:
        raise BodyRefused(413, f"A request of {declared_bytes:,} bytes is larger than the {cap:,} bytes this route takes. Reload the page and try again.")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > cap:
            raise BodyRefused(413, f"The request sent more than the {cap:,} bytes this route takes. Reload the page and try again.")
        chunks.append(chunk)
    return b"".join(chunks)


_NO_LENGTH = "The request came without a Content-Length (a chunked body), which the app does not take. Reload the page and try again."


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
