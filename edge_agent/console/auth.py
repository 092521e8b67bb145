"""Who may use the console: the live view's bearer token, or a session made from it.

A browser cannot send ``Authorization: Bearer`` when it navigates, so
``/console/login`` trades the token for a session: a random id in an
``HttpOnly; SameSite=Strict; Path=/console`` cookie, kept server side (the
cookie alone proves nothing), bounded in number and in age. Each session has
its own CSRF value, embedded in the page; a write carried by the cookie must
send it back as ``X-CSRF-Token`` and come from this origin (``Origin``), so a
page elsewhere cannot make the installer's browser place or release holds
(docs/console.md, "Access").

Ids are stored as SHA-256 digests: a lookup reveals nothing about a real id
through timing, and a memory dump holds no usable cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["COOKIE", "Auth", "Session", "Sessions"]

COOKIE = "edge_console"
MAX_SESSIONS = 16  # installers on site, not a user base: the oldest goes first
SESSION_SECONDS = 8 * 3600.0  # a working day on site, then the token again
MAX_TOKEN_TEXT = 512


@dataclass
class Session:
    csrf: str
    expires: float  # monotonic


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()


class Sessions:
    """Server-side sessions: bounded count, fixed lifetime, no background sweep."""

    def __init__(
        self,
        *,
        limit: int = MAX_SESSIONS,
        seconds: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._by_digest: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._by_digest.items() if s.expires <= now]:
            del self._by_digest[key]

    def create(self) -> tuple[str, Session]:
        self._prune()
        while len(self._by_digest) >= self.limit:
            self._by_digest.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(24), self._clock() + self.seconds)
        self._by_digest[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._by_digest.get(key)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._by_digest[key]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._by_digest.pop(_digest(session_id), None)


@dataclass(frozen=True)
class Caller:
    """How a request proved itself: by the bearer token, or by a session cookie."""

    bearer: bool
    session: Session | None


class Auth:
    def __init__(self, token: str, sessions: Sessions | None = None) -> None:
        if not token:
            raise ValueError("the console needs the live view token")
        self._token = token.encode("utf-8")
        self.sessions = sessions or Sessions()

    def token_ok(self, given: str) -> bool:
        if len(given) > MAX_TOKEN_TEXT:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def caller(self, request: web.Request) -> Caller | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_ok(given.strip()):
                return Caller(True, None)
            return None  # a wrong token is not rescued by a cookie
        session = self.sessions.get(request.cookies.get(COOKIE))
        return Caller(False, session) if session is not None else None

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """``Origin`` names this server (scheme-less compare: the host and port)."""
        origin = request.headers.get("Origin", "")
        if not origin or origin == "null":
            return False
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()

    def write_refusal(self, request: web.Request, caller: Caller) -> str | None:
        """Why a write from ``caller`` is refused, or None to allow it."""
        if caller.bearer:
            return None  # a browser never attaches a bearer header on its own
        assert caller.session is not None
        if not self.same_origin(request):
            return "the request does not come from this console (Origin header)"
        given = request.headers.get("X-CSRF-Token", "")
        if not given or not hmac.compare_digest(
            given.encode("utf-8", "replace"), caller.session.csrf.encode("utf-8")
        ):
            return "missing or wrong X-CSRF-Token (reload the console page)"
        return None
