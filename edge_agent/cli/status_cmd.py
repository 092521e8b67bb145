"""``edge-agent status``: what the running agent sees, or why no agent answers.

The daemon answers on its control socket (app/control.py). When nobody answers,
the state is ``not running`` (never ``online``), and what can be read from the
catalog is shown beside the clock as the janitor would judge it now. Exit codes
(docs/operator-guide.md, "Status"): 0 online, 1 degraded or not running, 2 bad
input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.cli._base import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import load_cli_config, open_cli_catalog
from edge_agent.cli.control_client import ask_agent
from edge_agent.core.model import utcnow

if TYPE_CHECKING:
    from edge_agent.config.config import Config

NOT_RUNNING = "not running"


def _offline_document(cfg: Config, why_not: str) -> dict[str, Any]:
    """The catalog's view with the agent down: sources are not running, not absent."""
    from edge_agent.app.settings import janitor_settings, make_gatherer
    from edge_agent.app.status import judge_overdue
    from edge_agent.comms.status import SESSION_KEY
    from edge_agent.comms.telemetry import (
        ClockState,
        SourceState,
        availability,
        build_telemetry,
    )
    from edge_agent.core.location_drift import configured, location_drift
    from edge_agent.retention.janitor import Janitor

    reason = "the agent is not running"
    doc: dict[str, Any] = {
        "state": NOT_RUNNING,
        "reasons": [f"agent not running: {why_not}"],
        "agent": {"running": False, "why_not": why_not},
        "mqtt": {"configured": cfg.mqtt is not None, "connected": False, "session": 0},
        "topic_root": cfg.topic_root,
        "sources": [
            {"id": s.id, "location": s.location, "state": NOT_RUNNING, "reason": reason}
            for s in cfg.sources
        ],
        "jobs": [],
        "overdue_judged": False,
        "telemetry": None,
    }
    if not cfg.storage.catalog.exists():
        # A provisioned device before its first start: nothing to read, nothing created.
        doc["reasons"].append(f"no catalog yet at {cfg.storage.catalog}")
        return doc
    cat = open_cli_catalog(cfg)
    try:
        gatherer = make_gatherer(cfg, cat)
        # The clock as the janitor would judge it now, not an assumed "trusted".
        guard = Janitor.from_settings(janitor_settings(cfg), cat).guard
        v = guard.check(persist=False)
        clock = ClockState(
            v.trusted, v.reason, guard.describe_evidence(v, cached=False), guard.paused_since()
        )
        gatherer.clock = lambda: clock
        gatherer.sources = lambda: [SourceState(s.id, NOT_RUNNING, reason) for s in cfg.sources]
        drift = location_drift(configured(cfg.locations), cat.recordings.footage())
        gatherer.location_drift = tuple(d.as_dict() for d in drift)
        snap = gatherer.gather(utcnow())
        session = int(cat.get_meta(SESSION_KEY) or 0)
    finally:
        cat.close()
    telemetry = build_telemetry(snap).model_dump(mode="json")
    # Each source "not running" is implied by the first reason.
    doc["reasons"] += [r for r in availability(snap)[1] if not r.startswith("source ")]
    doc["mqtt"]["session"] = session
    doc["overdue_judged"] = judge_overdue(telemetry, clock.trusted)
    doc["telemetry"] = telemetry
    return doc


def status_document(config_path: Path) -> dict[str, Any]:
    cfg = load_cli_config(config_path)
    answer = ask_agent(cfg.control_socket)
    if answer.doc is not None:
        return answer.doc
    return _offline_document(cfg, answer.why_not or "no answer")


def exit_code(doc: dict[str, Any]) -> int:
    return EXIT_OK if doc.get("state") == "online" else EXIT_FAILURE


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h" if d else (f"{h}h {m}m" if h else f"{m}m {s}s")


def _print(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    agent = doc.get("agent", {})
    if agent.get("running"):
        w(f"agent      running (pid {agent['pid']}, up {_duration(agent['uptime_s'])})\n")
    else:
        w(f"agent      not running ({agent.get('why_not', 'no answer')})\n")
    w(f"state      {doc['state']}\n")
    for reason in doc["reasons"]:
        w(f"  reason   {reason}\n")
    t = doc["telemetry"]
    if t is None:
        for s in doc.get("sources", []):
            w(f"source     {s['id']}: {s['state']}\n")
        return
    w(f"device     {t['device']} (edge-agent {t['version']})\n")
    mqtt = doc.get("mqtt", {})
    if not mqtt.get("configured"):
        w("mqtt       off\n")
    else:
        conn = "connected" if mqtt.get("connected") else "not connected"
        w(f"mqtt       {conn} (session {mqtt.get('session', 0)})\n")
    c = t["clock"]
    w(f"clock      {c['state']}")
    w(f" ({c['reason']})\n" if c["reason"] else "\n")
    if c["evidence"]:
        w(f"           evidence: {c['evidence']}\n")
    if c["deletion_paused_since"]:
        w(f"           deletion paused since {c['deletion_paused_since']}\n")
    for s in doc.get("sources", []):
        line = f"source     {s['id']}: {s['state']}"
        if s.get("reason"):
            line += f" ({s['reason']})"
        if s.get("last_segment_end"):
            line += f", last segment {s['last_segment_end']}"
        if s.get("bitrate_bps"):
            line += f", {s['bitrate_bps'] / 1e6:.1f} Mbit/s"
        w(line + "\n")
    h = t["health"]
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
    if not doc.get("overdue_judged", c["state"] == "trusted"):
        # Past deadlines are judged against a clock the guard does not trust: no
        # "overdue" figure is a compliance finding until the clock is back.
        w(f"retention  next deadline {ret['next_deadline']}; overdue not judged: clock untrusted\n")
    else:
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
    for job in doc.get("jobs", []):
        w(f"job        {job}\n")


def _status(args: argparse.Namespace) -> int:
    doc = status_document(args.config)
    if args.json:
        print_json(doc)
    else:
        _print(doc)
    return exit_code(doc)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "status",
        help="what the running agent sees (or 'not running'); exit 0 online, 1 otherwise",
        description=(
            "Ask the running agent over its control socket and print its state, sources, "
            "clock, storage and outbox. When no agent answers, say 'not running' and show "
            "what the catalog holds, with the clock judged as the janitor would. Exit codes: "
            "0 online, 1 degraded or not running, 2 bad input."
        ),
        example="edge-agent status --config /etc/edge-agent/config.toml --json",
        func=_status,
    )
    add_config_arg(p)
    add_json_arg(p)
