"""The console's timeline SVG, drawn from plain rows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.console.timeline import Bar, Shade, render

T0 = datetime(2026, 12, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=2)
NS = "{http://www.w3.org/2000/svg}"


def _bars(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [e for e in root.iter(f"{NS}rect") if cls in (e.get("class") or "").split()]


def test_bars_holds_deadlines_and_now() -> None:
    bars = [
        Bar("r1", "security", T0 + timedelta(hours=1), T0 + timedelta(hours=2), T1),
        Bar("r2", "rnd", T0 + timedelta(hours=3), T0 + timedelta(hours=4), None, restricted=True),
        Bar("r3", "marketing", T0 - timedelta(days=5), T0 - timedelta(days=4), None),  # outside
        Bar("r4", "rnd", T0, T0 + timedelta(seconds=10), T0 + timedelta(days=1), derivative=True),
    ]
    holds = [Shade("h1", T0 + timedelta(hours=1), None, "incident <42>")]
    svg = render("gate & yard", bars, holds, T0, T1, T0 + timedelta(days=1))
    assert len(_bars(svg, "bar")) == 3
    assert len(_bars(svg, "restricted")) == 1
    assert len(_bars(svg, "derivative")) == 1
    assert len(_bars(svg, "hold")) == 1
    root = ET.fromstring(svg)
    lines = [e.get("class") for e in root.iter(f"{NS}line")]
    assert lines.count("deadline") == 2  # r1 at the window's end, r4 inside
    assert "now" in lines
    assert "incident &lt;42&gt;" in svg and "gate &amp; yard" in svg


def test_empty_window_is_refused() -> None:
    with pytest.raises(ValueError):
        render("x", [], [], T1, T0, T0)


times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(times, times, st.lists(st.tuples(times, times), max_size=8))
def test_always_well_formed_and_inside_the_box(a: datetime, b: datetime, spans: list) -> None:
    t0, t1 = min(a, b), max(a, b)
    if t0 == t1:
        t1 = t0 + timedelta(seconds=1)
    bars = [Bar(f"r{i}", "security", min(s, e), max(s, e), e) for i, (s, e) in enumerate(spans)]
    root = ET.fromstring(render("loc", bars, [], t0, t1, t0))
    for rect in root.iter(f"{NS}rect"):
        if rect.get("x") is not None:
            assert 0 <= float(rect.get("x", "0")) <= 960
