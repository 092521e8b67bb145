"""Instant live view: a new viewer starts from the cached GOP, not the next keyframe.

A real ``testsrc://`` H.264 stream (4 s GOP, so waiting for the next keyframe
would take up to 4 s) is pumped into a PacketHub; a viewer subscribing in the
middle of a GOP must get a decodable keyframe at once, the rest of the GOP
squeezed to the newest timestamp, then live packets.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator

import av
import pytest
from av.packet import Packet
from av.video.frame import VideoFrame

from edge_agent.media.testsrc import open_testsrc
from edge_agent.recording.gopcache import GOP_MAX_PACKETS, GopCache
from edge_agent.recording.packethub import PacketHub, pump

URL = "testsrc://?size=640x360&rate=25&bitrate=1M&gop=4"


@pytest.fixture
def hub() -> Iterator[PacketHub]:
    hub = PacketHub()
    stop = threading.Event()
    src = open_testsrc(URL)
    t = threading.Thread(target=pump, args=(hub, "cam", src, stop), daemon=True)
    t.start()
    yield hub
    stop.set()
    t.join(5)
    src.close()


async def _wait_packets(hub: PacketHub, n: int) -> None:
    async with asyncio.timeout(20):
        while hub.counts("cam")[0] < n:  # noqa: ASYNC110 - the producer is a plain thread
            await asyncio.sleep(0.02)


async def test_new_viewer_starts_from_the_cached_gop(hub: PacketHub) -> None:
    await _wait_packets(hub, 40)  # 1.6 s into a 4 s GOP: the next keyframe is 2.4 s away
    assert hub.counts("cam")[1] == 0  # nobody watched: nothing copied for the cache
    sub = hub.subscribe("cam")
    t0 = time.monotonic()
    async with asyncio.timeout(2):
        first = await sub.video.get()
    waited = time.monotonic() - t0
    assert first.keyframe
    assert waited < 0.3, waited
    # The whole GOP is there at once, timestamps squeezed 1 ms apart.
    items = [first]
    while len(items) < 30:
        items.append(await sub.video.get())
    stamps = [i.seconds() or 0.0 for i in items[:10]]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(abs(g - 0.001) < 1e-4 for g in gaps), gaps
    # Decodable from the first packet on (Annex-B with SPS/PPS in front of the keyframe).
    dec = av.CodecContext.create("h264", "r")
    frames = [f for i in items for f in dec.decode(Packet(i.data)) if isinstance(f, VideoFrame)]
    assert len(frames) >= 20
    assert frames[0].width == 640
    sub.close()


async def test_two_viewers_each_get_the_gop(hub: PacketHub) -> None:
    await _wait_packets(hub, 30)
    a = hub.subscribe("cam")
    b = hub.subscribe("cam")
    async with asyncio.timeout(2):
        fa, fb = await a.video.get(), await b.video.get()
    assert fa.keyframe and fb.keyframe and fa.data == fb.data
    a.close()
    b.close()
    assert hub.subscriber_count("cam") == 0


def test_gop_cache_bounds() -> None:
    def pkt(size: int, key: bool) -> Packet:
        p = Packet(b"\0" * size)
        p.is_keyframe = key
        return p

    gop = GopCache()
    gop.add(pkt(10, False))
    assert gop.snapshot() == []  # nothing before the first keyframe
    gop.add(pkt(10, True))
    for _ in range(5):
        gop.add(pkt(10, False))
    assert len(gop.snapshot()) == 6 and gop.bytes == 60
    for _ in range(GOP_MAX_PACKETS):
        gop.add(pkt(10, False))
    assert gop.snapshot() == []  # too long a GOP: dropped, not truncated
    gop.add(pkt(10, True))
    assert len(gop.snapshot()) == 1
    gop.add(pkt(9 << 20, False))
    assert gop.snapshot() == []  # over the byte bound
