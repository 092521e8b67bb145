"""The offline default number-plate finder: a texture heuristic, no model.

A plate is a short horizontal band dense in vertical strokes (its characters)
inside a calmer surround. The finder scores windows of plate shape (4:1) by
the density of strong vertical edges inside minus the density in a ring
around them. It needs no weights, so it works on a fresh device, but it is
weak (docs/anonymization.md): it misses plates that are small (under ~12 px
high at the detection size), steeply angled, dirty or in low contrast, and it
also fires on other text (signs, lettering), which is then hidden too.
Configure a real plate model (``OnnxPlates``) where plates matter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_agent.anonymize.detectors import FloatBox, Image
from edge_agent.core import anon_plan

EDGE = 48  # grey-level step that counts as a stroke edge
HEIGHTS = (12, 18, 27, 40)  # plate heights tried, in pixels at the detection size
ASPECT = 4
MIN_DENSITY = 0.12  # strokes cover at least this much of a plate's columns
MAX_DENSITY = 0.6  # above: noise or foliage rather than characters


def _box_sums(
    integral: npt.NDArray[np.int64],
    y0: npt.NDArray[np.int64],
    x0: npt.NDArray[np.int64],
    h: int,
    w: int,
) -> npt.NDArray[np.int64]:
    s: npt.NDArray[np.int64] = (
        integral[y0 + h, x0 + w] - integral[y0, x0 + w] - integral[y0 + h, x0] + integral[y0, x0]
    )
    return s


class HeuristicPlates:
    name = "plates"

    def detect(self, rgb: Image, threshold: float) -> list[FloatBox]:
        grey = rgb.astype(np.int16).sum(axis=2) // 3
        edges = (np.abs(grey[:, 1:] - grey[:, :-1]) > EDGE).astype(np.int64)
        hh, ww = edges.shape
        integral = np.zeros((hh + 1, ww + 1), np.int64)
        integral[1:, 1:] = edges.cumsum(0).cumsum(1)
        boxes: list[anon_plan.Box] = []
        for h in HEIGHTS:
            w = h * ASPECT
            # The ring: half a plate height above and below, an eighth of its width aside.
            rh, rw = h // 2, w // 8
            if hh < h + 2 * rh + 1 or ww < w + 2 * rw + 1:
                continue
            step = max(2, h // 3)
            ys = np.arange(rh, hh - h - rh, step)
            xs = np.arange(rw, ww - w - rw, step)
            y0, x0 = np.meshgrid(ys, xs, indexing="ij")
            inner = _box_sums(integral, y0, x0, h, w)
            outer = _box_sums(integral, y0 - rh, x0 - rw, h + 2 * rh, w + 2 * rw)
            d_in = inner / (h * w)
            d_ring = (outer - inner) / ((h + 2 * rh) * (w + 2 * rw) - h * w)
            score = d_in - d_ring
            hit = (score > threshold) & (d_in >= MIN_DENSITY) & (d_in <= MAX_DENSITY)
            for y, x in zip(y0[hit], x0[hit], strict=True):
                boxes.append((int(x), int(y), int(x + w), int(y + h)))
        # Windows on one plate each see a few characters: their union is the plate.
        return [(float(a), float(b), float(c), float(d)) for a, b, c, d in anon_plan.merge(boxes)]
