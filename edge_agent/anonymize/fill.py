"""Irreversible fills on a YUV 4:2:0 frame, in place (docs/anonymization.md).

Work happens on the decoder's own planes (no RGB round trip per frame): a
box is filled on the luma plane and, halved and rounded outwards, on both
chroma planes. Two fills, both irreversible: ``solid`` (one flat colour) and
``pixelate`` (a few coarse blocks of the region's mean: at most ``CELLS``
blocks across a face, too few to recognise anyone or to find a face again).
A light blur is not offered: it can be undone well enough to recognise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.core.anon_plan import Box, Polygon

Plane = npt.NDArray[np.uint8]
BoolMap = npt.NDArray[np.bool_]

SOLID_YUV = (16, 128, 128)  # video-range black
CELLS = 4  # pixelation: blocks across the shorter side of a box, at most
MIN_BLOCK = 16


@dataclass
class Planes:
    """Views of one yuv420p frame's planes (``to_ndarray`` layout: Y then U then V rows)."""

    y: Plane
    u: Plane
    v: Plane

    @classmethod
    def of(cls, frame: Plane, width: int, height: int) -> Planes:
        y = frame[:height]
        cw, ch = width // 2, height // 2
        chroma = frame[height:].reshape(-1)
        u = chroma[: cw * ch].reshape(ch, cw)
        v = chroma[cw * ch : 2 * cw * ch].reshape(ch, cw)
        return cls(y, u, v)


def _chroma(box: Box) -> Box:
    return (box[0] // 2, box[1] // 2, -(-box[2] // 2), -(-box[3] // 2))


def _pixelate(plane: Plane, box: Box, block: int) -> None:
    x1, y1, x2, y2 = box
    region = plane[y1:y2, x1:x2]
    h, w = region.shape
    if h == 0 or w == 0:
        return
    bh, bw = -(-h // block), -(-w // block)
    padded = np.pad(region, ((0, bh * block - h), (0, bw * block - w)), mode="edge")
    means = padded.reshape(bh, block, bw, block).mean(axis=(1, 3))
    region[:] = np.repeat(np.repeat(means, block, 0), block, 1)[:h, :w].astype(np.uint8)


def fill_box(planes: Planes, box: Box, mode: str) -> None:
    cx1, cy1, cx2, cy2 = _chroma(box)
    if mode == "solid":
        x1, y1, x2, y2 = box
        planes.y[y1:y2, x1:x2] = SOLID_YUV[0]
        planes.u[cy1:cy2, cx1:cx2] = SOLID_YUV[1]
        planes.v[cy1:cy2, cx1:cx2] = SOLID_YUV[2]
        return
    block = max(MIN_BLOCK, -(-min(box[2] - box[0], box[3] - box[1]) // CELLS))
    block += block % 2  # even, so that chroma blocks line up with luma blocks
    _pixelate(planes.y, box, block)
    _pixelate(planes.u, (cx1, cy1, cx2, cy2), block // 2)
    _pixelate(planes.v, (cx1, cy1, cx2, cy2), block // 2)


def raster(polygons: Sequence[Polygon], width: int, height: int) -> BoolMap:
    """Pixels whose centre lies inside any polygon (even-odd rule), computed once per job."""
    inside = np.zeros((height, width), np.bool_)
    if not polygons:
        return inside
    py, px = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    for polygon in polygons:
        hit = np.zeros((height, width), np.bool_)
        n = len(polygon)
        for i in range(n):
            (xa, ya), (xb, yb) = polygon[i], polygon[(i + 1) % n]
            if ya == yb:
                continue
            crosses = (ya > py) != (yb > py)
            x_at = xa + (py - ya) * (xb - xa) / (yb - ya)
            hit ^= crosses & (px < x_at)
        inside |= hit
    return inside


@dataclass(frozen=True)
class MaskFill:
    """Static privacy masks for one frame size: always solid, always applied."""

    luma: BoolMap
    chroma: BoolMap
    empty: bool

    @classmethod
    def build(cls, polygons: Sequence[Polygon], width: int, height: int) -> MaskFill:
        luma = raster(polygons, width, height)
        # A chroma sample is masked when any of its four luma pixels is.
        ch, cw = height // 2, width // 2
        chroma: BoolMap = np.asarray(
            luma[: ch * 2, : cw * 2].reshape(ch, 2, cw, 2).any(axis=(1, 3)), dtype=np.bool_
        )
        return cls(luma, chroma, not bool(luma.any()))

    def apply(self, planes: Planes) -> None:
        if self.empty:
            return
        planes.y[self.luma] = SOLID_YUV[0]
        planes.u[self.chroma] = SOLID_YUV[1]
        planes.v[self.chroma] = SOLID_YUV[2]
