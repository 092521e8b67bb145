"""Clips for the demo, made the way a camera or an NVR would drop them (PyAV)."""

from __future__ import annotations

import math
from array import array
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = ["face_clip", "make_clip", "still_jpeg"]


def _frame(index: int, w: int, h: int, seed: int) -> Any:
    import av

    frame = av.VideoFrame(w, h, "yuv420p")
    for n, plane in enumerate(frame.planes):
        ph = h if n == 0 else h // 2
        row = bytes((x + index * 4 + n * 64 + seed) & 0xFF for x in range(plane.line_size + ph))
        plane.update(b"".join(row[y : y + plane.line_size] for y in range(ph)))
    frame.pts = index
    return frame


def make_clip(path: Path, *, seconds: float, start: datetime, tone: bool) -> Path:
    """A camera-like clip: H.264 test pattern, AAC tone when asked, creation_time set."""
    import av

    fps, (w, h), sr, n = 15, (320, 180), 48000, 1024
    seed = sum(path.name.encode()) % 251  # each camera's picture differs, like real ones
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata["creation_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        a = out.add_stream("aac", rate=sr) if tone else None
        for i in range(int(seconds * fps)):
            out.mux(v.encode(_frame(i, w, h, seed)))
        out.mux(v.encode(None))
        if a is not None:
            for k in range(0, int(seconds * sr) - n, n):
                pcm = array(
                    "h", (int(6000 * math.sin(2 * math.pi * 440 * (k + i) / sr)) for i in range(n))
                )
                af = av.AudioFrame(format="s16", layout="mono", samples=n)
                af.planes[0].update(pcm.tobytes())
                af.sample_rate, af.pts, af.time_base = sr, k, Fraction(1, sr)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def face_clip(path: Path, *, seconds: float, start: datetime) -> Path | None:
    """An R&D clip with a real face: scikit-image's photograph ``astronaut()``
    (a public-domain NASA portrait shipped inside the package), sliding across
    the frame. None when scikit-image is not installed (it comes with the
    ``anonymize`` extra)."""
    try:
        import numpy as np
        from skimage import data
    except ImportError:
        return None
    import av

    photo = data.astronaut()[::2, ::2]  # type: ignore[no-untyped-call]  # 256 x 256
    fps, (w, h) = 15, (640, 360)
    n = int(seconds * fps)
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata["creation_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "g": str(fps)}
        for i in range(n):
            img = np.full((h, w, 3), (90, 110, 130), dtype=np.uint8)
            x = 40 + int((w - 256 - 80) * i / max(1, n - 1))
            img[52 : 52 + 256, x : x + 256] = photo
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    return path


def still_jpeg(video: Path, jpeg: Path, *, at_seconds: float = 0.5) -> Path:
    """The frame at ``at_seconds`` as a JPEG (PyAV's MJPEG encoder, no imaging library)."""
    import av

    with av.open(str(video)) as src:
        stream = src.streams.video[0]
        chosen: Any = None
        for frame in src.decode(stream):
            chosen = frame
            if frame.time is not None and frame.time >= at_seconds:
                break
    if chosen is None:
        raise ValueError(f"{video}: no picture")
    with av.open(str(jpeg), "w", format="image2") as out:
        enc = out.add_stream("mjpeg", rate=1)
        enc.width, enc.height, enc.pix_fmt = chosen.width, chosen.height, "yuvj420p"
        frame = chosen.reformat(format="yuvj420p")
        frame.pts = 0
        for pkt in enc.encode(frame):
            out.mux(pkt)
        for pkt in enc.encode(None):
            out.mux(pkt)
    return jpeg
