"""``edge-agent command sign|send``: issue signed commands from the central side."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_group,
)
from edge_agent.core.commands import COMMAND_NAMES, MAX_TTL, load_private_key, sign
from edge_agent.core.model import Period, utcnow


def parse_args_list(items: list[str]) -> dict[str, Any]:
    """One JSON object, or key=value pairs (values parsed as JSON when they are)."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            doc = json.loads(items[0])
        except ValueError as exc:
            raise CliError(f"--args: not valid JSON ({exc})", EXIT_BAD_INPUT) from None
        if not isinstance(doc, dict):
            raise CliError("--args: give a JSON object", EXIT_BAD_INPUT)
        return doc
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(
                f"--args {item!r}: write key=value (e.g. location=gate) or one JSON object",
                EXIT_BAD_INPUT,
            )
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        if key == "recording_ids" and isinstance(out[key], str):
            out[key] = [v for v in out[key].split(",") if v]
    return out


def parse_ttl(text: str) -> timedelta:
    # "10m" reads as minutes here: a command TTL is never months.
    if text.endswith("m") and text[:-1].isdigit():
        text += "in"
    try:
        period = Period.parse(text)
    except ValueError:
        raise CliError(f"--ttl {text!r}: write e.g. 10m, 30s, 1h", EXIT_BAD_INPUT) from None
    if period.months or not period.seconds:
        raise CliError(f"--ttl {text!r}: give seconds, minutes or hours", EXIT_BAD_INPUT)
    ttl = timedelta(seconds=period.seconds)
    if ttl > MAX_TTL:
        raise CliError(f"--ttl {text!r}: at most {MAX_TTL} (devices refuse longer)", EXIT_BAD_INPUT)
    return ttl


def _signed(args: argparse.Namespace) -> str:
    try:
        key = load_private_key(Path(args.key).read_bytes(), name=str(args.key))
    except OSError as exc:
        raise CliError(f"--key {args.key}: cannot read ({exc.strerror})", EXIT_BAD_INPUT) from None
    except ValueError as exc:
        raise CliError(f"--key {args.key}: {exc}", EXIT_BAD_INPUT) from None
    env = sign(
        key,
        device=args.device,
        name=args.name,
        args=parse_args_list(args.args or []),
        issued_at=utcnow(),
        ttl=parse_ttl(args.ttl),
        cmd_id=args.id,
    )
    return json.dumps(env.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _sign(args: argparse.Namespace) -> int:
    sys.stdout.write(_signed(args) + "\n")
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    payload = _signed(args)
    env = json.loads(payload)
    topic = f"{args.topic_prefix}/{args.device}/cmd/{args.name}"
    result_topic = f"{args.topic_prefix}/{args.device}/cmd-result/{env['id']}"
    results: list[dict[str, Any]] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda _c, _u, m: results.append(json.loads(m.payload))
    host, _, port = args.broker.rpartition(":")
    try:
        client.connect(host or "127.0.0.1", int(port))
    except (OSError, ValueError) as exc:
        raise CliError(f"--broker {args.broker}: cannot connect ({exc})", EXIT_FAILURE) from None
    client.subscribe(result_topic, 1)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        deadline = utcnow() + timedelta(seconds=args.wait)
        while utcnow() < deadline and not any(
            r.get("state") in ("done", "failed", "rejected") for r in results
        ):
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    for r in results:
        sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
    final = results[-1]["state"] if results else None
    return EXIT_OK if final == "done" else EXIT_FAILURE


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, help="PEM private key (from keys generate)")
    p.add_argument("--device", required=True, help="device id the command is for")
    p.add_argument("--name", required=True, choices=COMMAND_NAMES, help="command name")
    p.add_argument(
        "--args",
        nargs="*",
        metavar="ARG",
        help="one JSON object, or key=value pairs (e.g. ref=DSR-7 location=gate)",
    )
    p.add_argument("--ttl", default="10min", help="validity from now (default 10min, max 1d)")
    p.add_argument("--id", help="command id (default: a new UUID)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "command",
        help="sign (and send) commands for devices",
        example=(
            "edge-agent command sign --key keys/central.key --device gw-1 --name erase "
            "--args ref=DSR-7 location=gate start=2026-11-02T10:00:00Z end=2026-11-02T10:05:00Z"
        ),
    )
    p = add_command(
        group,
        "sign",
        help="print a signed command as JSON (publish it on {prefix}/{device}/cmd/{name})",
        description=(
            "Sign a command with an Ed25519 private key over canonical JSON naming the "
            "device, a unique id, the issue time and the expiry. Prints one JSON line, "
            'ready for mosquitto_pub -t edge/DEVICE/cmd/NAME -q 1 -m "$(...)".'
        ),
        example=(
            "edge-agent command sign --key keys/central.key --device gw-1 --name hold "
            "--args kind=incident reason='case 17' location=gate "
            "start=2026-11-02T10:00:00Z end=2026-11-02T11:00:00Z --ttl 10min"
        ),
        func=_sign,
    )
    _common(p)
    p = add_command(
        group,
        "send",
        help="sign, publish to a broker and print the device's answers",
        description=(
            "Sign like `command sign`, publish on {prefix}/{device}/cmd/{name} (QoS 1) and "
            "print every message on cmd-result/{id} until the result arrives or --wait ends. "
            "Exits 0 when the command is done, 1 otherwise."
        ),
        example=(
            "edge-agent command send --broker 127.0.0.1:1883 --key keys/central.key "
            "--device gw-1 --name status"
        ),
        func=_send,
    )
    _common(p)
    p.add_argument("--broker", required=True, help="host:port of the broker (plain MQTT)")
    p.add_argument("--topic-prefix", default="edge", help="topic prefix (default: edge)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the result")
