"""The administrator's token, login sessions, and the CSRF token of each session.

* The token lives in a file (`web.admin_token_file`), read at start and on SIGHUP; it is
  compared in constant time (`hmac.compare_digest`). A changed token ends every session.
* A login opens a session: a random id (256 bits) in a cookie that is `HttpOnly` (no
  script reads it), `SameSite=Strict` (no other site's page sends it) and `Path=/admin`;
  `Secure` with `web.cookie_secure`, since behind a TLS-terminating proxy the gateway
  cannot tell whether the browser used https. Sessions live in this process's memory
  (one process serves the pages) and end after SESSION_TTL, or at logout.
* Every change is a POST carrying the session's CSRF token (a synchronizer token: random,
  per session, in a hidden form field), compared in constant time. SameSite=Strict
  already keeps other sites' forms from riding the cookie; the token also covers old
  browsers and same-site pages (another port on this host is the same site).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

MIN_TOKEN_LENGTH = 16
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 100  # logins at once; beyond, the oldest ends
COOKIE = "onajimi_admin"


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace dropped), or ConfigError naming the key."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"web.admin_token_file: cannot read {path}: {exc}") from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"web.admin_token_file: {path}: the token must be one word of at least "
            f"{MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 24 > {path.name}`)"
        )
    return token


def same(secret: str, given: str) -> bool:
    """Constant-time comparison (its time does not tell how much of `given` was right)."""
    return hmac.compare_digest(secret.encode("utf-8"), given.encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class AdminSession:
    id: str
    who: str  # the name given at login, for the decision log's admin lines
    address: str  # where the login came from
    csrf: str
    expires: float


class Sessions:
    def __init__(self, token: str | None, clock: Callable[[], float] = time.time) -> None:
        self.token = token  # None: no admin pages at all
        self.clock = clock
        self._open: dict[str, AdminSession] = {}

    def rekey(self, token: str | None) -> None:
        """A (re)read token: a different one ends every session."""
        if token != self.token:
            self._open.clear()
        self.token = token

    def login(self, given: str, who: str, address: str) -> AdminSession | None:
        """A new session when `given` is the token, else None."""
        if self.token is None or not same(self.token, given):
            return None
        session = AdminSession(
            id=secrets.token_urlsafe(32),
            who=who,
            address=address,
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + SESSION_TTL,
        )
        self._open[session.id] = session
        while len(self._open) > MAX_SESSIONS:
            del self._open[next(iter(self._open))]
        return session

    def get(self, session_id: str | None) -> AdminSession | None:
        if not session_id or self.token is None:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        if self.clock() >= session.expires:
            del self._open[session_id]
            return None
        return session

    def logout(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    @staticmethod
    def csrf_ok(session: AdminSession, given: str | None) -> bool:
        return given is not None and same(session.csrf, given)
