"""The config's field types: ids, paths, URLs, periods, times, each checked with a fix.

Used by the section models in config.py; every check raises ValueError with a
message that names the value and the fix (docs/operator-guide.md).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
)

from edge_agent.core.model import Period

# The clock is distrusted when it reads earlier than this (docs/design/time.md);
# bump it with each release.
RELEASE_DATE = datetime(2026, 11, 1, tzinfo=UTC)
START_TIME_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)

DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Location and source ids end up in MQTT payloads, file names and tags.
ITEM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
SOURCE_SCHEMES = ("rtsp", "rtsps", "http", "https", "file", "testsrc")
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
MAX_TOKEN_FILE_BYTES = 4096
MAX_PERIOD_MONTHS = 1200


class ConfigError(Exception):
    """An unusable config; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# -- field types -----------------------------------------------------------


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    if not str(value).strip() or str(value) == ".":
        raise ValueError("empty path (give a file or folder path)")
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value))


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


def _check_device_id(value: str) -> str:
    if not DEVICE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not allowed (use lowercase letters, digits and '-')")
    return value


def _check_item_id(value: str) -> str:
    if not ITEM_ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not allowed (use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 63)"
        )
    return value


DeviceId = Annotated[str, AfterValidator(_check_device_id)]
ItemId = Annotated[str, AfterValidator(_check_item_id)]


def _parse_period(value: object) -> Period:
    if isinstance(value, Period):
        return value
    hint = 'use a whole number and a unit: s, min, h, d, w, mo, y, e.g. "72h", "3d", "6mo"'
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration (write it in quotes; {hint})")
    try:
        period = Period.parse(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration ({hint})") from None
    if period.upper_bound_seconds() == 0:
        raise ValueError(f"{value!r} is zero (give a period longer than zero)")
    if period.months > MAX_PERIOD_MONTHS or period.seconds > MAX_PERIOD_MONTHS * 28 * 86400:
        # Deadlines are dates: far beyond this they overflow the calendar.
        raise ValueError(f"{value!r} is longer than 100 years (give a shorter period)")
    return period


PeriodField = Annotated[
    Period, PlainValidator(_parse_period), PlainSerializer(str, return_type=str)
]


def _parse_utc(value: object) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date (write e.g. 2020-01-01 or 2020-01-01T00:00:00Z)"
            ) from None
    else:
        raise ValueError(f"{value!r} is not a date (write e.g. 2020-01-01)")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is outside the representable range") from None


UtcDatetime = Annotated[
    datetime,
    PlainValidator(_parse_utc),
    PlainSerializer(lambda d: d.isoformat().replace("+00:00", "Z"), return_type=str),
]


def redact_url(url: str) -> str:
    """The url with any password replaced by ``***``: camera urls often carry one."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "(url hidden: it may hold a password)"
    return parts._replace(netloc=netloc).geturl()


def _check_source_url(value: str) -> str:
    shown = repr(redact_url(value))
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("the url is not valid (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in SOURCE_SCHEMES:
        raise ValueError(
            f"{shown} has an unsupported scheme {scheme or '(none)'!r} "
            "(use rtsp, rtsps, http, https, file or testsrc)"
        )
    if scheme in NETWORK_SCHEMES and not parts.hostname:
        raise ValueError(f"{shown} has no host (write e.g. rtsp://192.0.2.10/stream)")
    if scheme == "file" and not parts.path.startswith("/"):
        raise ValueError(f"{shown} has no absolute path (write e.g. file:///srv/video.mp4)")
    return value


def _check_mqtt_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(
            f"{value!r} has an unsupported scheme {parts.scheme or '(none)'!r} "
            "(use mqtt:// or mqtts://, e.g. mqtts://broker.example:8883)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port (use a number 1-65535)") from None
    if not parts.hostname or port == 0:
        raise ValueError(f"{value!r} has no host (write e.g. mqtts://broker.example:8883)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{value!r} has a path or query (give only scheme, host and port)")
    if parts.password is not None:
        raise ValueError("the url holds a password (move it to mqtt.password_file)")
    return value


def _check_ice_url(value: str) -> str:
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme not in ICE_SCHEMES or not value.split(":", 1)[1]:
        raise ValueError(
            f"{value!r} is not a STUN/TURN url (write e.g. stun:stun.example.org:3478)"
        )
    return value


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} is not host:port (write e.g. 127.0.0.1:8088 or [::1]:8088)")
    return host, int(port_text)


def _check_listen(value: str) -> str:
    _split_listen(value)
    return value


def _check_topic_prefix(value: str) -> str:
    if not TOPIC_PREFIX_RE.match(value):
        raise ValueError(
            f"{value!r} is not a topic prefix (use letters, digits, '-', '_' and '/' "
            "between levels; no '+', '#' or spaces)"
        )
    return value


def _protocol_text(value: object) -> object:
    # TOML users write protocol = 5 as often as "5".
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


SourceUrl = Annotated[str, AfterValidator(_check_source_url)]
MqttUrl = Annotated[str, AfterValidator(_check_mqtt_url)]
IceUrl = Annotated[str, AfterValidator(_check_ice_url)]
Listen = Annotated[str, AfterValidator(_check_listen)]
TopicPrefix = Annotated[str, AfterValidator(_check_topic_prefix)]


def _check_zone(value: str) -> str:
    from edge_agent.core.timesource import zone

    try:
        zone(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or remove name_timezone if names are in UTC") from None
    return value


# The IANA zone a DVR names its files in (local time without an offset).
TimeZoneName = Annotated[str, AfterValidator(_check_zone)]
# At most a year: any larger (or inf) overflows timedelta where the value is used.
YEAR_SECONDS = 366 * 86400
Seconds = Annotated[float, Field(gt=0, le=YEAR_SECONDS)]
