"""Bounds on the command path, decided without IO (docs/mqtt.md, "Limits").

Everything a client on the broker sends is bounded before it is believed:
the payload size before any parsing, the JSON nesting depth before
``json.loads`` (so a deep document cannot raise ``RecursionError``), the
reply topic at receipt, and the rate at which rejections are written to the
audit log. What reaches the audit about a rejected message is a fixed-size
record: a reason code, the size, a SHA-256 of the payload and a short,
escaped label for the topic, never the sender's text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_DEPTH = 8  # envelope -> args -> recording_ids is 3 deep; room to spare
MAX_REPLY_TOPIC = 256  # bytes, UTF-8
DEFAULT_QUEUE = 64  # per lane: signed-looking messages have their own
DEFAULT_WORKERS = 2
REJECT_BURST = 20  # rejections written one by one per window
REJECT_WINDOW = 60.0  # seconds
LABEL_MAX = 32

_TOKEN = re.compile(rb'[\[\]{}"\\]')
_LABEL_OK = re.compile(r"[^A-Za-z0-9._-]")


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON text nests ``[``/``{`` deeper than ``limit`` (strings skipped).

    Linear, and free for ordinary commands: fewer opening brackets than the
    limit cannot nest deeper. Invalid JSON may be judged either way; it is
    rejected regardless.
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for m in _TOKEN.finditer(payload):
        pos, ch = m.start(), payload[m.start()]
        if in_string:
            if pos == escaped_at:
                continue
            if ch == 0x5C:  # backslash: the next byte is escaped
                escaped_at = pos + 1
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return False


def label(text: str | None, limit: int = LABEL_MAX) -> str:
    """A bounded, escaped form of an untrusted name for logs and the audit log."""
    if text is None:
        return "-"
    kept = _LABEL_OK.sub("?", text[: limit + 1])
    return kept[:limit] + "~" if len(kept) > limit else kept or "?"


def default_reply_prefix(topic_root: str) -> str:
    return f"{topic_root}/reply/"


def check_reply_topic(topic: str | None, prefix: str) -> str | None:
    """Why an MQTT 5 response topic is refused (a fixed reason code), or None if usable.

    A refused topic only loses the copy on the response topic: the answer
    still goes to ``cmd-result/{id}``.
    """
    if topic is None:
        return None
    if not isinstance(topic, str) or not topic:
        return "empty"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_REPLY_TOPIC:
        return "too_long"
    if "\x00" in topic:
        return "nul"
    if "+" in topic or "#" in topic:
        return "wildcard"
    if not topic.startswith(prefix) or len(topic) == len(prefix):
        return "outside_reply_prefix"
    return None


@dataclass(frozen=True)
class RejectionSummary:
    """What was rejected without a record of its own during one window."""

    seconds: float
    counts: dict[str, int]
    payload_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "window_seconds": round(self.seconds, 1),
            "counts": dict(sorted(self.counts.items())),
            "total": sum(self.counts.values()),
            "payload_bytes": self.payload_bytes,
        }


@dataclass
class RejectionLimiter:
    """The first ``burst`` rejections of a window get a record each; the rest a count.

    ``now`` is a monotonic time in seconds. A window opens at its first
    rejection and closes ``window`` seconds later; the counts of a closed window
    come back once, from :meth:`admit` or :meth:`due`, to be written as one
    ``command.rejected_summary`` entry.
    """

    burst: int = REJECT_BURST
    window: float = REJECT_WINDOW
    _start: float | None = None
    _written: int = 0
    _counts: Counter[str] = field(default_factory=Counter)
    _bytes: int = 0

    def admit(self, now: float, reason: str, size: int) -> tuple[bool, RejectionSummary | None]:
        """(write this one individually?, summary of the window that just closed)."""
        closed = self.due(now)
        if self._start is None:
            self._start = now
        if self._written < self.burst:
            self._written += 1
            return True, closed
        self._counts[reason] += 1
        self._bytes += size
        return False, closed

    def count(self, now: float, reason: str, size: int) -> RejectionSummary | None:
        """Count a rejection that never gets a record of its own (a full queue)."""
        closed = self.due(now)
        if self._start is None:
            self._start = now
        self._counts[reason] += 1
        self._bytes += size
        return closed

    def due(self, now: float, *, force: bool = False) -> RejectionSummary | None:
        """Close the window when its time is up (or ``force``); its summary, if any."""
        if self._start is None or (now - self._start < self.window and not force):
            return None
        summary = None
        if self._counts:
            summary = RejectionSummary(now - self._start, dict(self._counts), self._bytes)
        self._start, self._written, self._bytes = None, 0, 0
        self._counts = Counter()
        return summary

    def next_due(self, now: float) -> float | None:
        """Seconds until the open window closes, when it has counts to report."""
        if self._start is None or not self._counts:
            return None
        return max(0.0, self._start + self.window - now)
