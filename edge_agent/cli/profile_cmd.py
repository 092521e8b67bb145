"""``edge-agent profile list|show``: the bundled hardware profiles."""

from __future__ import annotations

import argparse
import sys

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CliError,
    add_command,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.config.profiles import (
    HwProfile,
    ProfileError,
    format_size,
    list_profiles,
    load_profile,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "profile",
        help="hardware profiles (free-space floor, fsync policy, streams, sensor)",
        example="edge-agent profile list",
    )
    lst = add_command(
        group,
        "list",
        help="list the hardware profiles shipped with the agent",
        example="edge-agent profile list\nedge-agent profile list --json",
        func=cmd_list,
    )
    add_json_arg(lst)
    show = add_command(
        group,
        "show",
        help="show every value of one profile (a name from 'profile list' or a .toml path)",
        example="edge-agent profile show rpi5-nvme\nedge-agent profile show sd-recorder --json",
        func=cmd_show,
    )
    show.add_argument("name", help="profile name, or a path to a profile .toml file")
    add_json_arg(show)


def _profiles() -> list[HwProfile]:
    try:
        return list_profiles()
    except ProfileError as exc:
        raise CliError(str(exc).replace("\n", "; ")) from None


def _fsync_text(p: HwProfile) -> str:
    return p.fsync if p.fsync == "always" else f"batched/{p.fsync_batch_seconds:g}s"


def cmd_list(args: argparse.Namespace) -> int:
    profiles = _profiles()
    if args.json:
        print_json([p.summary() for p in profiles])
        return EXIT_OK
    rows = [("NAME", "FLOOR", "FSYNC", "STREAMS", "DESCRIPTION")]
    rows += [
        (p.name, str(p.free_space_floor), _fsync_text(p), str(p.max_streams), p.description)
        for p in profiles
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(4)]
        sys.stdout.write("  ".join([*cells, r[4]]).rstrip() + "\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    try:
        p = load_profile(args.name)
    except ProfileError as exc:
        raise CliError(str(exc).replace("\n", "; "), EXIT_BAD_INPUT) from None
    if args.json:
        print_json(p.summary())
        return EXIT_OK
    sensor = p.temperature_sensor
    sensor_text = "none"
    if sensor is not None:
        sensor_text = sensor.name + (f" (label {sensor.label!r})" if sensor.label else "")
    lines = [
        ("name", p.name),
        ("description", p.description),
        ("free_space_floor", str(p.free_space_floor)),
        ("fsync", p.fsync),
        ("fsync_batch_seconds", f"{p.fsync_batch_seconds:g}"),
        # Validated but unused (docs/operator-guide.md, "Fsync policy").
        ("write_buffer", f"{format_size(p.write_buffer)} (reserved)"),
        ("max_streams", str(p.max_streams)),
        ("segment_seconds", str(p.segment_seconds)),
        ("temperature_sensor", sensor_text),
        ("file", str(p.path)),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        sys.stdout.write(f"{key.ljust(width)}  {value}\n")
    return EXIT_OK
