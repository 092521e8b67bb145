"""Hardware profiles: every shipped file loads, errors name the known profiles."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config.profiles import (
    PROFILES_DIR,
    ProfileError,
    SpaceFloor,
    list_profiles,
    load_profile,
    parse_size,
)

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"rpi5-nvme", "jetson-orin-nano", "x86-gateway-hdd", "sd-recorder"}


def test_every_profile_file_loads() -> None:
    files = sorted((REPO / "hw_profiles").glob("*.toml"))
    assert files
    profiles = list_profiles()
    assert [p.name for p in profiles] == [f.stem for f in files]
    assert {p.name for p in profiles} >= REQUIRED
    for p in profiles:
        assert p.description
        assert p.max_streams >= 1
        assert p.free_space_floor.bytes_for(64 * 1024**3) > 0


def test_package_copy_is_the_top_level_folder() -> None:
    # The package ships edge_agent/hw_profiles; it must be the same files as hw_profiles/.
    top = {f.name: f.read_bytes() for f in (REPO / "hw_profiles").glob("*.toml")}
    packaged = {f.name: f.read_bytes() for f in PROFILES_DIR.glob("*.toml")}
    assert packaged == top


def test_sd_card_profile_writes_less_often() -> None:
    sd, nvme = load_profile("sd-recorder"), load_profile("rpi5-nvme")
    assert sd.fsync == "batched" and nvme.fsync == "always"
    assert sd.write_buffer > nvme.write_buffer
    assert nvme.temperature_sensor is not None
    assert nvme.temperature_sensor.name == "cpu_thermal"
    x86 = load_profile("x86-gateway-hdd")
    assert x86.temperature_sensor is not None
    assert (x86.temperature_sensor.name, x86.temperature_sensor.label) == (
        "coretemp",
        "Package id 0",
    )


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("rpi4")
    assert str(info.value) == (
        "unknown profile 'rpi4' (known: generic-linux, jetson-orin-nano, rpi5-nvme, "
        "sd-recorder, x86-gateway-hdd; or give a path to a .toml file)"
    )


def test_invalid_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "odd.toml"
    path.write_text(
        'description = "x"\nfree_space_floor = "lots"\nfsync = "sometimes"\n'
        "max_streams = 1\nsegment_seconds = 60\nfan = true\n"
    )
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert info.value.problems == [
        f"{path}: free_space_floor: 'lots' is not a size or percentage "
        '(write a size like "2GiB" or "500MiB", or a percentage like "5%")',
        f"{path}: fsync: 'sometimes': Input should be 'always' or 'batched'",
        f"{path}: fan: unknown key (known keys: description, free_space_floor, fsync, "
        "fsync_batch_seconds, write_buffer, max_streams, segment_seconds, temperature_sensor, "
        "external_storage, mask_preset, mask_bitrate_kbps)",
    ]


def test_missing_profile_path(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not found"):
        load_profile("profiles/none.toml", tmp_path)


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("5%", 1000, 50),
        ("2GiB", 10**15, 2 * 1024**3),
        ("500MiB", 10**15, 500 * 1024**2),
        ("10GB", 10**15, 10 * 10**9),
        (4096, 10**15, 4096),
        ("0.5%", 1000, 5),
    ],
)
def test_space_floor(text: str | int, total: int, expected: int) -> None:
    assert SpaceFloor.parse(text).bytes_for(total) == expected


@pytest.mark.parametrize("text", ["lots", "5 parsecs", "-1", "150%", "%", True])
def test_space_floor_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        SpaceFloor.parse(text)


def test_parse_size() -> None:
    assert parse_size("1KiB") == 1024
    assert parse_size("1kb") == 1000
    assert str(SpaceFloor.parse("2GiB")) == "2GiB"
    assert str(SpaceFloor.parse("5%")) == "5%"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_profile_list_and_show() -> None:
    out = run_cli("profile", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "FLOOR", "FSYNC", "STREAMS"]
    assert any(line.startswith("sd-recorder ") and "batched/30s" in line for line in lines)

    js = run_cli("profile", "list", "--json")
    assert {p["name"] for p in json.loads(js.stdout)} >= REQUIRED

    show = run_cli("profile", "show", "rpi5-nvme", "--json")
    doc = json.loads(show.stdout)
    assert doc["free_space_floor"] == "5%" and doc["temperature_sensor"]["name"] == "cpu_thermal"

    bad = run_cli("profile", "show", "rpi4")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "unknown profile 'rpi4' (known: generic-linux" in bad.stderr
