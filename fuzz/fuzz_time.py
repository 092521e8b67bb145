"""Time parsers fed arbitrary text: the only failure allowed is a clean ValueError
(parse_ts) or None (segment names), never another exception."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from edge_agent.core.model import TimeSource, parse_ts
    from edge_agent.core.timesource import choose_start, parse_segment_name

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(80)
    try:
        dt = parse_ts(text)
    except ValueError:
        dt = None
    else:
        assert dt.tzinfo is not None
    name = parse_segment_name(text)
    if name is not None:
        assert name.tzinfo is not None
    choose_start([(TimeSource.RECORDER, name), (TimeSource.CREATION_TIME, dt)], NOW)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
