"""``edge-agent provision``: write a valid config from a profile and flags.

Non-interactive when the required flags are given (scripts, image builders);
on a terminal it asks for what is missing; otherwise it exits 2 and names the
missing flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_OK, CliError, add_command, error
from edge_agent.config.config import ConfigError
from edge_agent.config.profiles import profile_names
from edge_agent.config.provision import (
    DEFAULT_CATALOG,
    DEFAULT_LIVEVIEW_LISTEN,
    DEFAULT_STORAGE_ROOT,
    LocationSpec,
    ProvisionError,
    ProvisionRequest,
    SourceSpec,
    WatchSpec,
    parse_location,
    parse_source,
    parse_watch,
    provision,
)

T = TypeVar("T")

EXAMPLE = """\
edge-agent provision --profile rpi5-nvme --device-id gw-bagneux-01 \\
  --broker mqtts://broker.example:8883 \\
  --location gate:premises:signage --location lab-1:premises:audio:signage \\
  --source cam-gate:rtsp://192.0.2.10/stream:gate:security \\
  --source cam-lab:rtsp://192.0.2.11/stream:lab-1:rnd:audio \\
  --liveview-listen 127.0.0.1:8088 --out /etc/edge-agent/config.toml"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "provision",
        help="write a config from a hardware profile and flags (asks on a terminal)",
        description=(
            "Write a validated config. Required: --profile, --device-id, --out; on a terminal "
            "missing values are asked for, otherwise the command exits 2 naming them. With "
            "--liveview-listen a random token is written to liveview.token beside the config."
        ),
        example=EXAMPLE,
        func=cmd_provision,
    )
    p.add_argument("--profile", help=f"hardware profile ({', '.join(profile_names())} or a path)")
    p.add_argument("--device-id", help="device id: lowercase letters, digits and '-'")
    p.add_argument("--out", type=Path, help="config file to write")
    p.add_argument("--broker", help="MQTT broker url, mqtt:// or mqtts:// (absent = MQTT off)")
    p.add_argument("--topic-prefix", default="edge", help="MQTT topic prefix (default: edge)")
    p.add_argument(
        "--location",
        action="append",
        default=[],
        metavar="ID:KIND[:audio][:signage]",
        help="a location; kind premises|external; 'signage' confirms signs are up (repeat)",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="ID:URL:LOCATION:PURPOSE[:audio]",
        help="a camera to record; purpose security|rnd|marketing (repeat)",
    )
    p.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="PATH:LOCATION:PURPOSE",
        help="a folder other recorders drop files into (repeat)",
    )
    p.add_argument(
        "--storage-root",
        type=Path,
        help=f"recordings folder (default: {DEFAULT_STORAGE_ROOT})",
    )
    p.add_argument("--catalog", type=Path, help=f"catalog file (default: {DEFAULT_CATALOG})")
    p.add_argument(
        "--liveview-listen",
        metavar="HOST:PORT",
        nargs="?",
        const=DEFAULT_LIVEVIEW_LISTEN,
        help=(
            f"turn the live view on (alone: {DEFAULT_LIVEVIEW_LISTEN}, loopback, reached "
            "with ssh -L 8088:127.0.0.1:8088; an address on the LAN sends the token and "
            "the pictures in clear text and is warned about)"
        ),
    )
    p.add_argument("--force", action="store_true", help="replace an existing config file")


def _specs(values: list[str], parse: Callable[[str], T], problems: list[str]) -> list[T]:
    out: list[T] = []
    for value in values:
        try:
            out.append(parse(value))
        except ValueError as exc:
            problems.append(str(exc))
    return out


def _ask(prompt: str, default: str | None = None) -> str:
    shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
    sys.stderr.write(shown)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise CliError("provision: input ended before all answers were given", EXIT_BAD_INPUT)
    return line.strip() or (default or "")


def _ask_list(what: str, example: str, parse: Callable[[str], T]) -> list[T]:
    sys.stderr.write(f"{what}, one per line as {example}; an empty line ends the list\n")
    out: list[T] = []
    while True:
        answer = _ask(f"  {what}")
        if not answer:
            return out
        try:
            out.append(parse(answer))
        except ValueError as exc:
            sys.stderr.write(f"  {exc}\n")


def _interactive(args: argparse.Namespace) -> None:
    sys.stderr.write("edge-agent provision: answer a few questions (Ctrl-C to stop)\n")
    while not args.profile:
        args.profile = _ask(f"hardware profile ({', '.join(profile_names())})", "generic-linux")
    while not args.device_id:
        args.device_id = _ask("device id (e.g. gw-site-01)")
    while not args.out:
        args.out = Path(_ask("config file to write", "/etc/edge-agent/config.toml"))
    if not (args.location or args.source or args.watch):
        args.location_specs = _ask_list("location", "id:kind[:audio][:signage]", parse_location)
        args.source_specs = _ask_list("source", "id:url:location:purpose[:audio]", parse_source)
        args.watch_specs = _ask_list("watched folder", "path:location:purpose", parse_watch)
    if args.broker is None:
        args.broker = _ask("MQTT broker url (empty = MQTT off)") or None
    if args.liveview_listen is None:
        args.liveview_listen = (
            _ask(f"live view listen address, e.g. {DEFAULT_LIVEVIEW_LISTEN} (empty = off)") or None
        )


def cmd_provision(args: argparse.Namespace) -> int:
    missing = [
        flag
        for flag, value in (
            ("--profile", args.profile),
            ("--device-id", args.device_id),
            ("--out", args.out),
        )
        if not value
    ]
    problems: list[str] = []
    locations = _specs(args.location, parse_location, problems)
    sources = _specs(args.source, parse_source, problems)
    watches = _specs(args.watch, parse_watch, problems)
    if problems:
        for line in problems[:-1]:
            error(line)
        raise CliError(problems[-1], EXIT_BAD_INPUT)
    if missing:
        if not sys.stdin.isatty():
            raise CliError(
                f"provision: missing {', '.join(missing)} (give them as flags, or run on a "
                "terminal to be asked)",
                EXIT_BAD_INPUT,
            )
        _interactive(args)
        locations = getattr(args, "location_specs", locations)
        sources = getattr(args, "source_specs", sources)
        watches = getattr(args, "watch_specs", watches)
    req = ProvisionRequest(
        profile=args.profile,
        device_id=args.device_id,
        out=args.out,
        broker=args.broker,
        topic_prefix=args.topic_prefix,
        locations=tuple[LocationSpec, ...](locations),
        sources=tuple[SourceSpec, ...](sources),
        watches=tuple[WatchSpec, ...](watches),
        storage_root=args.storage_root or DEFAULT_STORAGE_ROOT,
        catalog=args.catalog or DEFAULT_CATALOG,
        liveview_listen=args.liveview_listen,
    )
    try:
        result = provision(req, force=args.force)
    except (ProvisionError, ConfigError) as exc:
        lines = exc.problems or [str(exc)]
        for line in lines[:-1]:
            error(line)
        raise CliError(lines[-1], EXIT_BAD_INPUT) from None
    for line in result.warnings:
        sys.stderr.write(f"warning: {line}\n")
    cfg = result.config
    sys.stdout.write(
        f"wrote {result.path} (device {cfg.device.id}, profile {cfg.profile.name}; "
        f"locations: {len(cfg.locations)}, sources: {len(cfg.sources)}, "
        f"watched folders: {len(cfg.watch)})\n"
    )
    if result.token_file is not None:
        verb = "wrote a new" if result.token_created else "kept the existing"
        sys.stdout.write(f"live view: {verb} token in {result.token_file}\n")
    if result.signing_key is not None:
        verb = "wrote a new" if result.signing_key_created else "kept the existing"
        sys.stdout.write(f"exports: {verb} signing key {result.signing_key} (0600)\n")
    return EXIT_OK
