"""The pure part of anonymization: masks to pixels, boxes carried between
detection frames, merging, the verdict (edge_agent/core/anon_plan.py)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from edge_agent.core import anon_plan
from edge_agent.core.anon_plan import Box

W, H = 1280, 720


@st.composite
def boxes(draw: st.DrawFn, w: int = W, h: int = H) -> Box:
    # Boxes may touch or cross the frame borders: detectors report such boxes.
    x1 = draw(st.integers(-50, w - 1))
    y1 = draw(st.integers(-50, h - 1))
    bw = draw(st.integers(1, 400))
    bh = draw(st.integers(1, 400))
    c = anon_plan.clip((x1, y1, x1 + bw, y1 + bh), w, h)
    return c if c is not None else (0, 0, 1, 1)


def covers(outer: Box, inner: Box) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and outer[2] >= inner[2]
        and (outer[3] >= inner[3])
    )


def inside_frame(b: Box) -> bool:
    return 0 <= b[0] < b[2] <= W and 0 <= b[1] < b[3] <= H


@given(boxes(), st.floats(0, 1))
def test_grow_covers_and_stays_in_the_frame(b: Box, fraction: float) -> None:
    g = anon_plan.grow(b, fraction, W, H)
    assert g is not None and covers(g, b) and inside_frame(g)


def test_clip_outside_the_frame_is_nothing() -> None:
    assert anon_plan.clip((1300, 10, 1400, 50), W, H) is None
    assert anon_plan.clip((-10, -10, 0, 5), W, H) is None
    assert anon_plan.clip((-10.5, -3, 4.2, 700.1), W, H) == (0, 0, 5, 701)


@given(boxes(), boxes(), st.integers(1, 12))
def test_linear_motion_is_covered_on_every_frame_between(a: Box, b: Box, steps: int) -> None:
    """A face moving linearly from box a to box b, by at most REACH box sizes, is
    covered on every frame in between."""
    assume(anon_plan._near(a, b) <= anon_plan.REACH)
    between = anon_plan.carry([a], [b], steps, W, H, fraction=0.0)
    assert len(between) == steps - 1
    for k, frame in enumerate(between, start=1):
        t = k / steps
        mid = [a[n] + (b[n] - a[n]) * t for n in range(4)]
        truth = anon_plan.clip((mid[0], mid[1], mid[2], mid[3]), W, H)
        if truth is None:
            continue
        assert any(covers(f, truth) for f in frame) or _union_covers(frame, truth)
        assert all(inside_frame(f) for f in frame)


def _union_covers(frame: list[Box], truth: Box) -> bool:
    # Unpaired boxes are held; every pixel of the truth must be in some box.
    return all(
        any(f[0] <= x < f[2] and f[1] <= y < f[3] for f in frame)
        for x in range(truth[0], truth[2], max(1, (truth[2] - truth[0]) // 7))
        for y in range(truth[1], truth[3], max(1, (truth[3] - truth[1]) // 7))
    )


@given(st.lists(boxes(), max_size=4), st.lists(boxes(), max_size=4), st.integers(1, 8))
def test_every_detection_is_held_over_the_gap(prev: list[Box], nxt: list[Box], steps: int) -> None:
    """A box seen on either side is covered on every frame between, paired or not
    (paired boxes are covered at their interpolated place, held ones where seen)."""
    between = anon_plan.carry(prev, nxt, steps, W, H, fraction=0.1)
    assert len(between) == max(0, steps - 1)
    pairs = anon_plan.pair(prev, nxt)
    held = [b for i, b in enumerate(prev) if i not in {p for p, _ in pairs}]
    held += [b for j, b in enumerate(nxt) if j not in {q for _, q in pairs}]
    for frame in between:
        for b in held:
            assert _union_covers(frame, b)


def test_n_equal_one_and_no_detections() -> None:
    assert anon_plan.carry([(0, 0, 10, 10)], [(5, 5, 15, 15)], 1, W, H, fraction=0.2) == []
    assert anon_plan.carry([], [], 5, W, H, fraction=0.2) == [[], [], [], []]
    assert all(anon_plan.is_detection_frame(i, 1) for i in range(10))
    assert anon_plan.is_detection_frame(0, 5)
    assert not anon_plan.is_detection_frame(7, 5)
    assert anon_plan.is_detection_frame(7, 5, last=True)


@given(st.lists(boxes(), max_size=8))
def test_merge_keeps_every_pixel_and_leaves_no_overlap(bs: list[Box]) -> None:
    merged = anon_plan.merge(bs)
    for b in bs:
        assert any(covers(m, b) for m in merged)
    for i, a in enumerate(merged):
        for b in merged[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_masks_in_normalised_coordinates() -> None:
    whole = [[0, 0], [1, 0], [1, 1], [0, 1]]
    assert anon_plan.check_polygon(whole) is None
    px = anon_plan.mask_to_pixels(whole, W, H)
    assert anon_plan.polygon_bounds(px, W, H) == (0, 0, W, H)
    assert anon_plan.check_polygon([[0, 0], [1, 1]]) is not None  # two points
    assert "0..1" in (anon_plan.check_polygon([[0, 0], [1.5, 0], [1, 1]]) or "")
    assert anon_plan.check_polygon([[0, 0], [1, 0], [1]]) is not None
    assert anon_plan.check_polygon([]) is not None  # an empty mask is refused


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=10))
def test_mask_pixels_stay_in_the_frame(points: list[tuple[float, float]]) -> None:
    px = anon_plan.mask_to_pixels(points, W, H)
    assert all(0 <= x <= W and 0 <= y <= H for x, y in px)
    b = anon_plan.polygon_bounds(px, W, H)
    assert b is None or inside_frame(b)


def test_verdict() -> None:
    assert anon_plan.verdict({"faces": 0, "plates": 0}, 0).verified
    v = anon_plan.verdict({"faces": 3, "plates": 0}, 0)
    assert not v.verified and "faces 3" in v.reason
    assert anon_plan.verdict({"faces": 2}, 2).verified
    assert not anon_plan.verdict({}, 0, checked=False).verified
