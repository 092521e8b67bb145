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
        self._release(out)
        return out

    def drain(self) -> list[tuple[str, T]]:
        """Everything still queued, in release order (the source ended or jumped)."""
        out: list[tuple[str, T]] = []
        while len(self):
            kind = self._earliest([k for k in self.kinds if self._queues[k]])
            out.append((kind, self._queues[kind].popleft()[1]))
        return out

    def _release(self, out: list[tuple[str, T]]) -> None:
        while True:
            if all(self._queues.values()):
                kind = self._earliest(self.kinds)
            else:
                stale = [k for k in self.kinds if self._span(k) > self.window]
                if not stale:
                    return
                kind = self._earliest(stale)
            out.append((kind, self._queues[kind].popleft()[1]))

    def _earliest(self, kinds: Sequence[str]) -> str:
        return min(kinds, key=lambda k: (self._queues[k][0][0], self.kinds.index(k)))

    def _span(self, kind: str) -> float:
        queue = self._queues[kind]
        return queue[-1][0] - queue[0][0] if queue else 0.0
