"""Hardware profiles: what a kind of device can take (docs/operator-guide.md).

One TOML file per device kind in ``hw_profiles/`` (shipped inside the package as
``edge_agent/hw_profiles``). A profile gives the defaults that depend on the
hardware rather than on the site: how much disk must stay free, how often to
fsync (SD cards wear out under many small synced writes), how many streams the
board can record, which temperature sensor to report, the segment length and
how to re-encode a source masked at recording time.
``[storage]`` and ``[[sources]]`` in the config may override them.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
)

PROFILES_DIR = Path(__file__).resolve().parents[1] / "hw_profiles"

FsyncMode = Literal["always", "batched"]
# libx264's presets, fastest first: how much CPU a masked source's re-encoding may take.
MaskPreset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_SIZE_HINT = 'write a size like "2GiB", "500MiB" or "10GB"'


class ProfileError(Exception):
    """A profile that is unknown or invalid; ``problems`` holds one line each."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def parse_size(value: object) -> int:
    """``"2GiB"``, ``"500MB"``, ``"4096"`` or an int → bytes. ValueError names the value."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative ({_SIZE_HINT})")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
    m = _SIZE_RE.match(value)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"{value!r} is not a size ({_SIZE_HINT})")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class SpaceFloor:
    """Free space to keep: a fixed number of bytes or a percentage of the filesystem."""

    bytes: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, value: object) -> SpaceFloor:
        if isinstance(value, SpaceFloor):
            return value
        if isinstance(value, str) and "%" in value:
            m = _PERCENT_RE.match(value)
            if not m:
                raise ValueError(f'{value!r} is not a percentage (write e.g. "5%")')
            pct = float(m.group(1))
            if not 0 <= pct < 100:
                raise ValueError(f"{value!r} is out of range (use a percentage below 100%)")
            return cls(percent=pct)
        try:
            return cls(bytes=parse_size(value))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a size or percentage "
                '(write a size like "2GiB" or "500MiB", or a percentage like "5%")'
            ) from None

    def bytes_for(self, total_bytes: int) -> int:
        """The floor in bytes on a filesystem of ``total_bytes``."""
        if self.percent is not None:
            return math.ceil(total_bytes * self.percent / 100)
        return self.bytes or 0

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return format_size(self.bytes or 0)


def format_size(n: int) -> str:
    """Bytes in the largest binary unit that divides them (``2GiB``), else plain bytes."""
    for unit, mult in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"


SpaceFloorField = Annotated[
    SpaceFloor, PlainValidator(SpaceFloor.parse), PlainSerializer(str, return_type=str)
]
SizeField = Annotated[
    int, PlainValidator(parse_size), PlainSerializer(format_size, return_type=str)
]


class TemperatureSensor(BaseModel):
    """A key of ``psutil.sensors_temperatures()`` and, optionally, one entry's label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    label: str | None = None


class HwProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = Field(min_length=1)
    free_space_floor: SpaceFloorField
    fsync: FsyncMode
    # With "batched", closed recorder segments are synced together (one syncfs) this
    # often: fewer, larger flushes for SD cards and spinning disks (edge_agent.recording.filer).
    fsync_batch_seconds: float = Field(default=5.0, gt=0, le=600)
    # Reserved, unused: a buffer in the process would lose footage at a crash and spare
    # the disk nothing the page cache does not (docs/operator-guide.md, "Fsync policy").
    write_buffer: SizeField = 64 * 1024
    max_streams: int = Field(ge=1, le=256, strict=True)
    segment_seconds: int = Field(ge=2, le=3600, strict=True)
    temperature_sensor: TemperatureSensor | None = None
    # Recordings go to their own disk (NVMe, HDD, USB), not the system disk: doctor
    # fails when the storage root is not on a mounted filesystem of its own.
    external_storage: bool = False
    # Sources with privacy masks at recording time are decoded, masked and
    # re-encoded with libx264 at this preset and bitrate (kbit/s, a cap);
    # docs/anonymization.md "Masks at recording time" says what each profile takes.
    mask_preset: MaskPreset = "veryfast"
    mask_bitrate_kbps: int = Field(default=2000, ge=100, le=50_000, strict=True)
    path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly values, as ``profile show --json`` prints them."""
        doc: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return doc


def _format_validation(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(file)"
        if e["type"] == "extra_forbidden":
            known = ", ".join(k for k in HwProfile.model_fields if k not in ("name", "path"))
            lines.append(f"{key}: unknown key (known keys: {known})")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing (add it)")
        elif e["type"] == "value_error":
            lines.append(f"{key}: {e['ctx']['error']}")
        else:
            lines.append(f"{key}: {e['input']!r}: {e['msg']}")
    return lines


def _read(path: Path, name: str) -> HwProfile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: invalid TOML ({exc})") from exc
    for injected in ("name", "path"):
        if injected in data:
            raise ProfileError(
                f"{path}: {injected}: not allowed in a profile (the file name is the profile name)"
            )
    try:
        return HwProfile.model_validate({**data, "name": name, "path": path})
    except ValidationError as exc:
        raise ProfileError([f"{path}: {line}" for line in _format_validation(exc)]) from exc


def profile_names(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.toml"))


def list_profiles(profiles_dir: Path = PROFILES_DIR) -> list[HwProfile]:
    """Every bundled profile, sorted by name. Raises ProfileError on an invalid file."""
    return [_read(profiles_dir / f"{n}.toml", n) for n in profile_names(profiles_dir)]


def load_profile(
    name_or_path: str, base_dir: Path | None = None, *, profiles_dir: Path = PROFILES_DIR
) -> HwProfile:
    """A bundled profile by name (``rpi5-nvme``) or a TOML file by path.

    A value with a ``/`` or ending in ``.toml`` is a path, relative to
    ``base_dir`` (the config file's folder) when not absolute.
    """
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ProfileError(f"profile file {str(path)!r} not found (fix the path)")
        return _read(path, path.stem)
    path = profiles_dir / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(profile_names(profiles_dir))
        raise ProfileError(
            f"unknown profile {name_or_path!r} (known: {known}; or give a path to a .toml file)"
        )
    return _read(path, name_or_path)
