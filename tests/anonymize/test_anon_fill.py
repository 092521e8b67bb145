"""The fills and the mask raster on YUV 4:2:0 planes (edge_agent/anonymize/fill.py):
boxes at the frame's borders, odd coordinates, sizes that are not a multiple of
the block, empty masks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")

from edge_agent.anonymize.fill import SOLID_YUV, MaskFill, Planes, fill_box, raster  # noqa: E402
from edge_agent.core import anon_plan  # noqa: E402

W, H = 96, 64


def _frame(seed: int = 1) -> np.ndarray:  # type: ignore[name-defined]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(H * 3 // 2, W), dtype=np.uint8)


@st.composite
def boxes(draw: st.DrawFn) -> anon_plan.Box:
    x1 = draw(st.integers(0, W - 1))
    y1 = draw(st.integers(0, H - 1))
    x2 = draw(st.integers(x1 + 1, W))
    y2 = draw(st.integers(y1 + 1, H))
    return (x1, y1, x2, y2)


@settings(max_examples=60)
@given(boxes(), st.sampled_from(["solid", "pixelate"]))
def test_fill_changes_only_the_box_and_leaves_no_detail(box: anon_plan.Box, mode: str) -> None:
    data = _frame()
    before = data.copy()
    planes = Planes.of(data, W, H)
    fill_box(planes, box, mode)
    x1, y1, x2, y2 = box
    changed = planes.y != Planes.of(before, W, H).y
    outside = changed.copy()
    outside[y1:y2, x1:x2] = False
    assert not outside.any()
    region = planes.y[y1:y2, x1:x2]
    if mode == "solid":
        assert (region == SOLID_YUV[0]).all()
    else:
        # Pixelated: at most 4 distinct blocks across the shorter side, blocks >= 16 px.
        assert len(np.unique(region[0])) <= -(-(x2 - x1) // 16)


def test_masks_raster_and_empty_masks() -> None:
    assert not raster([], W, H).any()
    empty = MaskFill.build([], W, H)
    data = _frame()
    before = data.copy()
    empty.apply(Planes.of(data, W, H))
    assert (data == before).all()

    whole = anon_plan.mask_to_pixels([[0, 0], [1, 0], [1, 1], [0, 1]], W, H)
    assert raster([whole], W, H).all()
    left = anon_plan.mask_to_pixels([[0, 0], [0.5, 0], [0.5, 1], [0, 1]], W, H)
    r = raster([left], W, H)
    assert r[:, : W // 2].all() and not r[:, W // 2 :].any()
    m = MaskFill.build([left], W, H)
    planes = Planes.of(data, W, H)
    m.apply(planes)
    assert (planes.y[:, : W // 2] == SOLID_YUV[0]).all()
    assert (planes.u[:, : W // 4] == SOLID_YUV[1]).all()
    assert (planes.y[:, W // 2 :] == Planes.of(before, W, H).y[:, W // 2 :]).all()
