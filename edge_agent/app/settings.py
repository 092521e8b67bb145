"""The one place the daemon and the CLI turn a loaded config into components' settings.

The IO components (janitor, clock guard, intake, recorder manager, MQTT link)
define their own frozen settings dataclasses and never read a
:class:`~edge_agent.config.config.Config`: a component stays testable with
plain values, and a new config key is wired in one visible place
(docs/design/architecture.md). ``intake_settings`` and the origins live in
:mod:`edge_agent.intake.runtime` because the recorder manager, below this
layer, needs them too; they are re-exported here so callers have one import.
"""

from __future__ import annotations

from datetime import timedelta

from edge_agent.config.config import Config
from edge_agent.intake.runtime import intake_settings
from edge_agent.retention.clockguard import ClockGuardSettings
from edge_agent.retention.janitor import JanitorSettings
from edge_agent.retention.timesync import TimeSyncSources

__all__ = ["clockguard_settings", "intake_settings", "janitor_settings"]


def clockguard_settings(cfg: Config) -> ClockGuardSettings:
    c = cfg.clock
    return ClockGuardSettings(
        release_date=c.release_date,
        max_jump=c.max_jump,
        trust_rtc=c.trust_rtc,
        periods=cfg.retention_periods(),
        sources=TimeSyncSources(
            timesyncd_flag=c.timesync_flag,
            chronyc=c.chronyc or None,
        ),
        alarm_after=timedelta(seconds=c.untrusted_alarm_after_seconds),
        command_tolerance=timedelta(seconds=c.command_tolerance_seconds),
    )


def janitor_settings(cfg: Config) -> JanitorSettings:
    return JanitorSettings(
        storage_root=cfg.storage.root,
        periods=cfg.retention_periods(),
        guard=clockguard_settings(cfg),
        free_space_floor=cfg.free_space_floor(),
        quarantine_dir=cfg.quarantine_dir,
        kernel_flag=cfg.clock.kernel_flag,
    )
