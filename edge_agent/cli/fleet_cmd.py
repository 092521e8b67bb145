"""``edge-agent fleet``: the read-only fleet dashboard (docs/fleet.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_OK, CliError, add_command


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise CliError(
            f"--listen {text!r}: use HOST:PORT, e.g. 127.0.0.1:8090", EXIT_BAD_INPUT
        ) from None


def _read(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"{what} {path}: {exc.strerror}", EXIT_BAD_INPUT) from None


def _fleet(args: argparse.Namespace) -> int:
    from edge_agent.comms.mqtt import MqttLink, MqttSettings
    from edge_agent.fleet.model import Fleet
    from edge_agent.fleet.server import FleetServer

    url = urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise CliError(
            f"--broker {args.broker!r}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
            EXIT_BAD_INPUT,
        )
    tls = url.scheme == "mqtts"
    token = _read(args.token_file, "--token-file") or ""
    host, port = _listen(args.listen)
    settings = MqttSettings(
        host=url.hostname,
        port=url.port or (8883 if tls else 1883),
        client_id=args.client_id or f"edge-fleet-{socket.gethostname()}"[:64],
        protocol=args.protocol,
        tls=tls,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        username=args.username,
        password=_read(args.password_file, "--password-file"),
    )
    try:
        server = FleetServer(MqttLink(settings), Fleet(args.prefix), token, host=host, port=port)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "fleet",
        help="read-only web dashboard of every device on a broker",
        description=(
            "Subscribe to {prefix}/+/status, /telemetry and /events and serve a page of "
            "every device (state, clock, overdue recordings, storage, failing sources, "
            "outbox, last seen), updated live. Every request needs the token."
        ),
        example=(
            "edge-agent fleet --broker mqtts://broker.example:8883 --ca-file ca.pem "
            "--token-file /etc/edge-fleet/token --listen 0.0.0.0:8090"
        ),
        func=_fleet,
    )
    p.add_argument("--broker", required=True, help="mqtt://HOST[:PORT] or mqtts://...")
    p.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default 127.0.0.1:8090)")
    p.add_argument("--token-file", type=Path, required=True, help="file holding the access token")
    p.add_argument("--prefix", default="edge", help="the devices' topic_prefix (default edge)")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version")
    p.add_argument("--client-id", help="MQTT client id (default edge-fleet-<hostname>)")
    p.add_argument("--ca-file", type=Path, help="CA for mqtts://")
    p.add_argument("--cert-file", type=Path, help="client certificate for mqtts://")
    p.add_argument("--key-file", type=Path, help="client key for mqtts://")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", type=Path, help="file holding the MQTT password")
