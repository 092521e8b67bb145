"""The C library, loaded once, for the few calls Python does not wrap.

``ctypes.util.find_library`` runs ``ldconfig``/``gcc`` in subprocesses on every
call; a daemon that checks the clock every few seconds must not do that. The
process's own global symbols (``dlopen(NULL)``) already contain libc.
"""

from __future__ import annotations

import ctypes
from typing import Any

_lib: Any = None


def libc() -> Any:
    """A handle with ``use_errno``; raises OSError where there is none."""
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL(None, use_errno=True)
    return _lib


def has(symbol: str) -> bool:
    try:
        return hasattr(libc(), symbol)
    except OSError:
        return False
