"""JSON Schemas of every MQTT payload, generated from the pydantic models.

``python -m edge_agent.comms.schemas --write`` regenerates ``schemas/*.json`` in the
repository; ``--check`` (and ``tests/comms/test_schemas.py``) fail when the files and
the models have drifted apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_agent.comms.publisher import EventPayload
from edge_agent.comms.status import StatusPayload
from edge_agent.comms.telemetry import TelemetryPayload
from edge_agent.core.commands import CommandEnvelope, CommandResult

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

MODELS: dict[str, tuple[type[BaseModel], str]] = {
    "status": (StatusPayload, "{prefix}/{device}/status (retained, QoS 1)"),
    "telemetry": (TelemetryPayload, "{prefix}/{device}/telemetry (retained, QoS 0)"),
    "event": (EventPayload, "{prefix}/{device}/events (QoS 1)"),
    "command": (CommandEnvelope, "{prefix}/{device}/cmd/{name} (QoS 1, to the device)"),
    "command-result": (CommandResult, "{prefix}/{device}/cmd-result/{cmd_id} (QoS 1)"),
}


def schema_text(name: str) -> str:
    model, topic = MODELS[name]
    doc: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://edge-agent.example/schemas/{name}.schema.json",
        "x-topic": topic,
        **model.model_json_schema(mode="serialization"),
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected() -> dict[Path, str]:
    return {SCHEMA_DIR / f"{name}.schema.json": schema_text(name) for name in MODELS}


def drift() -> list[str]:
    """One line per schema file that is missing or differs from its model."""
    out = []
    for path, text in expected().items():
        if not path.exists():
            out.append(f"{path}: missing (run python -m edge_agent.comms.schemas --write)")
        elif path.read_text(encoding="utf-8") != text:
            out.append(
                f"{path}: differs from its model (run python -m edge_agent.comms.schemas --write)"
            )
    return out


def write() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for path, text in expected().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_agent.comms.schemas", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate schemas/*.json")
    mode.add_argument("--check", action="store_true", help="exit 1 if they drifted")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            sys.stdout.write(f"wrote {path}\n")
        return 0
    problems = drift()
    for line in problems:
        sys.stderr.write(line + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
