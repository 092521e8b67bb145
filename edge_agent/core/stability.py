"""When is a dropped file complete? The quiet-period rule over stat results.

A file is adopted only when its size and mtime have not changed for
``stable_seconds`` *and* no process holds it open for writing (the /proc
probe: ``edge_agent.intake.stability``). Either signal alone is wrong: a
camera uploading over a slow link can pause longer than any sensible quiet
period, and a writer may close and reopen to append.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Observation:
    size: int
    mtime_ns: int
    stable_since: float  # monotonic seconds when this (size, mtime) was first seen
    ident: tuple[int, int] = (0, 0)  # (device, inode): another file under the name restarts


def observe(
    previous: Observation | None,
    size: int,
    mtime_ns: int,
    now: float,
    *,
    ident: tuple[int, int] = (0, 0),
) -> Observation:
    """Fold a new stat result into the running observation of one file."""
    if (
        previous is not None
        and previous.size == size
        and previous.mtime_ns == mtime_ns
        and previous.ident == ident
    ):
        return previous
    return Observation(size=size, mtime_ns=mtime_ns, stable_since=now, ident=ident)


def is_stable(obs: Observation, now: float, stable_seconds: float) -> bool:
    # An empty file is often a writer that created it and has not flushed yet: wait longer.
    quiet = stable_seconds if obs.size else stable_seconds * 4
    return now - obs.stable_since >= quiet
