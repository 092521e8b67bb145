"""Test helpers shared by several test modules (first written in test_adopt_audio.py)."""

from __future__ import annotations

from pathlib import Path

import av


def camera_file(path: Path, fmt: str, codec: str, rate: int, shade: int = 0, **opts: str) -> Path:
    """Two seconds of H.264 plus silence in ``codec``, as a DVR would store it."""
    with av.open(str(path), "w", format=fmt, container_options=opts) as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
        a = out.add_stream(codec, rate=rate)
        a.layout = "mono"
        if codec == "g726":
            a.bit_rate = 32000
        step = rate // 25
        for i in range(50):
            frame = av.VideoFrame(160, 120, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 3 + shade) % 256]) * plane.buffer_size)
            frame.pts = i
            out.mux(v.encode(frame))
            sound = av.AudioFrame(format="fltp" if codec == "aac" else "s16", layout="mono",
                                  samples=step)  # fmt: skip
            sound.planes[0].update(bytes(sound.planes[0].buffer_size))
            sound.sample_rate, sound.pts = rate, i * step
            out.mux(a.encode(sound))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path
