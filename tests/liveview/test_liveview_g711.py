"""Live view of a G.711 camera: PCMU/PCMA reach the browser as is, only in audio rooms."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from edge_agent.liveview.liveview import LiveView
from edge_agent.liveview.liveview_tracks import (
    G711AudioTrack,
    OpusAudioTrack,
    audio_track,
    g711_mime,
)
from edge_agent.media.testsrc import open_testsrc
from edge_agent.recording.packethub import Channel, CodecInfo, PacketHub, pump
from tests.support.liveview import SOURCES, frames, settings, watch

PCMU = "testsrc://?size=320x240&rate=25&bitrate=300k&gop=1&audio=pcmu"
PCMA = "testsrc://?size=320x240&rate=25&bitrate=300k&gop=1&audio=pcma"


def test_only_8khz_mono_g711_goes_out_as_is() -> None:
    assert g711_mime(CodecInfo("audio", "pcm_mulaw", sample_rate=8000, layout="mono")) == (
        "audio/pcmu"
    )
    assert g711_mime(CodecInfo("audio", "pcm_alaw", sample_rate=8000, layout="")) == "audio/pcma"
    assert g711_mime(CodecInfo("audio", "pcm_alaw", sample_rate=16000, layout="mono")) is None
    assert g711_mime(CodecInfo("audio", "aac", sample_rate=8000, layout="mono")) is None
    assert g711_mime(None) is None
    chan = Channel(8, gate_keyframes=False)
    g711, mimes = audio_track(chan, CodecInfo("audio", "pcm_alaw", sample_rate=8000))
    assert isinstance(g711, G711AudioTrack) and mimes == ("audio/pcma",)
    opus, mimes = audio_track(chan, CodecInfo("audio", "aac", sample_rate=48000))
    assert isinstance(opus, OpusAudioTrack) and mimes == ("audio/opus",)


@pytest.fixture(scope="module")
def g711_hub() -> Iterator[PacketHub]:
    hub = PacketHub()
    stop = threading.Event()
    threads = []
    for source_id, url in (("cam-lab", PCMU), ("cam-gate", PCMA)):
        src = open_testsrc(url)
        t = threading.Thread(target=pump, args=(hub, source_id, src, stop), daemon=True)
        t.start()
        threads.append((t, src))
    yield hub
    stop.set()
    for t, src in threads:
        t.join(5)
        src.close()


@pytest.fixture
async def g711_live(g711_hub: PacketHub) -> AsyncIterator[LiveView]:
    lv = LiveView(settings(), SOURCES, g711_hub)
    await lv.start()
    yield lv
    await lv.close()


async def test_pcmu_camera_in_an_audio_room_is_sent_as_pcmu(g711_live: LiveView) -> None:
    v = await watch(g711_live, "cam-lab")
    try:
        assert v.status == 201, v.body
        audio = v.section("audio")
        assert "PCMU/8000" in audio and "opus" not in audio.lower(), audio
        got = await frames(v.tracks["audio"], 25)
        # The viewer's decoder gets 20 ms of 8 kHz mono per packet: nothing was resampled.
        assert got[-1].sample_rate == 8000 and got[-1].samples == 160
        assert len(await frames(v.tracks["video"], 5)) == 5
        stats = g711_live.session_stats()[0]
        assert stats["frames"]["audio"] >= 25, stats
    finally:
        await v.pc.close()


async def test_g711_camera_outside_audio_rooms_sends_no_audio(g711_live: LiveView) -> None:
    v = await watch(g711_live, "cam-gate")
    try:
        assert v.status == 201, v.body
        assert "a=inactive" in v.section("audio") and "audio" not in v.tracks
    finally:
        await v.pc.close()
