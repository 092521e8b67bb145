"""The console's timeline of one location, drawn as SVG from plain data.

One lane per purpose; each recording is a bar coloured by purpose (hatched when
restricted, outlined when it is an anonymized derivative); a tick marks its
deadline when the deadline falls inside the window; holds are shaded across
all lanes; a red line marks now. Pure: the console gathers the rows, this only
draws them, so it is tested without a daemon (docs/console.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

PURPOSE_COLOURS = {
    "security": "#2f6fdf",
    "rnd": "#2a9d5c",
    "marketing": "#d9822b",
}
LANES = ("security", "rnd", "marketing")
WIDTH = 960
LANE_H = 28
TOP = 22
LEFT = 90
RIGHT = 12
MIN_BAR = 1.5  # px: a 10 s segment in a week's window still shows


@dataclass(frozen=True)
class Bar:
    id: str
    purpose: str
    start: datetime
    end: datetime
    deadline: datetime | None
    restricted: bool = False
    derivative: bool = False


@dataclass(frozen=True)
class Shade:
    id: str
    start: datetime
    end: datetime | None  # None: open-ended hold
    label: str


def _x(t: datetime, t0: datetime, t1: datetime) -> float:
    span = (t1 - t0).total_seconds() or 1.0
    frac = (t - t0).total_seconds() / span
    frac = min(max(frac, 0.0), 1.0)
    return LEFT + frac * (WIDTH - LEFT - RIGHT)


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def render(
    location: str,
    bars: Sequence[Bar],
    holds: Sequence[Shade],
    t0: datetime,
    t1: datetime,
    now: datetime,
) -> str:
    """SVG for ``bars`` and ``holds`` between ``t0`` and ``t1``; ``now`` as a line."""
    if t1 <= t0:
        raise ValueError("timeline window must end after it starts")
    height = TOP + LANE_H * len(LANES) + 24
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'class="timeline" role="img" aria-label="recordings at {escape(location)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#555"/></pattern></defs>',
    ]
    bottom = TOP + LANE_H * len(LANES)
    for h in holds:
        end = h.end if h.end is not None else t1
        if end < t0 or h.start > t1:
            continue
        x0, x1 = _x(h.start, t0, t1), _x(end, t0, t1)
        out.append(
            f'<rect class="hold" data-id="{escape(h.id)}" x="{x0:.1f}" y="{TOP - 4}" '
            f'width="{max(x1 - x0, MIN_BAR):.1f}" height="{bottom - TOP + 8}" '
            f'fill="#f2c94c" fill-opacity="0.35"><title>hold {escape(h.label)}</title></rect>'
        )
    for i, lane in enumerate(LANES):
        y = TOP + i * LANE_H
        out.append(
            f'<text x="4" y="{y + LANE_H * 0.65:.0f}" font-size="12" '
            f'font-family="sans-serif">{lane}</text>'
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y + LANE_H}" y2="{y + LANE_H}" '
            f'stroke="#ddd"/>'
        )
    for b in bars:
        if b.purpose not in LANES or b.end < t0 or b.start > t1:
            continue
        y = TOP + LANES.index(b.purpose) * LANE_H + 5
        x0, x1 = _x(b.start, t0, t1), _x(b.end, t0, t1)
        fill = "url(#hatch)" if b.restricted else PURPOSE_COLOURS[b.purpose]
        stroke = ' stroke="#111" stroke-width="1.5"' if b.derivative else ""
        kind = "restricted" if b.restricted else ("derivative" if b.derivative else "recording")
        due = f", deleted by {_fmt(b.deadline)}" if b.deadline else ", no deadline"
        out.append(
            f'<rect class="bar {kind}" data-id="{escape(b.id)}" x="{x0:.1f}" y="{y}" '
            f'width="{max(x1 - x0, MIN_BAR):.1f}" height="{LANE_H - 10}" fill="{fill}"{stroke}>'
            f"<title>{escape(b.id)} {_fmt(b.start)}–{_fmt(b.end)}{due}</title></rect>"
        )
        if b.deadline is not None and t0 <= b.deadline <= t1:
            xd = _x(b.deadline, t0, t1)
            out.append(
                f'<line class="deadline" x1="{xd:.1f}" x2="{xd:.1f}" y1="{y - 3}" '
                f'y2="{y + LANE_H - 7}" stroke="#b00" stroke-width="1"/>'
            )
    if t0 <= now <= t1:
        xn = _x(now, t0, t1)
        out.append(
            f'<line class="now" x1="{xn:.1f}" x2="{xn:.1f}" y1="{TOP - 8}" y2="{bottom + 4}" '
            f'stroke="#e00" stroke-width="2"/>'
        )
    out.append(
        f'<text x="{LEFT}" y="{height - 6}" font-size="11" font-family="sans-serif">'
        f"{_fmt(t0)}</text>"
        f'<text x="{WIDTH - RIGHT}" y="{height - 6}" font-size="11" font-family="sans-serif" '
        f'text-anchor="end">{_fmt(t1)} UTC</text>'
    )
    out.append("</svg>")
    return "".join(out)
