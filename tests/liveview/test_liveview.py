"""Live view: WHEP over real loopback HTTP, real aiortc peers, real testsrc:// packets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import pytest

from edge_agent.app.settings import source_plans, view_sources
from edge_agent.config.config import parse_config
from edge_agent.intake.intake import Intake
from edge_agent.intake.runtime import intake_settings
from edge_agent.liveview.liveview import LiveView
from edge_agent.liveview.liveview_tracks import Timeline
from edge_agent.media.testsrc import open_testsrc
from edge_agent.recording.packethub import (
    Channel,
    CodecInfo,
    H264Normalizer,
    HubPacket,
    PacketHub,
    pump,
)
from edge_agent.recording.recorder_manager import RecorderManager
from edge_agent.store.catalog import Catalog
from tests.support.broker import free_port
from tests.support.liveview import SOURCES, TOKEN, URL, frames, settings, watch
from tests.support.mediagen import make_video


@pytest.fixture(scope="module")
def hub() -> Iterator[PacketHub]:
    """One virtual camera per source, fed through the hub for the whole module."""
    hub = PacketHub()
    stop = threading.Event()
    threads = []
    for source_id in ("cam-gate", "cam-lab", "cam-unsigned"):
        src = open_testsrc(URL)
        t = threading.Thread(target=pump, args=(hub, source_id, src, stop), daemon=True)
        t.start()
        threads.append((t, src))
    yield hub
    stop.set()
    for t, src in threads:
        t.join(5)
        src.close()


@pytest.fixture
async def live(hub: PacketHub) -> AsyncIterator[LiveView]:
    lv = LiveView(settings(), SOURCES, hub)
    await lv.start()
    yield lv
    await lv.close()


async def request(lv: LiveView, method: str, path: str, token: str | None = TOKEN) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        resp = await http.request(method, lv.url + path, headers=headers)
        return resp.status


# -- end to end ------------------------------------------------------------------------


async def test_passthrough_video_and_no_audio_outside_audio_rooms(live: LiveView) -> None:
    v = await watch(live, "cam-gate")
    try:
        assert v.status == 201, v.body
        assert v.headers["Content-Type"].startswith("application/sdp")
        assert v.location.startswith("/whep/cam-gate/")
        assert v.headers["X-Liveview-Mode"] == "passthrough"
        video = v.section("video")
        assert "H264/90000" in video and "VP8" not in video
        assert "packetization-mode=1" in video
        # The source has a microphone, but the gate is no audio room.
        assert "a=inactive" in v.section("audio")
        got = await frames(v.tracks["video"], 30)
        assert (got[-1].width, got[-1].height) == (640, 360)
        assert "audio" not in v.tracks
        assert live.session_stats()[0]["frames"]["video"] >= 30
    finally:
        await v.pc.close()


async def test_audio_room_gets_opus_audio(live: LiveView) -> None:
    v = await watch(live, "cam-lab")
    try:
        assert v.status == 201, v.body
        assert v.headers["X-Liveview-Audio"] == "1"
        assert "opus/48000" in v.section("audio") and "a=sendonly" in v.section("audio")
        audio = await frames(v.tracks["audio"], 20)
        assert audio[-1].sample_rate == 48000
        assert len(await frames(v.tracks["video"], 5)) == 5
    finally:
        await v.pc.close()


async def test_reencodes_for_a_browser_without_h264(live: LiveView) -> None:
    v = await watch(live, "cam-gate", audio=False, video_codec="video/vp8")
    try:
        assert v.status == 201, v.body
        assert v.headers["X-Liveview-Mode"] == "reencode"
        assert "VP8/90000" in v.section("video")
        got = await frames(v.tracks["video"], 10)
        assert got[-1].width == 640
    finally:
        await v.pc.close()


async def test_recorder_packets_reach_a_viewer(tmp_path: Path) -> None:
    """The real seam: RecorderManager publishes into the hub -> viewer."""
    cfg = parse_config(
        f"""
[device]
id = "gw-test"
hw_profile = "generic-linux"
[storage]
root = "{tmp_path / "rec"}"
catalog = "{tmp_path / "catalog.db"}"
[[locations]]
id = "lab"
kind = "premises"
audio_room = true
signage = true
[[sources]]
id = "cam"
url = "{URL}"
location = "lab"
purpose = "rnd"
audio = true
segment_seconds = 60
[liveview]
listen = "127.0.0.1:{free_port()}"
token = "{TOKEN}"
""",
        tmp_path,
    )
    assert cfg.liveview is not None
    catalog = Catalog.open(
        tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec"
    )
    manager = RecorderManager(
        source_plans(cfg), Intake(catalog, intake_settings(cfg)), cfg.storage.root
    )
    hub = PacketHub()
    manager.attach_hub(hub)
    lv = LiveView(cfg.liveview, view_sources(cfg), hub)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(manager.run(stop))
        await lv.start()
        try:
            v = await watch(lv, "cam")
            assert v.status == 201, v.body
            assert v.headers["X-Liveview-Mode"] == "passthrough"
            assert len(await frames(v.tracks["video"], 30)) == 30
            assert len(await frames(v.tracks["audio"], 10)) == 10
            await v.pc.close()
        finally:
            await lv.close()
            stop.set()


# -- access ----------------------------------------------------------------------------


async def test_token_content_type_and_unknown_sources(live: LiveView) -> None:
    assert (await watch(live, "cam-gate", token="wrong-token-0123456789")).status == 401
    assert await request(live, "POST", "/whep/cam-gate", token=None) == 401
    bad_type = await watch(live, "cam-gate", content_type="text/plain")
    assert bad_type.status == 415
    assert (await watch(live, "nope")).status == 404
    # No signs at the location: not offered at all.
    assert (await watch(live, "cam-unsigned")).status == 404
    assert live.viewer_count == 0


async def test_api_sources_needs_the_token_and_lists_signed_sources(live: LiveView) -> None:
    async with aiohttp.ClientSession() as http:
        assert (await http.get(live.url + "/api/sources")).status == 401
        resp = await http.get(
            live.url + "/api/sources", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status == 200
        doc = await resp.json()
        page = await http.get(live.url + "/")
        assert page.status == 200 and "liveview.js" in await page.text()
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    by_id = {s["id"]: s for s in doc["sources"]}
    assert set(by_id) == {"cam-gate", "cam-lab"}
    assert by_id["cam-gate"] == {
        "id": "cam-gate",
        "location": "gate",
        "purpose": "security",
        "site": "premises",
        "audio": False,
        "audio_room": False,
        "live": True,
        "mode": "passthrough",
        "viewers": 0,
    }
    assert by_id["cam-lab"]["audio"] is True
    assert doc["max_viewers"] == 4


async def test_viewer_cap_and_delete(hub: PacketHub) -> None:
    lv = LiveView(settings(max_viewers=1), SOURCES, hub)
    await lv.start()
    try:
        first = await watch(lv, "cam-gate", audio=False)
        assert first.status == 201
        second = await watch(lv, "cam-lab", audio=False)
        assert second.status == 503
        assert "max_viewers" in second.body
        # Hanging up frees the slot and closes the server's peer.
        server_pc = next(iter(lv._sessions.values())).pc
        assert await request(lv, "DELETE", first.location, token="wrong-token-0123456789") == 401
        assert await request(lv, "DELETE", first.location) == 200
        assert server_pc.connectionState == "closed"
        assert lv.viewer_count == 0 and hub.subscriber_count("cam-gate") == 0
        assert await request(lv, "DELETE", first.location) == 404
        third = await watch(lv, "cam-lab", audio=False)
        assert third.status == 201
        await first.pc.close()
        await third.pc.close()
    finally:
        await lv.close()


async def test_close_hangs_up_every_viewer(hub: PacketHub) -> None:
    lv = LiveView(settings(), SOURCES, hub)
    await lv.start()
    viewers = [await watch(lv, s) for s in ("cam-gate", "cam-lab")]
    assert [v.status for v in viewers] == [201, 201]
    await frames(viewers[0].tracks["video"], 1)
    server_pcs = [s.pc for s in lv._sessions.values()]
    assert len(server_pcs) == 2
    await lv.close()
    await lv.close()  # idempotent
    assert all(pc.connectionState == "closed" for pc in server_pcs)
    assert lv.viewer_count == 0
    assert hub.subscriber_count("cam-gate") == hub.subscriber_count("cam-lab") == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await request(lv, "GET", "/")
    for v in viewers:
        await v.pc.close()


async def test_viewer_that_drops_its_connection_is_forgotten(live: LiveView) -> None:
    v = await watch(live, "cam-gate", audio=False)
    await frames(v.tracks["video"], 1)
    assert live.viewer_count == 1
    await v.pc.close()  # a closed browser tab: DTLS close_notify, no DELETE
    for _ in range(200):
        if live.viewer_count == 0:
            break
        await asyncio.sleep(0.05)
    assert live.viewer_count == 0


# -- the hub -----------------------------------------------------------------------------


def _item(keyframe: bool, n: int = 0) -> HubPacket:
    return HubPacket("video", bytes([n]), n, Fraction(1, 25), keyframe, CodecInfo("video", "h264"))


async def test_channel_starts_at_a_keyframe_and_resyncs_after_overflow() -> None:
    ch = Channel(3, gate_keyframes=True)
    ch.push(_item(False, 1))
    ch.push(_item(True, 2))
    ch.push(_item(False, 3))
    assert [(await ch.get()).pts for _ in range(2)] == [2, 3]
    for n in range(4, 8):  # overflow: 4 5 6 then 7 does not fit
        ch.push(_item(n == 4, n))
    ch.push(_item(False, 8))  # still waiting for a keyframe: dropped
    ch.push(_item(True, 9))
    assert (await ch.get()).pts == 9
    ch.close()
    with pytest.raises(EOFError):
        await ch.get()


def test_publish_without_viewers_does_no_work(hub: PacketHub) -> None:
    info = hub.codec("cam-gate", "video")
    assert info is not None and info.is_h264
    assert hub.subscriber_count("cam-gate") == 0  # packets flow, nothing queued anywhere


def _nal_types(data: bytes) -> list[int]:
    out: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        out.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return out


def _starts_decodable(data: bytes) -> bool:
    """SPS (7) and PPS (8) come before the IDR slice (5)."""
    types = _nal_types(data)
    return 5 in types and {7, 8} <= set(types[: types.index(5)])


def test_annexb_source_gets_parameter_sets_on_keyframes() -> None:
    src = open_testsrc("testsrc://?size=64x64&rate=25&gop=0.2")
    try:
        info = CodecInfo.from_stream(src.video)
        norm = H264Normalizer(info)
        stop = threading.Event()
        keyframes = 0
        for packet in src.packets(stop):
            for data, key in norm.convert(packet):
                if key:
                    assert _starts_decodable(data)
                    keyframes += 1
            if keyframes == 2:
                stop.set()
    finally:
        src.close()


def test_mp4_style_h264_becomes_annexb(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", seconds=1.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = CodecInfo.from_stream(stream)
        assert not info.extradata.startswith(b"\x00\x00")  # avcC
        norm = H264Normalizer(info)
        out = [c for p in container.demux(stream) if p.size for c in norm.convert(p)]
    assert out and out[0][1]
    assert _starts_decodable(out[0][0])
    assert all(d.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) for d, _ in out)


def test_timeline_survives_a_reconnect() -> None:
    tl = Timeline(90_000, 0.04)
    assert [tl.ticks(s) for s in (100.0, 100.04, 100.08)] == [0, 3600, 7200]
    assert tl.ticks(100.04) == 3600  # a B-frame shown before the newest one: kept
    assert tl.ticks(3.0) == 10_800  # the camera restarted its clock: keep going forward
    assert tl.ticks(3.04) == 14_400
