"""The one restart delay: for a camera that drops and for a component that fails."""

from __future__ import annotations

__all__ = ["backoff_delay"]


def backoff_delay(attempt: int, base: float, cap: float, rnd: float) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, min(cap, base * 2^(attempt-1))].

    The floor keeps a flapping camera from being hammered; the jitter keeps a
    switch reboot from making every camera reconnect in the same instant.
    """
    top = min(cap, base * 2 ** max(0, attempt - 1))
    low = min(base / 2, top)
    return float(low + (top - low) * rnd)
