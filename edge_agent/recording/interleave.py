"""Put a camera's audio and video packets in timestamp order before they are cut.

Sources do not deliver the two streams in time order: RTP carries them in
separate flows, so audio arrives a frame or two ahead of video from one camera
and behind it from another. The segmenter cuts at a video keyframe, so an
audio packet that arrives on the wrong side of the cutting keyframe would be
written to the wrong segment: a few tens of milliseconds of audio outside the
window the catalog gives that segment, or before its start.

:class:`Interleaver` is a small reorder buffer (the rule FFmpeg's muxers use):
a packet is released once every stream has a packet queued, smallest
timestamp first, video first on a tie, so the keyframe that cuts comes before
audio that plays from the same instant. A stream that falls silent cannot
hold the other back for longer than ``window`` seconds of its stream time, and
a stream whose time jumps back (a camera reboot) releases everything queued
first, so the segmenter still sees the discontinuity. Pure: no IO, any payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from edge_agent.core.segmenter import BACKWARD_TOLERANCE

T = TypeVar("T")

# A fifth of a second is several audio and video frames of skew, which is what
# cameras show, and bounds the delay added to a live viewer when a stream dies.
DEFAULT_WINDOW = 0.25


class Interleaver(Generic[T]):
    """Reorders items of several streams by timestamp; order within a stream is kept."""

    def __init__(self, kinds: Sequence[str], window: float = DEFAULT_WINDOW) -> None:
        if not kinds:
            raise ValueError("at least one stream")
        self.kinds = tuple(kinds)  # earlier kinds win ties
        self.window = window
        self._queues: dict[str, deque[tuple[float, T]]] = {k: deque() for k in self.kinds}
        # The same queues in tie-break order: every packet of every camera passes
        # through push(), so the release scan walks this tuple instead of sorting.
        self._ordered = tuple((k, self._queues[k]) for k in self.kinds)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def push(self, kind: str, ts: float, item: T) -> list[tuple[str, T]]:
        """Queue one item; return those now ready, in release order."""
        if len(self.kinds) == 1:
            return [(kind, item)]  # one stream is already in its own order
        queue = self._queues[kind]
        out: list[tuple[str, T]] = []
        if queue and ts < queue[-1][0] - BACKWARD_TOLERANCE:
            out.extend(self.drain())
        queue.append((ts, item))
        # Between pushes some stream has nothing queued and none is queued past the
        # window (that is where _release stops). While another stream is still
        # empty, only this one can have passed it: every packet of every camera
        # comes here, and most need no search over the queues.
        if not all(self._queues.values()):
            window = self.window
            while ts - queue[0][0] > window:
                out.append((kind, queue.popleft()[1]))
            return out
        if len(self._ordered) == 2:
            self._release_pair(out)  # a camera's video and audio
        else:
            self._release(out)
        return out

    def _release_pair(self, out: list[tuple[str, T]]) -> None:
        """:meth:`_release` for two streams, both with a packet queued."""
        (first, a), (second, b) = self._ordered
        while a and b:
            if b[0][0] < a[0][0]:  # strict: the first kind wins a tie
                out.append((second, b.popleft()[1]))
            else:
                out.append((first, a.popleft()[1]))
        # One ran dry: the other goes on only past the window.
        kind, queue = (first, a) if a else (second, b)
        window = self.window
        while queue and queue[-1][0] - queue[0][0] > window:
            out.append((kind, queue.popleft()[1]))

    def drain(self) -> list[tuple[str, T]]:
        """Everything still queued, in release order (the source ended or jumped)."""
        out: list[tuple[str, T]] = []
        while True:
            earliest, _, _ = self._heads()
            if earliest is None:
                return out
            out.append((earliest, self._queues[earliest].popleft()[1]))

    def _release(self, out: list[tuple[str, T]]) -> None:
        while True:
            earliest, stale, full = self._heads()
            # Every stream has a packet queued: the earliest is safe to release.
            # Otherwise only a stream queued for longer than the window goes on.
            kind = earliest if full else stale
            if kind is None:
                return
            out.append((kind, self._queues[kind].popleft()[1]))

    def _heads(self) -> tuple[str | None, str | None, bool]:
        """The stream whose head is earliest, the same among streams queued past the
        window (the first in ``kinds`` wins a tie) and whether every stream has one."""
        earliest = stale = None
        earliest_ts = stale_ts = 0.0
        full = True
        window = self.window
        for kind, queue in self._ordered:
            if not queue:
                full = False
                continue
            head = queue[0][0]
            if earliest is None or head < earliest_ts:  # strict: earlier kinds win ties
                earliest, earliest_ts = kind, head
            if queue[-1][0] - head > window and (stale is None or head < stale_ts):
                stale, stale_ts = kind, head
        return earliest, stale, full
