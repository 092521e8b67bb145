"""``edge-agent status``: what telemetry would say now, without a broker."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edge_agent.cli._base import (
    EXIT_OK,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import load_cli_config, open_cli_catalog
from edge_agent.model import utcnow


def status_document(config_path: Any) -> dict[str, Any]:
    from edge_agent.daemon import make_gatherer
    from edge_agent.status import SESSION_KEY
    from edge_agent.telemetry import availability, build_telemetry

    cfg = load_cli_config(config_path)
    cat = open_cli_catalog(cfg)
    try:
        snap = make_gatherer(cfg, cat).gather(utcnow())
        session = int(cat.get_meta(SESSION_KEY) or 0)
    finally:
        cat.close()
    state, reasons = availability(snap)
    return {
        "state": state,
        "reasons": reasons,
        "mqtt_session": session,
        "topic_root": cfg.topic_root,
        "telemetry": build_telemetry(snap).model_dump(mode="json"),
    }


def _status(args: argparse.Namespace) -> int:
    doc = status_document(args.config)
    if args.json:
        print_json(doc)
        return EXIT_OK
    t = doc["telemetry"]
    h = t["health"]
    w = sys.stdout.write
    w(f"state      {doc['state']}\n")
    for reason in doc["reasons"]:
        w(f"  reason   {reason}\n")
    w(f"device     {t['device']} (edge-agent {t['version']})\n")
    w(f"clock      {t['clock']['state']}")
    w(f" ({t['clock']['reason']})\n" if t["clock"]["reason"] else "\n")
    w(f"cpu        {h['cpu_percent']}%  memory {h['memory_percent']}%  load {h['load_1m']}\n")
    if h["temperature_c"] is not None:
        w(f"temp       {h['temperature_c']} °C\n")
    for m in h["storage"]:
        w(f"storage    {m['mount']}: {m['free_bytes']} bytes free ({m['used_percent']}% used)\n")
    for purpose, r in t["recordings"].items():
        w(
            f"{purpose:<10} {r['count']} recordings, {r['bytes']} bytes, "
            f"oldest {r['oldest_start']}\n"
        )
    ret = t["retention"]
    w(
        f"retention  next deadline {ret['next_deadline']}, {ret['overdue_count']} overdue "
        f"(worst {ret['worst_overdue_seconds']} s)\n"
    )
    if ret["longer_than_notice"]:
        w(f"           longer than the notice: {', '.join(ret['longer_than_notice'])}\n")
    w(f"outbox     {t['outbox']['depth']} events queued\n")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "status",
        help="what the agent's telemetry would say now (no broker needed)",
        description=(
            "Read the machine and the catalog the way the daemon does and print the "
            "availability (online/degraded with reasons) and the telemetry payload."
        ),
        example="edge-agent status --config /etc/edge-agent/config.toml --json",
        func=_status,
    )
    add_config_arg(p)
    add_json_arg(p)
