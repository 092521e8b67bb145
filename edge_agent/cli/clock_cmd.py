"""``edge-agent clock show|accept``: the clock guard as an installer sees it on site.

``accept`` re-bases the guard on the wall clock as it reads now, after the
installer has checked it against a trusted reference; the running daemon
resumes deletion at its next check. Audited with who and why
(docs/design/time.md).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import load_cli_config, open_cli_catalog
from edge_agent.core.model import iso

MAX_REASON = 500


def _who() -> str:
    # Under sudo the person is SUDO_USER; root itself says little in an audit.
    name = os.environ.get("SUDO_USER") or getpass.getuser()
    return "user:" + "".join(c if c.isprintable() else "?" for c in name)[:64]


def _doc(verdict: Any, guard: Any) -> dict[str, Any]:
    since = guard.paused_since()
    return {
        "clock": "trusted" if verdict.trusted else "untrusted",
        "reason": verdict.reason,
        "note": verdict.note,
        "evidence": guard.describe_evidence(verdict, cached=False),
        "deletion_paused_since": iso(since) if since else None,
        "wall": iso(guard.clock.now()),
    }


def _print(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"clock: {doc['clock']}" + (f" ({doc['reason']})" if doc["reason"] else "") + "\n")
    w(f"wall clock: {doc['wall']}\n")
    if doc["evidence"]:
        w(f"evidence: {doc['evidence']}\n")
    if doc["note"]:
        w(f"note: {doc['note']}\n")
    if doc["deletion_paused_since"]:
        w(f"deletion paused since {doc['deletion_paused_since']}\n")


def _show(args: argparse.Namespace) -> int:
    from edge_agent.app.settings import janitor_settings
    from edge_agent.retention.janitor import Janitor

    cfg = load_cli_config(args.config)
    cat = open_cli_catalog(cfg)
    try:
        janitor = Janitor.from_settings(janitor_settings(cfg), cat)
        doc = _doc(janitor.guard.check(persist=False), janitor.guard)
    finally:
        cat.close()
    print_json(doc) if args.json else _print(doc)
    return EXIT_OK


def _accept(args: argparse.Namespace) -> int:
    from edge_agent.app.settings import janitor_settings
    from edge_agent.core.clock import SyncEvidence
    from edge_agent.retention.clockguard import ClockAcceptError
    from edge_agent.retention.janitor import Janitor

    reason = args.reason.strip()
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise CliError(
            f"--reason: give a printable reason of 1 to {MAX_REASON} characters "
            "(e.g. 'checked against the site's GPS clock')",
            EXIT_BAD_INPUT,
        )
    cfg = load_cli_config(args.config)
    cat = open_cli_catalog(cfg)
    who = _who()
    try:
        janitor = Janitor.from_settings(janitor_settings(cfg), cat)
        janitor.guard.actor = "cli"
        ev = SyncEvidence("installer", None, f"confirmed on site by {who.removeprefix('user:')}")
        try:
            verdict = janitor.guard.accept(actor=who, reason=reason, evidence=ev)
        except ClockAcceptError as exc:
            raise CliError(str(exc), EXIT_FAILURE) from None
        doc = _doc(verdict, janitor.guard)
    finally:
        cat.close()
    print_json(doc) if args.json else _print(doc)
    return EXIT_OK if verdict.trusted else EXIT_FAILURE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "clock",
        help="the clock guard: show its verdict, or confirm the wall clock on site",
        example="edge-agent clock show --config /etc/edge-agent/config.toml",
    )
    p = add_command(
        group,
        "show",
        help="whether deletion may trust the wall clock, why, and on what evidence",
        description=(
            "Judge the wall clock as the agent would (release date, newest recording, "
            "steps against CLOCK_BOOTTIME, sync evidence from the kernel, timesyncd or "
            "chrony) without changing anything."
        ),
        example="edge-agent clock show --json",
        func=_show,
    )
    add_config_arg(p)
    add_json_arg(p)
    p = add_command(
        group,
        "accept",
        help="confirm the wall clock after a step; audited with who and why",
        description=(
            "After checking the wall clock against a trusted reference, re-base the clock "
            "guard on it: deletion resumes at the daemon's next check. Refused when the "
            "clock reads before this release or before the newest recording (set it first)."
        ),
        example="sudo edge-agent clock accept --reason 'checked against the GPS clock'",
        func=_accept,
    )
    add_config_arg(p)
    p.add_argument("--reason", required=True, help="why the clock is right (audited)")
    add_json_arg(p)
