"""Command results the dashboard must get: stored first, published until acknowledged.

A command's final result is written to its row in the replay memory
(``commands``) and stays unacknowledged until a QoS 1 PUBLISH of it has been
acknowledged by the broker. Pending results are sent again after an outage or
a restart: at-least-once, which a dashboard de-duplicates by command id and
state, like events.

A command accepted but never finished, because the agent stopped on the way,
is closed at start-up as ``failed`` with reason ``interrupted`` and audited,
not run again: its handler may have half-run, and only the operator knows
whether sending it again is right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from edge_agent.core.commands import CommandResult
from edge_agent.core.model import iso
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.rows import to_epoch

INTERRUPTED = "interrupted: the agent stopped before the command finished; see the audit log"


def result_payload(result: CommandResult) -> str:
    """The one wire form of a result (stable key order, no spaces)."""
    return json.dumps(result.model_dump(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PendingResult:
    cmd_id: str
    payload: str
    response_topic: str | None
    correlation: bytes | None


class ResultStore:
    """The durable side of command results (blocking: call from a worker thread)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- the replay memory (comms/command_dispatch.py) ----------------------------

    def known(self, cmd_id: str) -> bool:
        """Whether a signed command with this id was accepted and is still remembered."""
        return bool(self.catalog.query("SELECT 1 FROM commands WHERE id = ?", (cmd_id,)))

    def remember(
        self,
        *,
        id: str,
        name: str,
        key_id: str | None,
        digest: str,
        received: datetime,
        expires: datetime,
        response_topic: str | None,
        correlation: bytes | None,
    ) -> None:
        """Record an accepted signed command, forgetting the ones long expired first.

        Expired ids are forgotten an hour on; an unacknowledged result is kept for a
        week in case the dashboard is away that long.
        """
        now = to_epoch(received)
        self.catalog.execute(
            "DELETE FROM commands WHERE expires_at < ? AND (result_acked = 1 OR "
            "result IS NULL OR expires_at < ?)",
            (now - 3600, now - 7 * 86400),
        )
        self.catalog.execute(
            "INSERT INTO commands (id, name, key_id, digest, received_at, expires_at, "
            "state, response_topic, correlation) "
            "VALUES (?, ?, ?, ?, ?, ?, 'accepted', ?, ?)",
            (id, name, key_id, digest, now, to_epoch(expires), response_topic, correlation),
        )

    def stored(self, cmd_id: str, digest: str) -> CommandResult | None:
        """The stored result of ``cmd_id`` if its payload had this digest (a redelivery)."""
        rows = self.catalog.query("SELECT digest, result FROM commands WHERE id = ?", (cmd_id,))
        if not rows or rows[0][0] != digest or rows[0][1] is None:
            return None
        return CommandResult.model_validate_json(rows[0][1])

    # -- results ------------------------------------------------------------------

    def store(self, result: CommandResult) -> None:
        self.catalog.execute(
            "UPDATE commands SET state = ?, reason = ?, result = ?, result_acked = 0 WHERE id = ?",
            (result.state, result.reason, result.model_dump_json(), result.id),
        )

    def pending(self, limit: int = 100) -> list[PendingResult]:
        """Unacknowledged results, oldest command first."""
        rows = self.catalog.query(
            "SELECT id, result, response_topic, correlation FROM commands "
            "WHERE result IS NOT NULL AND result_acked = 0 ORDER BY received_at LIMIT ?",
            (limit,),
        )
        return [
            PendingResult(
                row[0],
                result_payload(CommandResult.model_validate_json(row[1])),
                row[2],
                bytes(row[3]) if row[3] is not None else None,
            )
            for row in rows
        ]

    def mark_acked(self, cmd_id: str) -> None:
        self.catalog.execute("UPDATE commands SET result_acked = 1 WHERE id = ?", (cmd_id,))

    def close_interrupted(self, now: datetime, *, actor: str = "agent") -> list[str]:
        """Fail and audit every accepted command without a result (start-up only)."""
        audit = AuditLog(self.catalog)
        closed: list[str] = []
        with self.catalog.transaction():
            rows = self.catalog.query(
                "SELECT id, name FROM commands WHERE state = 'accepted' AND result IS NULL"
            )
            for cmd_id, name in rows:
                result = CommandResult(
                    id=cmd_id, name=name, state="failed", reason=INTERRUPTED, ts=iso(now)
                )
                self.store(result)
                audit.append(
                    "command.interrupted",
                    actor=actor,
                    subject=cmd_id,
                    data={"name": name, "reason": INTERRUPTED},
                    ts=now,
                )
                closed.append(cmd_id)
        return closed
