"""Preflight checks for an installer (``edge-agent doctor``).

Each check returns one :class:`Check` line: OK, WARN or FAIL, what was seen,
and for anything not OK the fix. The checks touch the real things the agent
will touch (a probe file on the storage, the catalog, a real MQTT CONNECT, a
TCP connection and an RTSP ``OPTIONS`` to each camera) with short timeouts,
and change nothing except opening the catalog (which, like the agent, writes
the disk marker when it is missing and the catalog is empty).

Checks that cannot know (no ``timedatectl`` on a container) say so as WARN
rather than guessing OK.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edge_agent.app.doctor.clock import check_clock, check_rtc_or_wait_sync
from edge_agent.app.doctor.model import DEFAULT_TIMEOUT, Check, Level, fail, failed, ok, warn
from edge_agent.app.doctor.network import check_broker, check_source, mqtt_connect, rtsp_options
from edge_agent.app.doctor.policy import check_audio_rooms, check_signage, check_watches
from edge_agent.app.doctor.storage import (
    check_catalog,
    check_free_space,
    check_location_drift,
    check_storage_mounted,
    check_storage_writable,
    mount_point,
)
from edge_agent.config.config import ConfigError, load_config, redact_url
from edge_agent.config.name_clock import check_watch_names
from edge_agent.config.storage_checks import mount_problem

# -- all together ---------------------------------------------------------------------------


def run_checks(
    config_path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    now: datetime | None = None,
    fstab: Path = Path("/etc/fstab"),
) -> list[Check]:
    """Every check for the config at ``config_path``, in the order an installer fixes them."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        # Each problem line already ends with its fix.
        return [fail("config", line, "") for line in exc.problems]
    now = now or datetime.now(UTC)
    checks = [ok("config", f"{config_path} is valid (device {cfg.device.id})")]
    checks += [warn("config", line, "") for line in cfg.warnings()]
    checks.append(check_storage_mounted(cfg.storage.root, fstab))
    if (
        lost := mount_problem(
            cfg.storage.root, external=cfg.profile.external_storage, profile=cfg.profile.name
        )
    ) is not None:
        checks.append(fail("storage disk", *lost))
    if cfg.storage.root.is_dir():
        checks.append(check_storage_writable(cfg.storage.root))
        checks.append(check_free_space(cfg))
    checks += check_catalog(cfg, now)
    checks += check_location_drift(cfg)
    checks.append(check_clock(cfg, now))
    checks.append(check_rtc_or_wait_sync(cfg))
    checks.append(check_broker(cfg, timeout))
    checks += [check_source(src, timeout) for src in cfg.sources]
    checks += check_watches(cfg)
    checks += [warn("watch names", d, fix) for d, fix in check_watch_names(cfg)]
    checks += check_signage(cfg)
    checks.append(check_audio_rooms(cfg))
    return checks


__all__ = [
    "DEFAULT_TIMEOUT",
    "Check",
    "Level",
    "check_audio_rooms",
    "check_broker",
    "check_catalog",
    "check_clock",
    "check_free_space",
    "check_location_drift",
    "check_rtc_or_wait_sync",
    "check_signage",
    "check_source",
    "check_storage_mounted",
    "check_storage_writable",
    "failed",
    "mount_point",
    "mqtt_connect",
    "redact_url",
    "rtsp_options",
    "run_checks",
]
