"""Who may use the app when others can reach it: sharing mode, signing in, the data root, whose runs.

The app on a loopback address (``localhost``, ``127.0.0.1``, ``::1``) is one
person's tool and works without a sign-in. Anything else is *sharing mode*,
and the owner has to say who may come in:

- ``TL_APP_PASSWORD``: one password (or token) for everyone the owner gives it
  to, at least 12 characters. Setting it turns sharing mode on even on a
  loopback address (the app behind a reverse proxy, or on a machine with
  other users: they can all reach its loopback port).
- or Streamlit's own OpenID Connect sign-in (``st.login``), when an ``[auth]``
  section is in ``.streamlit/secrets.toml``, with ``TL_APP_ALLOWED_USERS`` naming
  the accounts that may come in (e-mail addresses, ``@domain`` for a whole
  domain, or ``*`` for every account the identity provider signs in: a public
  provider such as Google signs in anyone who has an account).

Bound beyond loopback with neither, the app refuses to start
(``Sharing.check``). In sharing mode every visitor signs in first; typed and
browsed folders must lie inside the data root (``TL_CORE_BROWSE_ROOT``; without
it, folders on the server are off and visitors upload theirs); and a run can
be deleted only from the sign-in that trained it (``Access.may_delete``).

``SignIns`` checks the password in constant time, slows down and then refuses
a client after repeated failures (and everyone after many failures in all),
and hands out sign-ins as random tokens kept in this process's memory: a
restart signs everybody out. Nothing here knows about HTTP; ``ui/access.py``
is the web side.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.errors import DataError, TLError
from tl_core.service.browse import BROWSE_ROOT_VARIABLE, browse_root

PASSWORD_VARIABLE = "TL_APP_PASSWORD"
ALLOWED_USERS_VARIABLE = "TL_APP_ALLOWED_USERS"
MIN_PASSWORD_LENGTH = 12
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
LOCAL, PASSWORD, IDENTITY_PROVIDER = "local", "password", "identity provider"
PASSWORD_HINT = "python -c \"import secrets; print(secrets.token_urlsafe(16))\" makes a good one"


class AccessError(TLError):
    """The app cannot start as configured, or a visitor may not do what they asked."""


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach (an empty address means every interface: False)."""
    name = address.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def visitor_key(identity: str) -> str:
    """What a run records as its creator: a one-way hash, so that reading ``run.json`` gives no one the identity itself."""
    return hashlib.sha256(f"tl_core visitor:{identity}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Access:
    """What one browser session may do. The default, the app on a loopback address, may do everything.

    Attributes:
        sharing: Whether the app runs in sharing mode.
        data_root: The only folder (with its sub-folders) whose datasets may be read in sharing
            mode; None there means folders on the server are off.
        visitor: Who is signed in, as ``visitor_key`` gives it ("" on the local app).
    """

    sharing: bool = False
    data_root: Path | None = None
    visitor: str = ""

    def browse_root(self) -> Path | None:
        """Where the folder browser starts and which it never leaves (None: no browsing allowed)."""
        return self.data_root if self.sharing else browse_root()

    def local_folders_refusal(self) -> str:
        """Why folders on the server cannot be used in this session ("" when they can)."""
        if self.sharing and self.data_root is None:
            return (
                "This app is shared, and its owner has named no data folder, so folders on the server cannot be used. "
                f"Upload the folder (or a .zip) instead, or ask the owner to start the app with {BROWSE_ROOT_VARIABLE} set to the folder that holds the datasets."
            )
        return ""

    def local_folder(self, typed: str | os.PathLike) -> Path:
        """The folder a visitor typed, as the app will read it.

        In sharing mode the path is resolved (``..`` and symbolic links followed) and must then lie
        inside the data root; a relative path counts from the data root.

        Raises:
            DataError: In sharing mode, when folders on the server are off or the folder is outside the data root.
        """
        path = Path(typed).expanduser()
        if not self.sharing:
            return path
        refusal = self.local_folders_refusal()
        if refusal:
            raise DataError(refusal)
        root = self.data_root.resolve()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not resolved.is_relative_to(root):
            raise DataError(
                f"'{typed}' is outside '{root}', the data folder of this shared app, and only folders inside it can be used here. "
                f"Type a path inside '{root}' (or one relative to it), or upload the folder."
            )
        return resolved

    def may_delete(self, created_by: str) -> str:
        """Why this session may not delete a run that ``created_by`` trained ("" when it may)."""
        if not self.sharing:
            return ""
        if created_by and self.visitor and hmac.compare_digest(created_by, self.visitor):
            return ""
        return (
            "On a shared app a run can be deleted only by whoever trained it (signed in as they were then), and this run was "
            f"{'trained by someone else' if created_by else 'trained without a sign-in (before sharing, or on the command line)'}. "
            "Ask them, or the app's owner, to delete it."
        )


@dataclass(frozen=True)
class Sharing:
    """How the app is reached and who may come in, as the owner configured it when starting the server.

    Attributes:
        address: ``server.address`` (empty: every network interface).
        password: ``TL_APP_PASSWORD`` ("" when unset).
        identity_provider: Whether Streamlit's OpenID Connect sign-in is configured (``[auth]`` in secrets).
        data_root: ``TL_CORE_BROWSE_ROOT`` when set (in sharing mode the only folder datasets are read from).
        hosts: ``server.allowedHosts``: the host names the app answers to.
        allowed_users: ``TL_APP_ALLOWED_USERS``: the accounts ``st.login`` lets in (see ``admits``).
    """

    address: str
    password: str = field(default="", repr=False)
    identity_provider: bool = False
    data_root: Path | None = None
    hosts: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, address: str, hosts: Iterable[str] = (), identity_provider: bool = False) -> Sharing:
        """The settings of the environment (``TL_APP_PASSWORD``, ``TL_CORE_BROWSE_ROOT``) with the server's own."""
        root = os.environ.get(BROWSE_ROOT_VARIABLE, "").strip()
        return cls(
            address=str(address or ""),
            password=os.environ.get(PASSWORD_VARIABLE, ""),
            identity_provider=identity_provider,
            data_root=Path(root).expanduser().resolve() if root else None,
            hosts=tuple(str(host).strip() for host in hosts if str(host).strip()),
            allowed_users=tuple(entry.strip().lower() for entry in os.environ.get(ALLOWED_USERS_VARIABLE, "").replace(";", ",").split(",") if entry.strip()),
        )

    def admits(self, email: str | None) -> bool:
        """Whether an account signed in by the identity provider may use the app: its e-mail address is listed, or its
        domain as ``@domain``, or the list is ``*``."""
        if "*" in self.allowed_users:
            return True
        address = (email or "").strip().lower()
        if "@" not in address:
            return False
        return address in self.allowed_users or f"@{address.rsplit('@', 1)[1]}" in self.allowed_users

    @property
    def mode(self) -> str:
        """``local`` (no sign-in), ``password`` or ``identity provider``."""
        if self.password:
            return PASSWORD
        if self.identity_provider:
            return IDENTITY_PROVIDER
        return LOCAL

    @property
    def enabled(self) -> bool:
        return self.mode != LOCAL

    def check(self) -> None:
        """Refuses a configuration that would let anyone in, or keep everyone out.

        Raises:
            AccessError: When the app listens beyond loopback without a sign-in, the password is too
                short, or (beyond loopback) ``server.allowedHosts`` names no host visitors could use.
        """
        where = f"'{self.address}'" if self.address else "every network interface"
        if not is_loopback(self.address) and not self.enabled:
            raise AccessError(
                f"The app is set to listen on {where}, where other computers can reach it, but no sign-in is configured. "
                f"Set {PASSWORD_VARIABLE} to a password of at least {MIN_PASSWORD_LENGTH} characters ({PASSWORD_HINT}) or configure st.login "
                "([auth] in .streamlit/secrets.toml) and start again; or listen on this machine only with --server.address localhost."
            )
        if self.mode == IDENTITY_PROVIDER and not self.allowed_users:
            raise AccessError(
                "st.login is configured, and it signs in every account the identity provider knows (with a public provider, anyone). "
                f"Set {ALLOWED_USERS_VARIABLE} to the e-mail addresses or @domains of the people who may use the app, separated by "
                "commas (for example ada@lab.example,@lab.example), or to * for every account, and start again."
            )
        if self.password and len(self.password) < MIN_PASSWORD_LENGTH:
            raise AccessError(
                f"{PASSWORD_VARIABLE} has {len(self.password)} characters while at least {MIN_PASSWORD_LENGTH} are required. "
                f"Set a longer one ({PASSWORD_HINT}) and start again."
            )
        if not is_loopback(self.address) and not any(host.strip("[]").lower() not in LOOPBACK_NAMES for host in self.hosts):
            raise AccessError(
                f"The app is set to listen on {where}, but server.allowedHosts names only {', '.join(self.hosts) or 'no host'}, so it would refuse "
                "every visitor from another computer. Add the name (or address) they type to reach it, for example "
                "--server.allowedHosts gpu-box.lab.example --server.allowedHosts localhost, and start again."
            )

    def access(self, visitor: str = "") -> Access:
        """What a session signed in as ``visitor`` (a ``visitor_key``) may do."""
        return Access(sharing=self.enabled, data_root=self.data_root, visitor=visitor)


@dataclass(frozen=True)
class SignInResult:
    """The answer to one sign-in attempt.

    Attributes:
        token: The new sign-in (the cookie's value), or "" when refused.
        retry_after: Seconds the client must wait before the next attempt counts (0 when it may try now).
        message: Why the attempt was refused ("" on success).
    """

    token: str = ""
    retry_after: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.token)


class SignIns:
    """The password check and the sign-ins it handed out (in memory: a restart signs everybody out).

    A client gets ``per_client`` wrong passwords in ``window`` seconds, then waits until the oldest of
    them is ``window`` seconds old; after ``overall`` wrong passwords in ``window`` seconds from all
    clients together, everyone waits. A refused client's password is not even compared.
    """

    def __init__(
        self, password: str, per_client: int = 5, overall: int = 50, window: float = 900.0, lifetime: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._password = hashlib.sha256(password.encode()).digest()
        self.per_client, self.overall, self.window, self.lifetime = per_client, overall, window, lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, collections.deque[float]] = {}
        self._all_failures: collections.deque[float] = collections.deque()
        self._tokens: dict[str, tuple[str, float]] = {}  # hash of the token -> (visitor key, expiry)

    def attempt(self, password: str, client: str, identity: str = "") -> SignInResult:
        """Checks ``password`` from ``client`` (an address); on success a new sign-in for ``identity`` (made up when empty)."""
        with self._lock:
            now = self._clock()
            wait = self._wait(client, now)
            if wait:
                return SignInResult(retry_after=wait, message=(
                    f"Too many wrong passwords were tried{' from this computer' if self._client_limited(client, now) else ''}; "
                    f"sign-ins are paused for {_minutes(wait)}. Wait, then try again with the password the app's owner gave you."
                ))
            if not hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self._password):
                self._failures.setdefault(client, collections.deque()).append(now)
                self._all_failures.append(now)
                left = self.per_client - len(self._failures[client])
                return SignInResult(retry_after=self._wait(client, now), message=(
                    "That is not the password of this app. Type the password the app's owner gave you"
                    + (f" ({left} more tr{'y' if left == 1 else 'ies'} before sign-ins from this computer pause)." if left > 0 else ".")
                ))
            self._failures.pop(client, None)
            token = secrets.token_urlsafe(32)
            self._tokens[_token_hash(token)] = (visitor_key(identity or secrets.token_urlsafe(24)), now + self.lifetime)
            return SignInResult(token=token)

    def visitor(self, token: str | None) -> str | None:
        """The visitor key of a valid sign-in, or None (unknown, signed out or expired)."""
        if not isinstance(token, str) or not token:
            return None
        with self._lock:
            found = self._tokens.get(_token_hash(token))
            if found is None:
                return None
            if found[1] < self._clock():
                del self._tokens[_token_hash(token)]
                return None
            return found[0]

    def sign_out(self, token: str | None) -> None:
        if isinstance(token, str) and token:
            with self._lock:
                self._tokens.pop(_token_hash(token), None)

    def _wait(self, client: str, now: float) -> int:
        """Seconds until ``client`` may try again (0: now); forgets failures older than the window."""
        horizon = now - self.window
        for failures in (*self._failures.values(), self._all_failures):
            while failures and failures[0] < horizon:
                failures.popleft()
        for empty in [name for name, failures in self._failures.items() if not failures]:
            del self._failures[empty]
        waits = [0.0]
        if self._client_limited(client, now):
            waits.append(self._failures[client][0] + self.window - now)
        if len(self._all_failures) >= self.overall:
            waits.append(self._all_failures[0] + self.window - now)
        return int(max(waits) + 0.999)

    def _client_limited(self, client: str, now: float) -> bool:
        return len(self._failures.get(client, ())) >= self.per_client


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _minutes(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{round(seconds / 60)} minutes"
