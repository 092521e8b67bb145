"""What to hide on which frame: the pure part of anonymization (docs/anonymization.md).

Boxes are ``(x1, y1, x2, y2)`` in pixels, end exclusive. The IO package
(``edge_agent.anonymize``) decodes, runs the detectors and fills; this module
decides where: static privacy masks given in normalised coordinates become
pixel polygons, detections made on every Nth frame are carried to the frames
in between (interpolated and grown to cover motion), overlapping boxes are
merged, and the residual counts of the verification pass become a verdict.

No identity is computed: boxes of two detection frames are paired only to
interpolate a position, and nothing outlives the job (docs/anonymization.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Box = tuple[int, int, int, int]
Point = tuple[float, float]
Polygon = tuple[Point, ...]

MAX_POLYGON_POINTS = 64
MAX_MASKS = 32


def clip(box: tuple[float, float, float, float], width: int, height: int) -> Box | None:
    """``box`` rounded outwards and clipped to the frame; None when nothing is left."""
    x1 = max(0, math.floor(box[0]))
    y1 = max(0, math.floor(box[1]))
    x2 = min(width, math.ceil(box[2]))
    y2 = min(height, math.ceil(box[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def grow(
    box: tuple[float, float, float, float],
    fraction: float,
    width: int,
    height: int,
    *,
    margin: float = 0.0,
) -> Box | None:
    """``box`` grown by ``fraction`` of its size plus ``margin`` pixels on every side."""
    dx = (box[2] - box[0]) * fraction + margin
    dy = (box[3] - box[1]) * fraction + margin
    return clip((box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy), width, height)


def scale_box(
    box: tuple[float, float, float, float], sx: float, sy: float
) -> tuple[float, float, float, float]:
    """A box found on a scaled copy of the frame, in the frame's pixels."""
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def check_polygon(polygon: Sequence[Sequence[float]]) -> str | None:
    """Why ``polygon`` is not a usable privacy mask, or None when it is."""
    if not 3 <= len(polygon) <= MAX_POLYGON_POINTS:
        return f"a mask needs 3..{MAX_POLYGON_POINTS} points, got {len(polygon)}"
    for i, point in enumerate(polygon):
        if len(point) != 2:
            return f"point {i} must be [x, y], got {list(point)!r}"
        for v in point:
            if not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                return f"point {i}: coordinates are fractions of the frame in 0..1, got {v!r}"
    return None


def mask_to_pixels(polygon: Sequence[Sequence[float]], width: int, height: int) -> Polygon:
    """A normalised polygon (0..1 of the frame) in pixel coordinates of this frame size.

    1.0 maps to the far edge (``width``), so ``[[0,0],[1,0],[1,1],[0,1]]`` is
    the whole frame whatever its size.
    """
    return tuple((float(x) * width, float(y) * height) for x, y in polygon)


def polygon_bounds(polygon: Polygon, width: int, height: int) -> Box | None:
    """The pixel box around ``polygon`` (where its fill can be), clipped to the frame."""
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    return clip((min(xs), min(ys), max(xs), max(ys)), width, height)


def is_detection_frame(index: int, every: int, *, last: bool = False) -> bool:
    """Detect on frames 0, N, 2N, ... and always on the last one, so that every
    frame in between has a detection on both sides to carry boxes from."""
    return last or index % max(1, every) == 0


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _near(a: Box, b: Box) -> float:
    """Centre distance in units of the larger box's size (smaller is nearer)."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    size = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1)
    return math.hypot(ca[0] - cb[0], ca[1] - cb[1]) / size


# How far (in box sizes) a face may move between two detection frames and still
# be followed: at N=2 and 25 fps, two face widths in 80 ms is beyond a sprint.
REACH = 2.0


def pair(prev: Sequence[Box], nxt: Sequence[Box], *, reach: float = REACH) -> list[tuple[int, int]]:
    """Greedy pairs of boxes of two detection frames whose centres are within
    ``reach`` box sizes: only to interpolate a position, never an identity."""
    candidates = sorted(
        (_near(a, b), i, j)
        for i, a in enumerate(prev)
        for j, b in enumerate(nxt)
        if _near(a, b) <= reach
    )
    used_i: set[int] = set()
    used_j: set[int] = set()
    out: list[tuple[int, int]] = []
    for _, i, j in candidates:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j))
    return out


def carry(
    prev: Sequence[Box],
    nxt: Sequence[Box],
    steps: int,
    width: int,
    height: int,
    *,
    fraction: float,
) -> list[list[Box]]:
    """Boxes for the ``steps - 1`` frames strictly between two detection frames
    ``steps`` apart, whose detections are ``prev`` and ``nxt`` (not yet grown).

    A box that moves at most ``REACH`` box sizes is paired: it is interpolated
    linearly and grown by ``fraction`` plus the distance it moves in one frame,
    so motion that is not quite linear stays covered; a box seen on one side
    only is held, grown, over the whole gap (a face that leaves or arrives, or
    that the detector missed on one side).
    """
    if steps <= 1:
        return []
    pairs = pair(prev, nxt)
    paired_i = {i for i, _ in pairs}
    paired_j = {j for _, j in pairs}
    held = [b for i, b in enumerate(prev) if i not in paired_i]
    held += [b for j, b in enumerate(nxt) if j not in paired_j]
    held_grown = [g for b in held if (g := grow(b, fraction, width, height)) is not None]
    out: list[list[Box]] = []
    for k in range(1, steps):
        t = k / steps
        frame: list[Box] = list(held_grown)
        for i, j in pairs:
            a, b = prev[i], nxt[j]
            step = max(abs(b[n] - a[n]) for n in range(4)) / steps
            mid = tuple(a[n] + (b[n] - a[n]) * t for n in range(4))
            g = grow((mid[0], mid[1], mid[2], mid[3]), fraction, width, height, margin=step)
            if g is not None:
                frame.append(g)
        out.append(merge(frame))
    return out


def merge(boxes: Sequence[Box]) -> list[Box]:
    """Overlapping boxes replaced by their union until none overlap: fewer fills,
    and never less area covered."""
    out = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return sorted(out)


@dataclass(frozen=True)
class Verdict:
    verified: bool
    reason: str


def verdict(residuals: Mapping[str, int], limit: int, *, checked: bool = True) -> Verdict:
    """Is the output anonymized? Only when the verification pass ran and found
    at most ``limit`` detections in all (docs/anonymization.md, "verified")."""
    if not checked:
        return Verdict(False, "not verified: the verification pass did not run")
    total = sum(residuals.values())
    if total > limit:
        found = ", ".join(f"{k} {v}" for k, v in sorted(residuals.items()) if v)
        return Verdict(False, f"{total} residual detections ({found}) over the limit {limit}")
    return Verdict(True, f"{total} residual detections (limit {limit})")


__all__ = [
    "MAX_MASKS",
    "MAX_POLYGON_POINTS",
    "Box",
    "Polygon",
    "Verdict",
    "carry",
    "check_polygon",
    "clip",
    "grow",
    "iou",
    "is_detection_frame",
    "mask_to_pixels",
    "merge",
    "pair",
    "polygon_bounds",
    "scale_box",
    "verdict",
]
