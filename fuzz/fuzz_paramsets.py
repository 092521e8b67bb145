"""Keyframe bytes from a camera fed to the parameter-set reader: it may find
nothing (None) and a bad SPS may raise IndexError/ValueError inside
``h264_sps_dimensions`` only; ``ParamSets.dimensions`` never raises."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from edge_agent.core.paramsets import annexb_nals, h264_sps_dimensions, parameter_sets


def test_one(data: bytes) -> None:
    for codec in ("h264", "hevc"):
        found = parameter_sets(codec, data)
        if found is not None:
            assert found.nals and found.annexb.startswith(b"\x00\x00\x00\x01")
            size = found.dimensions()
            assert size is None or (0 < size[0] <= 16384 and 0 < size[1] <= 16384)
    annexb_nals(data, 4096)
    try:
        w, h = h264_sps_dimensions(b"\x67" + data)
    except (IndexError, ValueError):
        return
    assert w > 0 and h > 0


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
