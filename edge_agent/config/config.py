"""The agent's TOML configuration (docs/operator-guide.md): models, loading and error lines.

Every section is a frozen pydantic model with ``extra="forbid"``: a typo is an
error, not a silently ignored key. Loading happens in three steps — TOML
syntax, structure (pydantic), then cross-checks that need the whole file
(known locations, unique ids, signage, retention against the privacy notice,
the hardware profile) — and every problem becomes one line
``<key path>: <what is wrong, naming the value> (<fix>)``.

Paths in the file are relative to the file's folder. List indexes in key paths
count from 0, like pydantic's and jq's (``sources[1]`` is the second source).

Defaults chosen here, and why:

- ``storage.quarantine`` defaults to ``<root>/../quarantine``: beside the
  recordings on the same filesystem (a rename moves a file there atomically)
  but outside the tree that reconcile scans, so quarantined files are never
  re-adopted.
- ``free_space_floor``, ``fsync`` and ``segment_seconds`` come from the
  hardware profile unless ``[storage]`` / ``[[sources]]`` override them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StrictBool,
    ValidationError,
    model_validator,
)

from edge_agent.config.config_checks import (
    cross_check,
    exposure_warnings,
    format_validation_error,
    secret_file_warnings,
)
from edge_agent.config.fields import (
    MAX_TOKEN_FILE_BYTES,
    RELEASE_DATE,
    START_TIME_FLOOR,
    YEAR_SECONDS,
    ConfigPath,
    DeviceId,
    IceUrl,
    ItemId,
    Listen,
    MqttUrl,
    PeriodField,
    Seconds,
    SourceUrl,
    TimeZoneName,
    TopicPrefix,
    UtcDatetime,
    _protocol_text,
    _split_listen,
)

# Re-exported: callers import the error and the redaction with the config.
from edge_agent.config.fields import ConfigError as ConfigError
from edge_agent.config.fields import redact_url as redact_url
from edge_agent.config.profiles import (
    FsyncMode,
    HwProfile,
    ProfileError,
    SizeField,
    SpaceFloor,
    SpaceFloorField,
    load_profile,
)
from edge_agent.core.anon_plan import check_polygon
from edge_agent.core.model import NOTICE_PERIODS, Period, Purpose, RetentionPeriods, Site
from edge_agent.core.policy import longer_than_notice


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sections --------------------------------------------------------------


class Device(_Section):
    id: DeviceId
    hw_profile: str = Field(min_length=1)
    # Where the device stands, for the fleet dashboard's filter (docs/fleet.md).
    site: str | None = Field(default=None, min_length=1, max_length=64)


class Storage(_Section):
    root: ConfigPath
    catalog: ConfigPath
    quarantine: ConfigPath | None = None
    reader_group: str | None = Field(default=None, min_length=1)
    free_space_floor: SpaceFloorField | None = None
    fsync: FsyncMode | None = None
    fsync_batch_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    write_buffer: SizeField | None = None

    @property
    def quarantine_dir(self) -> Path:
        return self.quarantine or self.root.parent / "quarantine"


class Location(_Section):
    id: ItemId
    kind: Site
    audio_room: StrictBool = False
    # Privacy-safe default: the installer confirms that signs are up.
    signage: StrictBool = False


def _check_mask(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    why = check_polygon(points)
    if why is not None:
        raise ValueError(why)
    return points


MaskPolygon = Annotated[
    tuple[tuple[float, float], ...], Field(max_length=64), AfterValidator(_check_mask)
]


AnonymizedReason = Annotated[str, Field(min_length=8, max_length=500)]


def _check_declared(anonymized: bool, reason: str | None) -> None:
    # `anonymized = true` exempts footage from every retention limit, so it is
    # never a bare switch: a person writes down why (docs/anonymization.md).
    if anonymized and not (reason or "").strip():
        raise ValueError(
            "anonymized = true needs anonymized_reason (why this footage holds no personal "
            "data, e.g. a thermal counting sensor); or let the agent anonymize it ([anonymize])"
        )
    if reason is not None and not anonymized:
        raise ValueError("anonymized_reason is only for anonymized = true")


class Source(_Section):
    id: ItemId
    url: SourceUrl
    location: str
    purpose: Purpose
    audio: StrictBool = False
    segment_seconds: Annotated[int, Field(ge=2, le=3600, strict=True)] | None = None
    # Higher = more important; under disk pressure the lowest stop first.
    priority: Annotated[int, Field(strict=True)] = 0
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    anonymized: StrictBool = False
    name_timezone: TimeZoneName | None = None
    # Areas never to show (a neighbour's windows, a pavement): polygons of
    # [x, y] points in 0..1 of the picture. Always filled in anonymized
    # derivatives; with mask_at_recording the area is never stored at all
    # (docs/anonymization.md).
    privacy_masks: tuple[MaskPolygon, ...] = Field(default=(), max_length=32)
    mask_at_recording: StrictBool = False
    # Footage declared anonymized without the process needs a written reason
    # (docs/anonymization.md, "the old flag").
    anonymized_reason: AnonymizedReason | None = None

    @model_validator(mode="after")
    def _masks_to_apply(self) -> Source:
        if self.mask_at_recording and not self.privacy_masks:
            raise ValueError("mask_at_recording = true needs privacy_masks")
        _check_declared(self.anonymized, self.anonymized_reason)
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    @property
    def redacted_url(self) -> str:
        """The url without a password, for logs and telemetry."""
        return redact_url(self.url)


class Watch(_Section):
    path: ConfigPath
    location: str
    purpose: Purpose
    anonymized: StrictBool = False
    # A file counts as complete after this long without growing.
    stable_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # Poll instead of inotify: network shares do not deliver inotify events.
    poll: StrictBool = False
    poll_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0
    # File names without an offset are local time in this zone (absent: UTC).
    name_timezone: TimeZoneName | None = None
    anonymized_reason: AnonymizedReason | None = None

    @model_validator(mode="after")
    def _reason_for_anonymized(self) -> Watch:
        _check_declared(self.anonymized, self.anonymized_reason)
        return self


class Retention(_Section):
    security: PeriodField = NOTICE_PERIODS.security
    rnd_premises: PeriodField = NOTICE_PERIODS.rnd_premises
    rnd_external: PeriodField = NOTICE_PERIODS.rnd_external
    marketing_premises: PeriodField = NOTICE_PERIODS.marketing_premises
    marketing_external: PeriodField = NOTICE_PERIODS.marketing_external
    anonymized: PeriodField | None = None  # absent = no limit
    allow_longer_than_notice: StrictBool = False
    # Audit entries and tombstones older than this are sealed into archive files
    # next to the catalog (docs/storage.md, accountability period); absent = never.
    accountability_period: PeriodField | None = Period(seconds=31 * 86400)

    def periods(self) -> RetentionPeriods:
        return RetentionPeriods(
            security=self.security,
            rnd_premises=self.rnd_premises,
            rnd_external=self.rnd_external,
            marketing_premises=self.marketing_premises,
            marketing_external=self.marketing_external,
            anonymized=self.anonymized,
        )

    def longer_than_notice(self) -> list[str]:
        """Names of the periods that keep footage longer than the notice allows."""
        return longer_than_notice(self.periods())


class ClockSettings(_Section):
    # Wall clock moving more than this against CLOCK_BOOTTIME makes it untrusted.
    max_jump_seconds: Seconds = 300.0
    release_date: UtcDatetime = RELEASE_DATE
    start_time_floor: UtcDatetime = START_TIME_FLOOR
    max_future_seconds: Annotated[float, Field(ge=0, le=YEAR_SECONDS)] = 300.0
    # Isolated devices with a battery-backed RTC: trust an unsynchronised clock.
    trust_rtc: StrictBool = False
    # Evidence of good time that works under ProtectClock=yes (docs/design/time.md).
    timesync_flag: ConfigPath | None = Path("/run/systemd/timesync/synchronized")
    chronyc: str = "chronyc"  # "" turns chrony off
    # Read the kernel's NTP flag (adjtimex); false where it speaks for another host
    # (containers) or to test as under ProtectClock=yes, which hides it.
    kernel_flag: StrictBool = True
    # A signed command's issued_at within this of the wall clock confirms it.
    command_tolerance_seconds: Annotated[float, Field(gt=0, le=600)] = 120.0
    # Deletion paused this long raises alarm.clock_untrusted (then daily).
    untrusted_alarm_after_seconds: Seconds = 6 * 3600.0

    @property
    def max_jump(self) -> timedelta:
        return timedelta(seconds=self.max_jump_seconds)

    @property
    def max_future(self) -> timedelta:
        return timedelta(seconds=self.max_future_seconds)


class Mqtt(_Section):
    url: MqttUrl
    topic_prefix: TopicPrefix = "edge"
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol_text)] = "5"
    keepalive: Annotated[int, Field(ge=5, le=3600, strict=True)] = 30
    username: str | None = Field(default=None, min_length=1)
    password_file: ConfigPath | None = None
    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    telemetry_interval_seconds: Annotated[float, Field(ge=1, le=86400)] = 60.0
    ha_discovery: StrictBool = False

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


def _check_reply_prefix(value: str) -> str:
    if "+" in value or "#" in value or "\x00" in value or not value.endswith("/"):
        raise ValueError(
            f"{value!r} is not a reply prefix (a topic ending in '/', no '+', '#' or NUL; "
            "e.g. 'edge/gw-1/reply/')"
        )
    return value


class Commands(_Section):
    trusted_keys: tuple[ConfigPath, ...] = ()
    # Limits on the command path (docs/mqtt.md, "Limits").
    max_payload: Annotated[SizeField, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    queue_depth: Annotated[int, Field(ge=1, le=4096, strict=True)] = 64
    workers: Annotated[int, Field(ge=1, le=8, strict=True)] = 2
    # MQTT 5 response topics must start with this; default {topic_prefix}/{device}/reply/.
    reply_prefix: Annotated[str, AfterValidator(_check_reply_prefix)] | None = Field(
        default=None, min_length=2, max_length=200
    )

    def reply_prefix_for(self, topic_root: str) -> str:
        return self.reply_prefix or f"{topic_root}/reply/"


class LiveView(_Section):
    listen: Listen
    token: SecretStr | None = None
    token_file: ConfigPath | None = None
    max_viewers: Annotated[int, Field(ge=1, le=64, strict=True)] = 4
    # The installer's console on the same server and token (docs/console.md).
    console: StrictBool = True
    # Open HTTP connections at once (a page and its viewers use a handful each);
    # more are closed on accept so idle sockets cannot use up file descriptors.
    max_connections: Annotated[int, Field(ge=4, le=1024, strict=True)] = 64
    ice_servers: tuple[IceUrl, ...] = ()

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    def read_token(self) -> str:
        """The bearer token, from the config or its file (surrounding whitespace dropped)."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is None:
            raise ConfigError(["liveview: no token (set liveview.token or liveview.token_file)"])
        # Bounded: a token_file pointing at a huge file must not be read whole.
        with self.token_file.open("rb") as fh:
            raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise ConfigError(
                [
                    f"liveview.token_file: '{self.token_file}' is larger than "
                    f"{MAX_TOKEN_FILE_BYTES} bytes, so it is not a token file (fix the path)"
                ]
            )
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(
                [f"liveview.token_file: '{self.token_file}' is not UTF-8 text (write the token)"]
            ) from None


class Export(_Section):
    # The notice lets marketing use anonymized material; originals only when the
    # company decides so (docs/export.md).
    marketing_originals: StrictBool = False


class Anonymize(_Section):
    """Anonymized derivatives made on the device (docs/anonymization.md)."""

    enabled: StrictBool = False
    # None: only on request (CLI, MQTT command). "catalogued": every matching
    # recording once it is catalogued; "before_deadline": days_before its deadline.
    on: Literal["catalogued", "before_deadline"] | None = None
    days_before: Annotated[int, Field(ge=1, le=3650, strict=True)] = 7
    purposes: tuple[Purpose, ...] = ()  # empty: every purpose
    locations: tuple[str, ...] = ()  # empty: every location
    fill: Literal["solid", "pixelate"] = "solid"
    every: Annotated[int, Field(ge=1, le=25, strict=True)] = 2
    threads: Annotated[int, Field(ge=1, le=16, strict=True)] = 2
    detect_width: Annotated[int, Field(ge=160, le=3840, strict=True)] = 640
    faces: StrictBool = True
    face_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.4
    face_verify_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.3
    # "off", "heuristic" or the path of an ONNX plate model.
    plates: str = "off"
    plate_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.12
    plate_verify_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.1
    residual_limit: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = 0
    # The worker's niceness (0..19): recorders come first.
    nice: Annotated[int, Field(ge=0, le=19, strict=True)] = 15
    max_attempts: Annotated[int, Field(ge=1, le=20, strict=True)] = 3


class Control(_Section):
    """The daemon's local control socket (docs/operator-guide.md, "Status")."""

    # None: ``control.sock`` beside the catalog, a folder the agent's group can read.
    socket: ConfigPath | None = None


@dataclass(frozen=True)
class FsyncPolicy:
    mode: FsyncMode
    batch_seconds: float
    write_buffer: int


class Config(_Section):
    device: Device
    storage: Storage
    locations: tuple[Location, ...] = ()
    sources: tuple[Source, ...] = ()
    watch: tuple[Watch, ...] = ()
    retention: Retention = Retention()
    clock: ClockSettings = ClockSettings()
    mqtt: Mqtt | None = None  # absent = MQTT off
    commands: Commands = Commands()
    liveview: LiveView | None = None  # absent = live view off
    control: Control = Control()
    export: Export = Export()
    anonymize: Anonymize = Anonymize()

    _path: Path | None = PrivateAttr(default=None)
    _profile: HwProfile | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file this config was loaded from, if any."""
        return self._path

    @property
    def profile(self) -> HwProfile:
        if self._profile is None:
            base = self._path.parent if self._path else None
            self._profile = load_profile(self.device.hw_profile, base)
        return self._profile

    def location(self, location_id: str) -> Location:
        for loc in self.locations:
            if loc.id == location_id:
                return loc
        raise KeyError(f"unknown location {location_id!r} (known: {self._known_locations()})")

    def source(self, source_id: str) -> Source:
        for src in self.sources:
            if src.id == source_id:
                return src
        known = ", ".join(sorted(s.id for s in self.sources)) or "none"
        raise KeyError(f"unknown source {source_id!r} (known: {known})")

    def free_space_floor(self) -> SpaceFloor:
        return self.storage.free_space_floor or self.profile.free_space_floor

    def free_space_floor_bytes(self, total_bytes: int) -> int:
        return self.free_space_floor().bytes_for(total_bytes)

    def fsync_policy(self) -> FsyncPolicy:
        s, p = self.storage, self.profile
        return FsyncPolicy(
            mode=s.fsync or p.fsync,
            batch_seconds=s.fsync_batch_seconds or p.fsync_batch_seconds,
            write_buffer=s.write_buffer if s.write_buffer is not None else p.write_buffer,
        )

    def segment_seconds_for(self, source: Source | str) -> int:
        src = self.source(source) if isinstance(source, str) else source
        return src.segment_seconds or self.profile.segment_seconds

    def retention_periods(self) -> RetentionPeriods:
        return self.retention.periods()

    def longer_than_notice(self) -> list[str]:
        return self.retention.longer_than_notice()

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.storage.catalog.parent / "control.sock"

    @property
    def quarantine_dir(self) -> Path:
        return self.storage.quarantine_dir

    @property
    def topic_root(self) -> str | None:
        """``{topic_prefix}/{device.id}``, or None when MQTT is off."""
        return f"{self.mqtt.topic_prefix}/{self.device.id}" if self.mqtt else None

    def warnings(self) -> list[str]:
        """Legal but probably unintended settings, one line each."""
        out: list[str] = []
        rooms = {loc.id: loc for loc in self.locations}
        for i, loc in enumerate(self.locations):
            if not loc.signage:
                out.append(
                    f"locations[{i}].signage: location {loc.id!r} has no signs, its sources will "
                    "not record (put up signs, then set signage = true)"
                )
        for i, src in enumerate(self.sources):
            room = rooms.get(src.location)
            if src.audio and room is not None and not room.audio_room:
                out.append(
                    f"sources[{i}].audio: {src.id!r} wants audio but {room.id!r} is not an audio "
                    "room, audio will not be recorded (set audio = false to silence this)"
                )
        if len(self.sources) > self.profile.max_streams:
            out.append(
                f"sources: {len(self.sources)} sources, profile {self.profile.name!r} is rated "
                f"for {self.profile.max_streams} (use fewer sources or a bigger device)"
            )
        if not self.sources and not self.watch:
            out.append("sources: no [[sources]] and no [[watch]] (nothing will be recorded)")
        if self.longer_than_notice():
            names = ", ".join(self.longer_than_notice())
            out.append(
                f"retention: {names} longer than the privacy notice (allowed by "
                "allow_longer_than_notice; reported in telemetry)"
            )
        out += exposure_warnings(self)
        out += secret_file_warnings(self)
        return out

    def _known_locations(self) -> str:
        return ", ".join(sorted(loc.id for loc in self.locations)) or "none"


# -- loading ----------------------------------------------------------------


def _toml_error_line(path: str, exc: tomllib.TOMLDecodeError) -> str:
    msg = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        reason = msg[: m.start()].strip()
        return f"{path}:{m.group(1)}:{m.group(2)}: invalid TOML: {reason} (fix the syntax there)"
    return f"{path}: invalid TOML: {msg} (fix the syntax)"


def parse_config(
    text: str,
    base_dir: Path,
    *,
    name: str = "<config>",
    check_files: bool = True,
    path: Path | None = None,
) -> Config:
    """Validate config text; relative paths resolve against ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_error_line(name, exc)]) from None
    return validate_config(data, base_dir, check_files=check_files, path=path)


def load_config(path: Path, *, check_files: bool = True) -> Config:
    """Read and validate a config file. Raises ConfigError with one line per problem.

    ``check_files`` also requires the files the config names (keys, secrets,
    certificates) to exist; turn it off to check a config for another machine.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                f"{path}: config file not found (pass --config, or write one with "
                "'edge-agent provision')"
            ]
        ) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder (pass the config file itself)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {exc.start}; save the file as UTF-8)"]
        ) from None
    absolute = Path(os.path.abspath(path))
    return parse_config(
        text, absolute.parent, name=str(path), check_files=check_files, path=absolute
    )


def validate_config(
    data: dict[str, Any],
    base_dir: Path,
    *,
    check_files: bool = True,
    path: Path | None = None,
) -> Config:
    """Validate an already parsed TOML document (the ``provision`` command builds one)."""
    try:
        cfg = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config)) from None
    cfg._path = path
    problems: list[str] = []
    try:
        cfg._profile = load_profile(cfg.device.hw_profile, base_dir)
    except ProfileError as exc:
        problems.extend(f"device.hw_profile: {line}" for line in exc.problems)
    problems.extend(cross_check(cfg, check_files=check_files))
    if problems:
        raise ConfigError(problems)
    return cfg
