"""Write a first config from a hardware profile and a few facts (``edge-agent provision``).

The flags use compact specs so that an installer script fits on one line:

- location ``id:kind[:audio][:signage]`` — ``gate:premises:signage``,
  ``lab-1:premises:audio:signage``. Signage is opt-in, like in the config: the
  installer says the signs are up.
- source ``id:url:location:purpose[:audio]`` — the url may hold colons, so the
  fields after it are read from the right.
- watch ``path:location:purpose`` — read from the right too.

The document is validated with the same code as ``config check`` before
anything is written, and rendered as commented TOML (no TOML writer is a
dependency; the values we write are strings, booleans and integers).

The live-view token goes into a ``token_file`` beside the config, never
inline, so the config can be shown or copied without the secret. Both files
are written ``0640`` with the group of the folder they are in: when root
provisions into ``/etc/edge-agent`` (``root:edge-agent 0750``), the agent's
user can read them and nobody else can. ``0600`` would lock the agent out.
An existing token file is kept, so re-provisioning does not log installers out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config.config import Config, ConfigError, validate_config
from edge_agent.config.device_key import ensure_device_key
from edge_agent.core.model import Purpose, Site
from edge_agent.host.fsutil import atomic_write_bytes

DEFAULT_STORAGE_ROOT = Path("/var/lib/edge-agent/recordings")
# The state directory the unit always makes writable, whatever disk holds the recordings.
DEFAULT_CATALOG = Path("/var/lib/edge-agent/catalog.db")
TOKEN_FILE_NAME = "liveview.token"
# Loopback: the live view has no TLS, so an installer reaches it through an SSH
# tunnel (ssh -L 8088:127.0.0.1:8088 gateway) rather than over the LAN in clear.
DEFAULT_LIVEVIEW_LISTEN = "127.0.0.1:8088"
TOKEN_BYTES = 24
FILE_MODE = 0o640

_PURPOSES = ", ".join(p.value for p in Purpose)
_SITES = ", ".join(s.value for s in Site)


class ProvisionError(Exception):
    """Bad provisioning input; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class LocationSpec:
    id: str
    kind: str
    audio_room: bool = False
    signage: bool = False


@dataclass(frozen=True)
class SourceSpec:
    id: str
    url: str
    location: str
    purpose: str
    audio: bool = False


@dataclass(frozen=True)
class WatchSpec:
    path: str
    location: str
    purpose: str


@dataclass(frozen=True)
class ProvisionRequest:
    profile: str
    device_id: str
    out: Path
    broker: str | None = None
    locations: tuple[LocationSpec, ...] = ()
    sources: tuple[SourceSpec, ...] = ()
    watches: tuple[WatchSpec, ...] = ()
    storage_root: Path = DEFAULT_STORAGE_ROOT
    catalog: Path = DEFAULT_CATALOG
    liveview_listen: str | None = None
    topic_prefix: str = "edge"


@dataclass(frozen=True)
class ProvisionResult:
    config: Config
    path: Path
    token_file: Path | None
    token_created: bool
    warnings: list[str]
    # The export signing key in the state folder (docs/export.md); None when
    # that folder does not exist yet: the first export makes the key then.
    signing_key: Path | None = None
    signing_key_created: bool = False


# -- spec parsing ---------------------------------------------------------------


def parse_location(spec: str) -> LocationSpec:
    parts = spec.split(":")
    example = "write id:kind[:audio][:signage], e.g. gate:premises:signage"
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"--location {spec!r}: needs an id and a kind ({example})")
    loc_id, kind, flags = parts[0], parts[1], parts[2:]
    if kind not in {s.value for s in Site}:
        raise ValueError(f"--location {spec!r}: kind {kind!r} is not one of {_SITES} ({example})")
    unknown = [f for f in flags if f not in ("audio", "signage")]
    if unknown:
        raise ValueError(
            f"--location {spec!r}: unknown flag {unknown[0]!r} (use audio and/or signage; "
            f"{example})"
        )
    return LocationSpec(loc_id, kind, audio_room="audio" in flags, signage="signage" in flags)


def parse_source(spec: str) -> SourceSpec:
    example = (
        "write id:url:location:purpose[:audio], e.g. cam-1:rtsp://192.0.2.10/stream:gate:security"
    )
    parts = spec.split(":")
    audio = False
    if parts and parts[-1] == "audio":
        audio = True
        parts = parts[:-1]
    if len(parts) < 4:
        raise ValueError(f"--source {spec!r}: too few fields ({example})")
    src_id, purpose, location = parts[0], parts[-1], parts[-2]
    url = ":".join(parts[1:-2])
    if not src_id or not url or not location:
        raise ValueError(f"--source {spec!r}: empty id, url or location ({example})")
    if purpose not in {p.value for p in Purpose}:
        raise ValueError(
            f"--source {spec!r}: purpose {purpose!r} is not one of {_PURPOSES} ({example})"
        )
    return SourceSpec(src_id, url, location, purpose, audio)


def parse_watch(spec: str) -> WatchSpec:
    example = "write path:location:purpose, e.g. /srv/drop/gate:gate:security"
    parts = spec.split(":")
    if len(parts) < 3:
        raise ValueError(f"--watch {spec!r}: too few fields ({example})")
    path, location, purpose = ":".join(parts[:-2]), parts[-2], parts[-1]
    if not path or not location:
        raise ValueError(f"--watch {spec!r}: empty path or location ({example})")
    if purpose not in {p.value for p in Purpose}:
        raise ValueError(
            f"--watch {spec!r}: purpose {purpose!r} is not one of {_PURPOSES} ({example})"
        )
    return WatchSpec(path, location, purpose)


# -- the document ---------------------------------------------------------------


def build_document(req: ProvisionRequest) -> dict[str, Any]:
    """The config as the TOML parser would return it."""
    doc: dict[str, Any] = {
        "device": {"id": req.device_id, "hw_profile": req.profile},
        "storage": {"root": str(req.storage_root), "catalog": str(req.catalog)},
        "locations": [
            {"id": loc.id, "kind": loc.kind, "audio_room": loc.audio_room, "signage": loc.signage}
            for loc in req.locations
        ],
        "sources": [
            {
                "id": s.id,
                "url": s.url,
                "location": s.location,
                "purpose": s.purpose,
                "audio": s.audio,
            }
            for s in req.sources
        ],
        "watch": [
            {"path": w.path, "location": w.location, "purpose": w.purpose} for w in req.watches
        ],
    }
    if req.broker is not None:
        doc["mqtt"] = {"url": req.broker, "topic_prefix": req.topic_prefix}
    if req.liveview_listen is not None:
        doc["liveview"] = {"listen": req.liveview_listen, "token_file": TOKEN_FILE_NAME}
    return doc


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a valid TOML basic string: same quotes and escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _table(lines: list[str], header: str, values: dict[str, Any]) -> None:
    lines.append(header)
    lines.extend(f"{key} = {_value(v)}" for key, v in values.items())
    lines.append("")


def render_toml(doc: dict[str, Any], *, comment: str = "") -> str:
    lines = [
        "# edge-agent configuration written by `edge-agent provision`.",
        "# Check it with: edge-agent config check --config <this file>",
    ]
    if comment:
        lines.append(f"# {comment}")
    lines.append("")
    _table(lines, "[device]", doc["device"])
    _table(lines, "[storage]", doc["storage"])
    for loc in doc["locations"]:
        _table(lines, "[[locations]]", loc)
    for src in doc["sources"]:
        _table(lines, "[[sources]]", src)
    for watch in doc["watch"]:
        _table(lines, "[[watch]]", watch)
    if "mqtt" in doc:
        _table(lines, "[mqtt]", doc["mqtt"])
    if "liveview" in doc:
        lines.append("# The bearer token is in token_file (mode 0640), not in this file.")
        _table(lines, "[liveview]", doc["liveview"])
    return "\n".join(lines).rstrip("\n") + "\n"


# -- writing -------------------------------------------------------------------------


def _folder_gid(folder: Path) -> int:
    return folder.stat().st_gid


def _write_private(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=FILE_MODE)
    gid = _folder_gid(path.parent)
    if path.stat().st_gid != gid:
        # Not a member of the folder's group: the file keeps ours.
        with contextlib.suppress(PermissionError):
            os.chown(path, -1, gid)


def provision(req: ProvisionRequest, *, force: bool = False) -> ProvisionResult:
    """Validate, then write the config (and a token file when live view is on).

    Raises ProvisionError for an existing file without ``force``, and
    ConfigError (one line per problem) when the result would not be valid.
    """
    out = Path(os.path.abspath(req.out))
    if out.exists() and not force:
        raise ProvisionError(
            [f"{out}: already exists (pass --force to replace it, or choose another --out)"]
        )
    if not out.parent.is_dir():
        raise ProvisionError([f"{out.parent}: folder does not exist (create it first)"])
    doc = build_document(req)
    # Files are checked after writing: the token file does not exist yet.
    cfg = validate_config(doc, out.parent, check_files=False, path=out)
    token_file: Path | None = None
    created = False
    if cfg.liveview is not None and cfg.liveview.token_file is not None:
        token_file = cfg.liveview.token_file
        if not (token_file.is_file() and token_file.read_text(encoding="utf-8").strip()):
            _write_private(token_file, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode())
            created = True
    text = render_toml(doc)
    _write_private(out, text.encode("utf-8"))
    cfg = validate_config(doc, out.parent, check_files=True, path=out)
    signing_key, key_created = None, False
    state_dir = Path(cfg.storage.catalog).parent
    if state_dir.is_dir():
        signing_key, key_created = ensure_device_key(state_dir)
    return ProvisionResult(
        config=cfg,
        path=out,
        token_file=token_file,
        token_created=created,
        warnings=cfg.warnings(),
        signing_key=signing_key,
        signing_key_created=key_created,
    )


__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_STORAGE_ROOT",
    "TOKEN_FILE_NAME",
    "ConfigError",
    "LocationSpec",
    "ProvisionError",
    "ProvisionRequest",
    "ProvisionResult",
    "SourceSpec",
    "WatchSpec",
    "build_document",
    "parse_location",
    "parse_source",
    "parse_watch",
    "provision",
    "render_toml",
]
