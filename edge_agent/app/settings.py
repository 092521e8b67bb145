"""The one place the daemon and the CLI turn a loaded config into components' settings.

The janitor, the clock guard, the intake and the MQTT link define their own
frozen settings dataclasses and never read a
:class:`~edge_agent.config.config.Config`: a component stays testable with
plain values, and a new config key is wired in one visible place
(docs/design/architecture.md). ``intake_settings`` and the origins live in
:mod:`edge_agent.intake.runtime` because the recorder manager, below this
layer, needs them too; they are re-exported here so callers have one import.
The recorder manager and the live view's source list still take the config
itself; their conversions belong here next.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.config.config import Config, ConfigError
from edge_agent.core.commands import TrustedKey, load_public_key
from edge_agent.intake.runtime import intake_settings
from edge_agent.retention.clockguard import ClockGuardSettings
from edge_agent.retention.janitor import JanitorSettings
from edge_agent.retention.timesync import TimeSyncSources

if TYPE_CHECKING:
    # Imported where used: a CLI command that needs only the janitor's settings
    # does not load paho or the telemetry gatherer.
    from edge_agent.comms.mqtt import MqttSettings
    from edge_agent.comms.telemetry import Gatherer
    from edge_agent.liveview.liveview import SourceInfo
    from edge_agent.recording.recorder_manager import ManagerSettings, SourcePlan
    from edge_agent.store.catalog import Catalog

__all__ = [
    "check_keys",
    "clockguard_settings",
    "intake_settings",
    "janitor_settings",
    "load_trusted_keys",
    "make_gatherer",
    "mqtt_settings",
    "source_plans",
    "view_sources",
]


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


def mqtt_settings(cfg: Config) -> MqttSettings:
    """The MQTT link's settings; the password is read from its file here."""
    from edge_agent.comms.mqtt import MqttSettings

    m = cfg.mqtt
    if m is None:
        raise ValueError("mqtt: no [mqtt] section (add one with url = ...)")
    password = None
    if m.password_file is not None:
        try:
            password = m.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"mqtt.password_file: cannot read {m.password_file} ({exc.strerror}; "
                "check the path and permissions)"
            ) from None
    return MqttSettings(
        host=m.host,
        port=m.port,
        client_id=f"edge-agent-{cfg.device.id}",
        protocol=m.protocol,
        keepalive=m.keepalive,
        tls=m.tls,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
        username=m.username,
        password=password,
    )


def load_trusted_keys(paths: tuple[Path, ...]) -> dict[str, TrustedKey]:
    """The command signers' keys; a key that cannot be read is a config error (exit 2)."""
    keys: dict[str, TrustedKey] = {}
    for i, path in enumerate(paths):
        try:
            key = load_public_key(path.read_bytes(), name=path.stem)
        except (OSError, ValueError) as exc:
            problem = (
                f"commands.trusted_keys[{i}]: cannot use {path} ({exc}; give an Ed25519 "
                "public key PEM made by `edge-agent keys generate`)"
            )
            raise ConfigError([problem]) from None
        keys[key.id] = key
    return keys


def make_gatherer(cfg: Config, catalog: Catalog) -> Gatherer:
    """The telemetry gatherer, for the daemon and for ``edge-agent status``."""
    from edge_agent.comms.telemetry import Gatherer

    return Gatherer(
        catalog=catalog,
        device_id=cfg.device.id,
        version=__version__,
        paths=[cfg.storage.root, cfg.storage.catalog.parent],
        sensor=cfg.profile.temperature_sensor,
        longer_than_notice=tuple(cfg.longer_than_notice()),
        free_floor=cfg.free_space_floor_bytes,
    )


def check_keys(cfg: Config) -> None:
    load_trusted_keys(cfg.commands.trusted_keys)  # raises ConfigError


def source_plans(cfg: Config, ms: ManagerSettings | None = None) -> list[SourcePlan]:
    """Each configured source as the recorder manager runs it (``ms``: its timeouts)."""
    from edge_agent.core.policy import audio_decision
    from edge_agent.intake.runtime import origin_for_source
    from edge_agent.recording.mask import MaskSettings
    from edge_agent.recording.recorder import RecorderSettings
    from edge_agent.recording.recorder_manager import ManagerSettings, SourcePlan

    ms = ms or ManagerSettings()
    out = []
    for src in cfg.sources:
        origin = origin_for_source(cfg, src)
        keep = audio_decision(src.audio, origin.audio_room, origin.signage).keep
        rs = RecorderSettings(
            source_id=src.id,
            url=src.url,
            redacted_url=src.redacted_url,
            origin=origin,
            device_id=cfg.device.id,
            segment_seconds=float(cfg.segment_seconds_for(src)),
            keep_audio=keep,
            rtsp_transport=src.rtsp_transport,
            open_timeout=ms.open_timeout,
            stall_seconds=ms.stall_seconds,
            max_drift=ms.max_drift,
            mask=MaskSettings(
                src.privacy_masks,
                preset=cfg.profile.mask_preset,
                bitrate=cfg.profile.mask_bitrate_kbps * 1000,
            )
            if src.mask_at_recording
            else None,
        )
        out.append(SourcePlan(rs, src.priority))
    return out


def view_sources(cfg: Config) -> list[SourceInfo]:
    """Each configured source as the live view needs to know it."""
    from edge_agent.liveview.liveview import SourceInfo

    out = []
    for src in cfg.sources:
        loc = cfg.location(src.location)
        out.append(
            SourceInfo(
                id=src.id,
                location=loc.id,
                purpose=str(src.purpose),
                site=str(loc.kind),
                audio_room=loc.audio_room,
                signage=loc.signage,
                audio=src.audio,
            )
        )
    return out
