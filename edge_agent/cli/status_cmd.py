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
from edge_agent.core.model import utcnow


def status_document(config_path: Any) -> dict[str, Any]:
    from edge_agent.app.daemon import make_gatherer
    from edge_agent.comms.status import SESSION_KEY
    from edge_agent.comms.telemetry import ClockState, availability, build_telemetry
    from edge_agent.retention.janitor import Janitor

    cfg = load_cli_config(config_path)
    cat = open_cli_catalog(cfg)
    try:
        gatherer = make_gatherer(cfg, cat)
        # The clock as the janitor would judge it now, not an assumed "trusted".
        guard = Janitor.from_config(cfg, cat).guard
        v = guard.check(persist=False)
        clock = ClockState(
            v.trusted,
            v.reason,
            guard.describe_evidence(v, cached=False),
            guard.paused_since(),
        )
        gatherer.clock = lambda: clock
        from edge_agent.core.location_drift import configured, location_drift

        drift = location_drift(configured(cfg.locations), cat.recordings.footage())
        gatherer.location_drift = tuple(d.as_dict() for d in drift)
        snap = gatherer.gather(utcnow())
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
    c = t["clock"]
    w(f"clock      {c['state']}")
    w(f" ({c['reason']})\n" if c["reason"] else "\n")
    if c["evidence"]:
        w(f"           evidence: {c['evidence']}\n")
    if c["deletion_paused_since"]:
        w(f"           deletion paused since {c['deletion_paused_since']}\n")
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
    for d in ret["location_drift"]:
        w(
            f"           {d['location']}: {d['kind'].replace('_', ' ')}, {d['count']} recording(s) "
            f"kept as recorded (last deadline {d['last_deadline']})\n"
        )
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
