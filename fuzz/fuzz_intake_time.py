"""The intake's handling of times and names from a watched folder, fed arbitrary input.

A file name (any bytes), a ``creation_time`` tag, an mtime and a packet span
become a start and an end exactly as :class:`edge_agent.intake.intake.Intake` computes
them. Allowed outcomes: a plausible start (or ``now``, untrusted), an end after
it, or a clean ValueError for the length; the name's display form is bounded
text that encodes as UTF-8. Anything else escaping is a crash.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

import atheris

with atheris.instrument_imports():
    from edge_agent.core.model import TimeSource
    from edge_agent.core.timesource import (
        DEFAULT_FLOOR,
        DEFAULT_MAX_FUTURE,
        choose_start,
        recording_end,
        start_candidates,
    )
    from edge_agent.intake.intake_source import DISPLAY_MAX, display_name
    from edge_agent.media.media_probe import PacketScan, parse_creation_time

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    name = os.fsdecode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) or b"x")
    tag = fdp.ConsumeUnicode(80)
    mtime = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    seconds = fdp.ConsumeFloat()
    header = fdp.ConsumeFloat() if fdp.ConsumeBool() else None

    shown = display_name(name)
    shown.encode("utf-8")
    assert len(shown) <= DISPLAY_MAX + 32

    creation = parse_creation_time({"creation_time": tag})
    choice = choose_start(start_candidates(name, None, creation, mtime), NOW)
    assert choice.start.tzinfo is not None
    if choice.source is not TimeSource.UNTRUSTED:
        assert DEFAULT_FLOOR <= choice.start <= NOW + DEFAULT_MAX_FUTURE
    try:
        end = recording_end(choice.start, seconds)
    except ValueError:
        pass
    else:
        assert choice.start <= end <= choice.start + timedelta(days=32)
    PacketScan(1, seconds, abs(seconds)).truncated(header)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
