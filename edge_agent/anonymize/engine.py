"""Anonymize one video file into a new one, then verify it (docs/anonymization.md).

``anonymize_file(src, dst, settings)`` is the whole job for one recording:
decode with PyAV, detect faces and plates on every Nth frame (boxes carried
between detections by ``core.anon_plan``), apply the static privacy masks,
fill irreversibly, encode H.264 with no audio and no metadata but ``tags``,
then run the detectors again on the result at a lower threshold and count
what is still found. It blocks (call it through ``asyncio.to_thread`` or a
worker), never touches ``src``, and never raises for a bad input: the result
carries a status and a reason.

Files: the output is written under a hidden temporary name beside ``dst``,
verified there, fsynced, renamed to ``dst`` and the folder fsynced; so
``dst`` exists only complete. A failed or cancelled job leaves no file. The
output is kept even when verification fails: whether it is exempt from
retention is the caller's decision (``result.verified``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from edge_agent.anonymize.detectors import Detector, DetectorError, Image
from edge_agent.anonymize.fill import MaskFill, Planes, fill_box
from edge_agent.anonymize.settings import (
    AnonResult,
    AnonSettings,
    load_detectors,
    with_thresholds,
)
from edge_agent.core import anon_plan
from edge_agent.core.anon_plan import Box
from edge_agent.host.fsutil import fsync_dir, fsync_file

log = logging.getLogger(__name__)

Cancel = Callable[[], bool]
Progress = Callable[[int], None]


class _Cancelled(Exception):
    pass


class _Bad(Exception):
    """A verdict on the input or the output: status ``failed`` with this reason."""


def _small(frame: av.VideoFrame, width: int) -> tuple[Image, float, float]:
    """The frame scaled to ``width`` (even, aspect kept) in RGB, and the factors back."""
    w = min(width, frame.width) if width > 0 else frame.width
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    rgb: Image = np.asarray(
        frame.reformat(width=w, height=h, format="rgb24").to_ndarray(), dtype=np.uint8
    )
    return rgb, frame.width / w, frame.height / h


def _detect(
    detectors: list[tuple[Detector, float]], frame: av.VideoFrame, width: int
) -> dict[str, list[Box]]:
    rgb, sx, sy = _small(frame, width)
    found: dict[str, list[Box]] = {}
    for det, threshold in detectors:
        boxes = []
        for b in det.detect(rgb, threshold):
            c = anon_plan.clip(anon_plan.scale_box(b, sx, sy), frame.width, frame.height)
            if c is not None:
                boxes.append(c)
        found[det.name] = boxes
    return found


@dataclass
class _Job:
    settings: AnonSettings
    detectors: list[tuple[Detector, float]]
    masks: MaskFill
    out_stream: av.VideoStream
    out: av.container.OutputContainer
    width: int
    height: int
    frames: int = 0
    filled: int = 0

    def __post_init__(self) -> None:
        self.found: dict[str, int] = {d.name: 0 for d, _ in self.detectors}

    def write(self, frame: av.VideoFrame, boxes: list[Box]) -> None:
        data = np.asarray(frame.to_ndarray(format="yuv420p"), dtype=np.uint8)
        planes = Planes.of(data, self.width, self.height)
        for box in boxes:
            fill_box(planes, box, self.settings.fill)
        self.masks.apply(planes)
        new = av.VideoFrame.from_ndarray(data, format="yuv420p")
        new.pts = frame.pts
        new.time_base = frame.time_base
        self.filled += len(boxes)
        for packet in self.out_stream.encode(new):
            self.out.mux(packet)
        self.frames += 1

    def flush(
        self,
        pending: list[av.VideoFrame],
        prev: list[Box],
        nxt: list[Box],
        nxt_frame: av.VideoFrame,
    ) -> None:
        """Write the frames between two detection frames, then the second one."""
        g = self.settings.grow
        between = anon_plan.carry(prev, nxt, len(pending) + 1, self.width, self.height, fraction=g)
        for frame, boxes in zip(pending, between, strict=True):
            self.write(frame, boxes)
        grown = [anon_plan.grow(b, g, self.width, self.height) for b in nxt]
        self.write(nxt_frame, anon_plan.merge([b for b in grown if b is not None]))


def _open_output(
    path: Path, src_stream: av.VideoStream, s: AnonSettings
) -> tuple[av.container.OutputContainer, av.VideoStream]:
    # bitexact: no "encoder" string; only our tags go into the container.
    out = av.open(
        str(path),
        mode="w",
        format="mp4",
        options={"movflags": "use_metadata_tags+faststart", "fflags": "+bitexact"},
    )
    rate = src_stream.average_rate or src_stream.guessed_rate or Fraction(25)
    stream = out.add_stream("libx264", rate=rate)
    stream.width = src_stream.codec_context.width
    stream.height = src_stream.codec_context.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = src_stream.time_base
    opts: dict[str, object] = {"preset": s.preset}
    if s.bitrate_kbps:
        stream.bit_rate = s.bitrate_kbps * 1000
    else:
        opts["crf"] = str(s.crf)
    stream.options = opts
    stream.thread_count = s.threads
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    out.metadata.update(s.tags)
    return out, stream


def _first_pass(
    src: Path,
    tmp: Path,
    s: AnonSettings,
    loaded: list[Detector],
    cancel: Cancel,
    progress: Progress | None,
) -> _Job:
    detectors = with_thresholds(s, loaded, verify=False)
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise _Bad("no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = s.threads
        width, height = vs.codec_context.width, vs.codec_context.height
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise _Bad(f"unsupported frame size {width}x{height} (even sizes only)")
        polygons = [anon_plan.mask_to_pixels(p, width, height) for p in s.masks]
        out, ostream = _open_output(tmp, vs, s)
        with out:
            job = _Job(
                s, detectors, MaskFill.build(polygons, width, height), ostream, out, width, height
            )
            pending: list[av.VideoFrame] = []
            prev: list[Box] = []
            last: av.VideoFrame | None = None
            for index, frame in enumerate(inp.decode(vs)):
                if cancel():
                    raise _Cancelled
                if (frame.width, frame.height) != (width, height):
                    raise _Bad(f"the frame size changes mid-stream to {frame.width}x{frame.height}")
                if last is not None:
                    pending.append(last)
                last = frame
                if anon_plan.is_detection_frame(index, s.detect_every):
                    prev = _step(job, pending, prev, frame)
                    pending, last = [], None
                if progress is not None:
                    progress(index + 1)
            if last is not None:  # the last frame is always a detection frame
                _step(job, pending, prev, last)
            for packet in ostream.encode(None):
                out.mux(packet)
    return job


def _step(
    job: _Job, pending: list[av.VideoFrame], prev: list[Box], frame: av.VideoFrame
) -> list[Box]:
    """Detect on ``frame``, then write the frames since the last detection and it."""
    found = _detect(job.detectors, frame, job.settings.detect_width)
    boxes = [b for v in found.values() for b in v]
    for name, v in found.items():
        job.found[name] += len(v)
    job.flush(pending, prev, boxes, frame)
    return boxes


# Verification discounts a detection on what is visibly our fill: the face
# detector also fires on a flat box where a head was (docs/anonymization.md,
# "verified"). Measured on the test clip: real faces 0.33, fills <= 0.03.
DETAIL_STEP = 8  # luma step between neighbouring pixels that counts as detail
MIN_DETAIL = 0.1  # below this share of detailed neighbours, a region holds nothing to see
# CenterFace's boxes for real faces are taller than wide (about 0.8 wide per 1
# high); a box much wider than tall that is not cut by the frame's edge is the
# detector's reaction to a dark box above a collar, not a face (measured:
# 1.6-2.0 on the test clip).
MAX_FACE_ASPECT = 1.4


def _discounted(name: str, luma: npt.NDArray[np.uint8], box: Box) -> bool:
    """Whether a verification detection is not counted as a residual (see above)."""
    if detail(luma, box) < MIN_DETAIL:
        return True
    h, w = luma.shape
    on_edge = box[0] == 0 or box[1] == 0 or box[2] == w or box[3] == h
    wide = (box[2] - box[0]) > MAX_FACE_ASPECT * (box[3] - box[1])
    return name == "faces" and wide and not on_edge


def detail(luma: npt.NDArray[np.uint8], box: Box) -> float:
    """Share of neighbouring pixel pairs in ``box`` that differ by more than DETAIL_STEP."""
    x1, y1, x2, y2 = box
    r = luma[y1:y2, x1:x2].astype(np.int16)
    if r.shape[0] < 2 or r.shape[1] < 2:
        return 0.0
    dx = np.abs(np.diff(r, axis=1)) > DETAIL_STEP
    dy = np.abs(np.diff(r, axis=0)) > DETAIL_STEP
    return float(dx.mean() + dy.mean()) / 2


def verify_file(
    path: Path,
    settings: AnonSettings,
    *,
    cancel: Cancel = lambda: False,
    loaded: list[Detector] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Detections per detector, summed over the frames of ``path``, at the verification
    thresholds (lower than the first pass): residuals, and those discounted because
    they lie on a flat or coarsely pixelated fill or are not face-shaped. Masks are
    not checked: they are written on every frame."""
    if loaded is None:
        loaded = load_detectors(settings)
    detectors = with_thresholds(settings, loaded, verify=True)
    residual = {d.name: 0 for d, _ in detectors}
    discounted = {d.name: 0 for d, _ in detectors}
    with av.open(str(path)) as inp:
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = settings.threads
        for index, frame in enumerate(inp.decode(vs)):
            if cancel():
                raise _Cancelled
            if index % settings.verify_every:
                continue
            found = _detect(detectors, frame, settings.detect_width)
            if not any(found.values()):
                continue
            luma = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
            for name, boxes in found.items():
                for box in boxes:
                    if _discounted(name, luma, box):
                        discounted[name] += 1
                    else:
                        residual[name] += 1
    return residual, discounted


def anonymize_file(
    src: Path,
    dst: Path,
    settings: AnonSettings,
    *,
    cancel: Cancel = lambda: False,
    progress: Progress | None = None,
) -> AnonResult:
    """Write an anonymized, verified copy of ``src`` at ``dst`` (see the module doc)."""
    started = time.monotonic()
    tmp = dst.with_name(f".{dst.name}.partial")
    status, reason = "ok", ""
    job: _Job | None = None
    residuals: dict[str, int] = {}
    discounted: dict[str, int] = {}
    checked = False
    verify_seconds = pass_seconds = 0.0
    try:
        if dst.exists():
            raise _Bad(f"{dst} exists; anonymization never overwrites")
        loaded = load_detectors(settings)
        job = _first_pass(src, tmp, settings, loaded, cancel, progress)
        pass_seconds = time.monotonic() - started
        if job.frames == 0:
            raise _Bad("no frame could be decoded")
        if settings.verify:
            t0 = time.monotonic()
            residuals, discounted = verify_file(tmp, settings, cancel=cancel, loaded=loaded)
            verify_seconds = time.monotonic() - t0
            checked = True
        fsync_file(tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except _Cancelled:
        status, reason = "cancelled", "cancelled"
    except _Bad as exc:
        status, reason = "failed", str(exc)
    except DetectorError as exc:
        status, reason = "failed", f"detector: {exc}"
    except (av.error.FFmpegError, ValueError, RuntimeError, EOFError) as exc:
        status, reason = "failed", f"media: {exc}"
    except OSError as exc:
        status, reason = "failed", f"{exc.strerror or exc} ({exc.filename or dst})"
    finally:
        if status != "ok":
            with contextlib.suppress(OSError):
                tmp.unlink()
    seconds = time.monotonic() - started
    v = anon_plan.verdict(residuals, settings.residual_limit, checked=checked and status == "ok")
    frames = job.frames if job is not None else 0
    return AnonResult(
        status=status,
        reason=reason or v.reason,
        frames=frames,
        width=job.width if job else 0,
        height=job.height if job else 0,
        detections=dict(job.found) if job else {},
        filled_boxes=job.filled if job else 0,
        residuals=residuals,
        discounted=discounted,
        verified=status == "ok" and v.verified,
        seconds=round(seconds, 3),
        pass_fps=round(frames / pass_seconds, 2) if status == "ok" and pass_seconds > 0 else 0.0,
        verify_seconds=round(verify_seconds, 3),
        fps=round(frames / seconds, 2) if seconds > 0 else 0.0,
    )
