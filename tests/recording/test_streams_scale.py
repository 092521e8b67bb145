"""Sixteen cameras in one agent: every one records keyframe-aligned segments of the right length.

A reduced ``bench/recorder.py --streams 16`` (issue 23): one RecorderManager,
16 real-time ``file://`` sources (320x240 H.264 + AAC, a keyframe every 2 s,
looped), 2 s segments. After three segments per source, every filed segment
except each source's last (cut by the stop) must start on a keyframe and hold
exactly one GOP: 50 video frames, 2.0 s by its catalog times.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av

from edge_agent.store.catalog import Catalog
from tests.support.mediagen import make_video
from tests.support.recorder import FAST, open_rig, running, source

N = 16
SEGMENT = 2  # seconds, one GOP of mediagen's clips


def video_packets(path: Path) -> tuple[bool, int]:
    """(first video packet is a keyframe, number of video packets)."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    return bool(packets and packets[0].is_keyframe), len(packets)


def filed(catalog: Catalog) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in catalog.recordings.list():
        if r.source_id is not None:
            counts[r.source_id] = counts.get(r.source_id, 0) + 1
    return counts


async def test_sixteen_sources_in_one_agent(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mkv", container="mkv", seconds=4, audio="aac")
    sources = "".join(
        source(f"cam{i:02d}", f"file://{clip}", "lab", seconds=SEGMENT) for i in range(N)
    )
    rig = open_rig(tmp_path, sources, FAST)
    async with running(rig):
        deadline = time.monotonic() + 40
        while True:
            counts = filed(rig.catalog)
            if len(counts) == N and min(counts.values()) >= 3:
                break
            assert time.monotonic() < deadline, f"segments filed per source: {counts}"
            await asyncio.sleep(0.2)
    for i in range(N):
        recs = rig.recordings(f"cam{i:02d}")
        assert len(recs) >= 3
        for rec in recs[:-1]:  # the last one was cut short by the stop
            key, frames = video_packets(rig.path(rec))
            length = (rec.tags.end - rec.tags.start).total_seconds()
            assert key, f"{rec.path}: does not start on a keyframe"
            assert frames == SEGMENT * 25, f"{rec.path}: {frames} video frames"
            assert abs(length - SEGMENT) < 0.05, f"{rec.path}: {length:.3f} s"
