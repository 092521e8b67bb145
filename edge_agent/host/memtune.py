"""Keep a months-long daemon's resident memory from creeping up (glibc only).

glibc's malloc keeps freed memory for reuse, and its mmap threshold grows each
time a large block is freed: after FFmpeg probes a camera (decoders with frame
buffers, freed again) later large blocks land in the heap and stay there. A
gateway cares about steady-state RSS, not the last percent of malloc speed, so
the daemon fixes the thresholds at start and hands free pages back to the
kernel now and then. Elsewhere (musl, macOS) these are no-ops.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.host.libc import has, libc

log = logging.getLogger(__name__)

# From <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Blocks above this come from mmap and go straight back on free (FFmpeg's frame and
# probe buffers, PyAV packets of keyframes); the heap top is returned above it too.
THRESHOLD = 128 * 1024
# Two arenas: the event loop and the worker threads (recorders, to_thread) share
# less than one per thread would hold, and contention is low at a few cameras.
ARENA_MAX = 2


def _glibc() -> Any:
    return libc() if has("malloc_trim") and has("mallopt") else None


def tune() -> bool:
    """Fix malloc's thresholds; call before threads start. False if not glibc."""
    lib = _glibc()
    if not lib:
        return False
    ok = all(
        lib.mallopt(param, value) == 1
        for param, value in (
            (_M_ARENA_MAX, ARENA_MAX),
            (_M_MMAP_THRESHOLD, THRESHOLD),
            (_M_TRIM_THRESHOLD, THRESHOLD),
        )
    )
    if not ok:
        log.debug("mallopt refused a setting; keeping glibc defaults")
    return ok


def trim() -> bool:
    """Return free heap pages to the kernel (blocking, a few ms: run off the loop)."""
    lib = _glibc()
    return bool(lib) and bool(lib.malloc_trim(0))
