"""Test helpers shared by several test modules (first written in test_liveview.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from edge_agent.config.config import LiveView as LiveViewSettings
from edge_agent.liveview.liveview import LiveView, SourceInfo
from tests.support.broker import free_port

TOKEN = "liveview-test-token-0123456789"


URL = "testsrc://?size=640x360&rate=25&bitrate=1M&tone=1&gop=1"


SOURCES = [
    SourceInfo(
        "cam-gate", "gate", "security", "premises", audio_room=False, signage=True, audio=True
    ),
    SourceInfo(
        "cam-lab", "lab-audio-1", "rnd", "premises", audio_room=True, signage=True, audio=True
    ),
    SourceInfo("cam-unsigned", "yard", "security", "external", audio_room=False, signage=False),
]


def settings(max_viewers: int = 4) -> LiveViewSettings:
    return LiveViewSettings.model_validate(
        {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN, "max_viewers": max_viewers}
    )


@dataclass
class Viewer:
    pc: RTCPeerConnection
    status: int
    headers: dict[str, str]
    body: str
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)

    @property
    def location(self) -> str:
        return self.headers["Location"]

    def section(self, kind: str) -> str:
        """The answer's m-section for ``kind`` ('' if absent)."""
        parts = self.body.split("\r\nm=")
        return next(("m=" + p for p in parts[1:] if p.startswith(kind)), "")


async def watch(
    lv: LiveView,
    source_id: str,
    *,
    token: str = TOKEN,
    audio: bool = True,
    video_codec: str | None = None,
    content_type: str = "application/sdp",
) -> Viewer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    vt = pc.addTransceiver("video", direction="recvonly")
    if video_codec is not None:
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        vt.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == video_codec])
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    viewer = Viewer(pc, 0, {}, "")
    pc.on("track", lambda t: viewer.tracks.__setitem__(t.kind, t))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{lv.url}/whep/{source_id}",
            data=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        )
        viewer.status, viewer.headers, viewer.body = (
            resp.status,
            dict(resp.headers),
            await resp.text(),
        )
    if viewer.status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(viewer.body, "answer"))
    else:
        await pc.close()
    return viewer


async def frames(track: MediaStreamTrack, n: int, within: float = 15.0) -> list[Any]:
    out: list[Any] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await track.recv())
    return out
