"""A 720p clip with real faces and known face boxes, for the anonymization tests
and bench/anonymize.py.

The faces are the photograph ``skimage.data.astronaut()`` from scikit-image
(a public-domain NASA portrait of Eileen Collins, shipped inside the
scikit-image package from the registry): once at full size and once at 0.6x,
moving across a textured background in opposite directions, so that the face
boxes move between detection frames. ``FACE`` is the identifying part of the
face in the photograph's pixels (brows, eyes, nose, mouth), measured by hand.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

W, H = 1280, 720
FACE = (184, 76, 266, 172)  # x1, y1, x2, y2 in astronaut() pixels
SECRET_TAGS = {"title": "Private rehearsal", "artist": "Jane Roe", "comment": "gps 52.1,4.3"}

Box = tuple[int, int, int, int]


def _photo() -> npt.NDArray[np.uint8]:
    from skimage import data

    img: npt.NDArray[np.uint8] = data.astronaut()
    return img


def _scaled(img: npt.NDArray[np.uint8], f: float) -> npt.NDArray[np.uint8]:
    h, w = img.shape[:2]
    yi = (np.arange(int(h * f)) / f).astype(int)
    xi = (np.arange(int(w * f)) / f).astype(int)
    out: npt.NDArray[np.uint8] = img[yi][:, xi]
    return out


def background() -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([60 + xx * 120 // W, 80 + yy * 100 // H, 140 - xx * 60 // W], axis=2)
    noise = rng.integers(-12, 12, size=(H // 8, W // 8, 1)).repeat(8, 0).repeat(8, 1)
    out: npt.NDArray[np.uint8] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return out


def frames(n: int) -> list[tuple[npt.NDArray[np.uint8], list[Box]]]:
    """``n`` RGB frames and, for each, the known face boxes in frame pixels."""
    big = _photo()
    small = _scaled(big, 0.6)
    bg = background()
    out = []
    for i in range(n):
        t = i / max(1, n - 1)
        frame = bg.copy()
        boxes: list[Box] = []
        for img, f, x, y in (
            (big, 1.0, int(20 + 700 * t), 100),
            (small, 0.6, int(960 - 700 * t), 380),
        ):
            h, w = img.shape[:2]
            h = min(h, H - y)
            frame[y : y + h, x : x + w] = img[:h]
            fx1, fy1, fx2, fy2 = (int(v * f) for v in FACE)
            boxes.append((x + fx1, y + fy1, x + fx2, y + fy2))
        out.append((frame, boxes))
    return out


def make_clip(
    path: Path, seconds: float = 2.0, fps: int = 25, *, audio: bool = True
) -> list[list[Box]]:
    """Write the clip (H.264 + AAC, with SECRET_TAGS) and return the known boxes per frame."""
    n = int(seconds * fps)
    known = []
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(SECRET_TAGS)
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        vs.metadata["handler_name"] = "Jane Roe camera"
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "mono"
        for i, (rgb, boxes) in enumerate(frames(n)):
            known.append(boxes)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if aus is not None:
            samples = int(seconds * 48000)
            tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000) * 0.3).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start : start + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                af.sample_rate = 48000
                af.pts = start
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode(None):
                out.mux(p)
    return known


def decode_rgb(path: Path) -> list[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as inp:
        return [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
