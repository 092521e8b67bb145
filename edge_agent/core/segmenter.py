"""Where the recorder cuts segments: a pure decision per packet.

Rules:

- a segment starts only on a video keyframe (a file that starts elsewhere
  shows grey until the next one); packets before it are skipped;
- once ``segment_seconds`` of stream time have passed, the next video keyframe
  closes the segment and opens the next one with that keyframe, so segments
  abut without a gap or overlap;
- a timestamp discontinuity on any stream (backwards, or forwards by more than
  ``max_gap``) closes the segment: the camera rebooted, a file looped without
  offset, or the network dropped data. The next segment starts at the next
  keyframe, with fresh timestamps, rather than carrying a jump inside a file;
- a keyframe whose codec parameters (in-band SPS/PPS) differ from the open
  segment's cuts: the camera's resolution or encoder settings changed, and
  the next segment gets a header that matches its packets.

Times are stream seconds (``dts`` or ``pts`` times the time base), never wall
clock: the recorder maps them to UTC separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Audio and video of one camera are not perfectly interleaved; a little
# backward movement between consecutive packets of one stream is reordering,
# not a discontinuity.
BACKWARD_TOLERANCE = 0.5
DEFAULT_MAX_GAP = 10.0
# Cameras usually set their GOP to the segment length, so the cutting keyframe
# falls exactly ``segment_seconds`` after the start; float rounding of 90 kHz
# timestamps (or a millisecond of camera jitter) can put it a hair early, and
# the segment would silently run to the next keyframe, twice as long. Less
# than half a frame at 60 fps, so it never cuts a frame early.
CUT_TOLERANCE = 0.005


class Action(StrEnum):
    SKIP = "skip"  # drop the packet (no open segment, waiting for a keyframe)
    OPEN = "open"  # open a segment starting with this packet
    WRITE = "write"  # write the packet to the open segment
    CUT = "cut"  # close the open segment, open the next one with this packet
    CLOSE = "close"  # close the open segment, drop this packet, wait for a keyframe


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


# The decisions without a computed reason, made once: decide() runs for every
# packet of every camera and building a frozen dataclass costs more than the rules.
_OPEN = Decision(Action.OPEN, "keyframe")
_SKIP = Decision(Action.SKIP, "no keyframe")
_WRITE = Decision(Action.WRITE)
_CUT_DURATION = Decision(Action.CUT, "duration")
_CUT_PARAMS = Decision(Action.CUT, "video parameters changed")


def discontinuity(last_ts: float | None, ts: float, max_gap: float) -> str | None:
    """Why ``ts`` does not follow ``last_ts`` on the same stream, or None if it does."""
    if last_ts is None:
        return None
    if ts < last_ts - BACKWARD_TOLERANCE:
        return f"timestamp went back {last_ts - ts:.3f}s"
    if ts > last_ts + max_gap:
        return f"timestamp jumped {ts - last_ts:.3f}s forward"
    return None


def decide(
    *,
    is_video: bool,
    is_keyframe: bool,
    ts: float,
    last_ts: float | None,
    segment_start: float | None,
    segment_seconds: float,
    max_gap: float = DEFAULT_MAX_GAP,
    params_changed: bool = False,
) -> Decision:
    """What to do with one packet.

    ``last_ts`` is the previous packet's time on the same stream (None after a
    (re)connect), ``segment_start`` the open segment's first keyframe time (None
    when no segment is open). ``params_changed``: this keyframe carries codec
    parameters other than the open segment's.
    """
    keyframe = is_video and is_keyframe
    if segment_start is None:
        return _OPEN if keyframe else _SKIP
    if last_ts is not None and not last_ts - BACKWARD_TOLERANCE <= ts <= last_ts + max_gap:
        jump = discontinuity(last_ts, ts, max_gap)
        if jump is not None:
            return Decision(Action.CUT if keyframe else Action.CLOSE, jump)
    if keyframe and params_changed:
        return _CUT_PARAMS
    if keyframe and ts - segment_start >= segment_seconds - CUT_TOLERANCE:
        return _CUT_DURATION
    return _WRITE
