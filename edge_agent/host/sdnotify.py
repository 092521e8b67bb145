"""systemd's notify protocol without libsystemd (``sd_notify(3)``).

A notification is one datagram of ``KEY=VALUE`` lines sent to the unix socket
named by ``$NOTIFY_SOCKET``: a filesystem path, or an abstract-namespace name
written with a leading ``@``. Outside systemd the variable is unset and every
call here is a no-op, so the daemon calls these unconditionally.

Nothing here raises into the caller: a notification that cannot be sent is
logged once at debug level and dropped. A lost ``WATCHDOG=1`` is what the
watchdog exists to catch; crashing the daemon over it would be worse.

``$NOTIFY_SOCKET`` is read at each call rather than cached, so tests can point
it at their own socket and a process that unsets it (children must not
inherit it) stops notifying.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)

# Datagrams on a unix socket are not truncated silently: a too-long one fails
# with EMSGSIZE. systemd reads at most this much per message.
MAX_MESSAGE = 4096
_MAX_STATUS = 1024


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        # Abstract namespace: the name starts with a NUL byte on the wire.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # systemd also allows vsock:...; the agent never runs in a VM guest unit


def _clean(value: object) -> str:
    # One field per line: a newline inside a value would forge another field.
    return str(value).replace("\r", " ").replace("\n", " ")


def notify(*, unset_environment: bool = False, **fields: object) -> bool:
    """Send ``KEY=VALUE`` fields (``notify(READY=1, STATUS="up")``).

    Returns True if a datagram was sent, False when there is no notify socket
    or sending failed. ``unset_environment`` removes ``$NOTIFY_SOCKET`` after
    sending, so child processes cannot speak for the service.
    """
    raw = os.environ.get("NOTIFY_SOCKET", "")
    if unset_environment:
        os.environ.pop("NOTIFY_SOCKET", None)
    if not raw or not fields:
        return False
    address = _address(raw)
    if address is None:
        logger.debug("NOTIFY_SOCKET=%r is not a unix socket address; not notifying", raw)
        return False
    try:
        message = "\n".join(f"{key}={_clean(value)}" for key, value in fields.items())
        data = message.encode("utf-8", errors="replace")[:MAX_MESSAGE]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)  # a full receive queue must not stall the event loop
            sock.sendto(data, address)
    except Exception as exc:  # never into the caller: see the module docstring
        logger.debug("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """``READY=1``: start-up is done (catalog open, recovery finished)."""
    if status is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=_status_text(status))


def status(text: str) -> bool:
    """``STATUS=``: the one-line summary ``systemctl status`` shows."""
    return notify(STATUS=_status_text(text))


def watchdog() -> bool:
    """``WATCHDOG=1``: send only while health checks pass."""
    return notify(WATCHDOG=1)


def reloading() -> bool:
    """``RELOADING=1`` at the start of a config reload (follow with :func:`ready`)."""
    return notify(RELOADING=1)


def stopping(status: str | None = None) -> bool:
    """``STOPPING=1``: shutdown has begun."""
    if status is None:
        return notify(STOPPING=1)
    return notify(STOPPING=1, STATUS=_status_text(status))


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings systemd expects, or None when off.

    Follows ``sd_watchdog_enabled(3)``: ``$WATCHDOG_USEC`` must be a positive
    integer and ``$WATCHDOG_PID``, when set, must be this process (otherwise
    the watchdog belongs to a parent). Callers should ping at half this
    interval so one late ping does not get the service killed.
    """
    raw_usec = os.environ.get("WATCHDOG_USEC", "")
    raw_pid = os.environ.get("WATCHDOG_PID", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def _status_text(text: str) -> str:
    line = _clean(text)
    return line if len(line) <= _MAX_STATUS else line[: _MAX_STATUS - 3] + "..."


__all__ = [
    "MAX_MESSAGE",
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]
