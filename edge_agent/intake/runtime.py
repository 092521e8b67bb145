"""Turn a loaded :class:`~edge_agent.config.config.Config` into the plain settings IO modules take.

Kept apart from ``config.py`` so that the config stays a description and the
IO modules never read config objects directly (they get dataclasses).
"""

from __future__ import annotations

import grp
from datetime import timedelta

from edge_agent.config.config import Config, Source, Watch
from edge_agent.core.model import Purpose
from edge_agent.intake.intake import IntakeSettings, Origin


def reader_gid(cfg: Config) -> int | None:
    name = cfg.storage.reader_group
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(
            f"storage.reader_group: group {name!r} does not exist (create it or remove the key)"
        ) from None


def intake_settings(cfg: Config) -> IntakeSettings:
    policy = cfg.fsync_policy()
    return IntakeSettings(
        device_id=cfg.device.id,
        storage_root=cfg.storage.root,
        quarantine_dir=cfg.quarantine_dir,
        periods=cfg.retention_periods(),
        start_floor=cfg.clock.start_time_floor,
        max_future=timedelta(seconds=cfg.clock.max_future_seconds),
        # Deletion, adoption and the catalog always sync; "batched" is for segments only.
        fsync=True,
        reader_gid=reader_gid(cfg),
        segment_sync_seconds=policy.batch_seconds if policy.mode == "batched" else None,
    )


def origin_for(
    cfg: Config,
    location_id: str,
    purpose: Purpose,
    *,
    anonymized: bool = False,
    anonymized_reason: str | None = None,
    source_id: str | None = None,
    wants_audio: bool = True,
    name_timezone: str | None = None,
) -> Origin:
    loc = cfg.location(location_id)
    return Origin(
        location=loc.id,
        site=loc.kind,
        audio_room=loc.audio_room,
        signage=loc.signage,
        purpose=purpose,
        anonymized=anonymized,
        anonymized_reason=anonymized_reason,
        source_id=source_id,
        wants_audio=wants_audio,
        name_timezone=name_timezone,
    )


def origin_for_watch(cfg: Config, watch: Watch) -> Origin:
    return origin_for(
        cfg,
        watch.location,
        watch.purpose,
        anonymized=watch.anonymized,
        anonymized_reason=watch.anonymized_reason,
        name_timezone=watch.name_timezone,
    )


def origin_for_source(cfg: Config, source: Source) -> Origin:
    return origin_for(
        cfg,
        source.location,
        source.purpose,
        anonymized=source.anonymized,
        anonymized_reason=source.anonymized_reason,
        source_id=source.id,
        wants_audio=source.audio,
        name_timezone=source.name_timezone,
    )
