"""In-band H.264/H.265 parameter sets: notice a camera changing resolution mid-stream.

A camera whose settings are edited keeps its RTSP session and simply sends
new SPS/PPS in front of the next keyframe. A file whose header promises the
old parameters while its packets carry new ones plays badly or not at all,
so the recorder compares the parameter sets of every keyframe with those of
the open segment and starts a new segment when they differ (with the new
sets as its header). Pure: bytes in, values out. Annex-B input only (RTSP,
MPEG-TS); MP4-style length-prefixed packets never reach this module.
"""

from __future__ import annotations

from dataclasses import dataclass

_H264_PARAMS = {7, 8}  # SPS, PPS
_H264_VCL = {1, 2, 3, 4, 5}
_HEVC_PARAMS = {32, 33, 34}  # VPS, SPS, PPS
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_SEARCH = 4096  # parameter sets sit at the front of a keyframe
_MAX_SIDE = 16384


@dataclass(frozen=True)
class ParamSets:
    codec: str
    nals: tuple[bytes, ...]  # each without its start code, in stream order, deduplicated

    @property
    def annexb(self) -> bytes:
        return b"".join(b"\x00\x00\x00\x01" + n for n in self.nals)

    def dimensions(self) -> tuple[int, int] | None:
        if self.codec != "h264":
            return None
        for nal in self.nals:
            if nal and nal[0] & 0x1F == 7:
                try:
                    w, h = h264_sps_dimensions(nal)
                except (IndexError, ValueError):
                    return None
                # A header claims what the camera says, within reason.
                return (w, h) if w <= _MAX_SIDE and h <= _MAX_SIDE else None
        return None


def changed(old: ParamSets | None, new: ParamSets | None) -> bool:
    """Whether ``new`` (from a keyframe) replaces a parameter set of ``old``.

    Cameras do not repeat every set at every keyframe (PPS only, or SPS every
    few seconds): a set that is missing is no change, only a set of a kind
    both carry whose bytes differ is.
    """
    if old is None or new is None or old.codec != new.codec:
        return False
    kinds: dict[int, set[bytes]] = {}
    for nal in old.nals:
        kinds.setdefault(_nal_type(old.codec, nal[0]), set()).add(nal)
    for nal in new.nals:
        known = kinds.get(_nal_type(new.codec, nal[0]))
        if known is not None and nal not in known:
            return True
    return False


def merged(old: ParamSets | None, new: ParamSets) -> ParamSets:
    """``new`` completed with the sets of kinds it does not repeat from ``old``."""
    if old is None or old.codec != new.codec:
        return new
    have = {_nal_type(new.codec, n[0]) for n in new.nals}
    kept = tuple(n for n in old.nals if _nal_type(old.codec, n[0]) not in have)
    return ParamSets(new.codec, kept + new.nals)


def _nal_type(codec: str, first: int) -> int:
    return (first >> 1) & 0x3F if codec == "hevc" else first & 0x1F


def annexb_nals(data: bytes, limit: int | None = None) -> list[bytes]:
    """NAL units of Annex-B ``data`` (start codes removed), up to ``limit`` bytes scanned."""
    end = len(data) if limit is None else min(len(data), limit)
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01", 0, end)
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3, end)
    out: list[bytes] = []
    for k, s in enumerate(starts):
        stop = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:stop]
        out.append(nal.rstrip(b"\x00") if k + 1 < len(starts) else nal)
    return out


def parameter_sets(codec: str, data: bytes) -> ParamSets | None:
    """The parameter sets at the front of a keyframe (or in extradata), None if none."""
    if codec not in ("h264", "hevc"):
        return None
    wanted = _HEVC_PARAMS if codec == "hevc" else _H264_PARAMS
    found: list[bytes] = []
    for nal in annexb_nals(data, _SEARCH):
        if not nal:
            continue
        kind = _nal_type(codec, nal[0])
        if kind in wanted:
            if nal not in found:
                found.append(nal)
        elif codec == "h264" and kind in _H264_VCL:
            break  # slice data follows: no parameter set after it
        elif codec == "hevc" and kind < 32:
            break
    return ParamSets(codec, tuple(found)) if found else None


def is_annexb(extradata: bytes) -> bool:
    """Annex-B (or absent) extradata: packets carry start codes, not length prefixes."""
    return not extradata or extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


# -- H.264 SPS: the picture size ------------------------------------------------------------


class _Bits:
    def __init__(self, rbsp: bytes) -> None:
        self.data = rbsp
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """(width, height) in pixels from an H.264 SPS NAL unit (header byte included)."""
    b = _Bits(_rbsp(sps[1:]))
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    b.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        b.ue()
        b.ue()
        b.u(1)
        if b.u(1):  # scaling matrices
            for i in range(12 if chroma == 3 else 8):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc = b.ue()
    if poc == 0:
        b.ue()
    elif poc == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)  # direct_8x8_inference
    crop = (0, 0, 0, 0)
    if b.u(1):
        crop = (b.ue(), b.ue(), b.ue(), b.ue())
    sub_w = 2 if chroma in (1, 2) else 1
    sub_h = 2 if chroma == 1 else 1
    unit_x = sub_w if chroma else 1
    unit_y = (sub_h if chroma else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise ValueError("SPS gives no picture")
    return width, height
