"""Doctor checks of the privacy policy as configured: signage, audio rooms, watched folders."""

from __future__ import annotations

import os

from edge_agent.app.doctor.model import Check, fail, ok, warn
from edge_agent.config.config import Config

__all__ = [
    "check_audio_rooms",
    "check_signage",
    "check_watches",
]

# -- policy checks ------------------------------------------------------------------------


def check_signage(cfg: Config) -> list[Check]:
    used: dict[str, list[str]] = {}
    for src in cfg.sources:
        used.setdefault(src.location, []).append(f"source {src.id}")
    for w in cfg.watch:
        used.setdefault(w.location, []).append(f"watch {w.path}")
    out = []
    for loc in cfg.locations:
        if loc.id not in used:
            continue
        users = ", ".join(used[loc.id])
        if loc.signage:
            out.append(ok(f"signage {loc.id}", f"signs confirmed ({users})"))
        else:
            out.append(
                fail(
                    f"signage {loc.id}",
                    f"signage = false but recorded by {users}: they will not record",
                    f"put up recording signs at {loc.id}, then set signage = true",
                )
            )
    return out


def check_audio_rooms(cfg: Config) -> Check:
    rooms = [loc.id for loc in cfg.locations if loc.audio_room]
    wanting = [s.id for s in cfg.sources if s.audio]
    if rooms:
        return ok("audio rooms", f"declared: {', '.join(rooms)}")
    if wanting:
        return warn(
            "audio rooms",
            f"none declared, but {', '.join(wanting)} asks for audio: it will be dropped",
            "set audio_room = true on a closed-off, signed room, or audio = false on the source",
        )
    return ok("audio rooms", "none declared and no source wants audio: no audio is kept")


def check_watches(cfg: Config) -> list[Check]:
    out = []
    for w in cfg.watch:
        name = f"watch {w.path}"
        if not w.path.is_dir():
            out.append(fail(name, "folder does not exist", f"create it: mkdir -p {w.path}"))
        elif not os.access(w.path, os.R_OK | os.W_OK | os.X_OK):
            out.append(
                fail(
                    name,
                    "not readable and writable (adopted files are removed from it)",
                    f"give the agent's user access: chown edge-agent: {w.path}",
                )
            )
        else:
            out.append(ok(name, "folder exists and is writable"))
    return out
