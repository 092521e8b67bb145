"""Receive commands on ``cmd/+``, decide (pure :mod:`edge_agent.commands`), act, answer.

Order for every message, one at a time:

1. validate against the trusted keys, the device id, the clock and the replay
   memory (the ``commands`` table);
2. in one transaction: remember an accepted id until it expires, and audit
   ``command.accepted`` or ``command.rejected`` with the reason;
3. only then acknowledge the PUBLISH to the broker (manual ack), so a crash
   before step 2 gets the command delivered again on the persistent session;
4. publish ``accepted``/``rejected`` on ``cmd-result/{cmd_id}`` (and on the
   MQTT 5 response topic with the correlation data, when given), best effort;
5. run it, store the result (``done`` or ``failed``) with the id, and publish
   it until the broker acknowledges it (:mod:`edge_agent.command_results`):
   the final answer survives an outage or a restart.

Only authenticated commands enter the replay memory: an unsigned or forged
message must not be able to burn the id of a real one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.audit import AuditLog
from edge_agent.catalog import Catalog, to_epoch
from edge_agent.command_results import ResultStore, result_payload
from edge_agent.commands import (
    CommandResult,
    EraseArgs,
    HoldArgs,
    Reason,
    ReleaseArgs,
    TrustedKey,
    Verdict,
    expiry_of,
    validate,
)
from edge_agent.model import EraseRequest, HoldKind, RequestMode, iso, parse_ts
from edge_agent.mqtt import InMessage, MqttLink, NotConnected

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    redelivered: CommandResult | None = None  # a broker re-delivery of a known command


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


class CommandDispatcher:
    """A daemon component: subscribes on construction, ``await run(stop)``."""

    name = "commands"

    def __init__(
        self,
        catalog: Catalog,
        link: MqttLink,
        topic_root: str,
        *,
        device_id: str,
        trusted: Mapping[str, TrustedKey],
        storage_root: Path,
        now: Callable[[], datetime],
        locations: frozenset[str] | None = None,
        status: StatusProvider | None = None,
        reload: StatusProvider | None = None,
    ) -> None:
        self.catalog = catalog
        self.link = link
        self.root = topic_root
        self.device_id = device_id
        self.trusted = dict(trusted)
        self.storage_root = storage_root
        self._now = now
        self.locations = locations
        self._status = status
        self._reload = reload
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[CommandResult]] = set()
        self.audit = AuditLog(catalog)
        self.results = ResultStore(catalog)
        self._wake = asyncio.Event()
        link.subscribe(f"{topic_root}/cmd/+", self._on_message, qos=1)
        link.on_connect(self._on_connect)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish stored results whenever there are new ones or the link comes back."""
        while not stop.is_set():
            self._wake.clear()
            await self._flush()
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
            try:
                # The timeout retries a publish the broker did not acknowledge in time.
                await asyncio.wait(waits, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in waits:
                    t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        await self._flush()

    async def _on_connect(self, _link: MqttLink) -> None:
        self._wake.set()

    async def _flush(self) -> None:
        if not self.link.connected:
            return
        for p in await asyncio.to_thread(self.results.pending):
            try:
                ok = await self.link.publish_wait(
                    f"{self.root}/cmd-result/{p.cmd_id}", p.payload, qos=1
                )
                if ok and p.response_topic:
                    ok = await self.link.publish_wait(
                        p.response_topic,
                        p.payload,
                        qos=1,
                        properties=_response_props(p.correlation),
                    )
            except NotConnected:
                return  # the next connection's hook wakes us
            if not ok:
                log.warning("result of command %s not acknowledged; will retry", p.cmd_id)
                return
            await asyncio.to_thread(self.results.mark_acked, p.cmd_id)

    def _on_message(self, msg: InMessage) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(msg), name="command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the steps ---------------------------------------------------------------

    async def handle(self, msg: InMessage) -> CommandResult:
        async with self._lock:
            name = msg.topic.rsplit("/", 1)[-1]
            now = self._now()
            decision = await asyncio.to_thread(self._decide_and_record, msg, name, now)
            msg.ack()
            verdict = decision.verdict
            cmd_id = verdict.cmd_id or "unknown"
            if decision.redelivered is not None:
                self._answer(msg, cmd_id, decision.redelivered)
                return decision.redelivered
            first = CommandResult(
                id=cmd_id,
                name=verdict.envelope.name if verdict.envelope else None,
                state="accepted" if verdict.accepted else "rejected",
                reason=None if verdict.accepted else str(verdict.reason),
                detail=verdict.detail,
                ts=iso(now),
            )
            self._answer(msg, cmd_id, first)
            if not verdict.accepted:
                log.warning("command %s rejected: %s (%s)", cmd_id, verdict.reason, verdict.detail)
                return first
            result = await self._execute(verdict)
            await asyncio.to_thread(self.results.store, result)
            self._wake.set()
            return result

    def _decide_and_record(self, msg: InMessage, name: str, now: datetime) -> Decision:
        cat = self.catalog
        digest = _digest(msg.payload)
        with cat.transaction():
            # Expired ids are forgotten an hour on; an unacknowledged result is kept
            # for a week in case the dashboard is away that long.
            cat.execute(
                "DELETE FROM commands WHERE expires_at < ? AND (result_acked = 1 OR "
                "result IS NULL OR expires_at < ?)",
                (to_epoch(now) - 3600, to_epoch(now) - 7 * 86400),
            )

            def seen(cmd_id: str) -> bool:
                return bool(cat.query("SELECT 1 FROM commands WHERE id = ?", (cmd_id,)))

            verdict = validate(
                msg.payload,
                topic_name=name,
                device_id=self.device_id,
                trusted=self.trusted,
                now=now,
                seen=seen,
            )
            env = verdict.envelope
            if verdict.reason is Reason.REPLAYED and env is not None and msg.dup:
                stored = self._stored_result(env.id, digest)
                if stored is not None:
                    return Decision(verdict, redelivered=stored)
            data: dict[str, Any] = {
                "topic": msg.topic,
                "payload_sha256": digest,
                "name": env.name if env else name,
                "key_id": env.key_id if env else None,
                "key": verdict.key.name if verdict.key else None,
            }
            if verdict.accepted and env is not None:
                cat.execute(
                    "INSERT INTO commands (id, name, key_id, digest, received_at, expires_at, "
                    "state, response_topic, correlation) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'accepted', ?, ?)",
                    (
                        env.id,
                        env.name,
                        env.key_id,
                        digest,
                        to_epoch(now),
                        to_epoch(expiry_of(env)),
                        msg.response_topic,
                        msg.correlation_data,
                    ),
                )
                data.update(args=env.args, issued_at=env.issued_at, expires_at=env.expires_at)
                self.audit.append(
                    "command.accepted",
                    actor=self._actor(verdict),
                    subject=env.id,
                    data=data,
                    ts=now,
                )
            else:
                data.update(reason=str(verdict.reason), detail=verdict.detail)
                self.audit.append(
                    "command.rejected",
                    actor="mqtt",
                    subject=env.id if env else None,
                    data=data,
                    ts=now,
                )
        return Decision(verdict)

    def _stored_result(self, cmd_id: str, digest: str) -> CommandResult | None:
        rows = self.catalog.query("SELECT digest, result FROM commands WHERE id = ?", (cmd_id,))
        if not rows or rows[0][0] != digest or rows[0][1] is None:
            return None
        return CommandResult.model_validate_json(rows[0][1])

    @staticmethod
    def _actor(verdict: Verdict) -> str:
        return f"key:{verdict.key.name}" if verdict.key else "mqtt"

    # -- running a command ------------------------------------------------------------

    async def _execute(self, verdict: Verdict) -> CommandResult:
        env = verdict.envelope
        assert env is not None
        now = self._now()
        try:
            result = await self._run(env.name, verdict, now)
        except (ValueError, KeyError, LookupError) as exc:
            # HoldError and bad windows are ValueErrors: the command was sound but
            # cannot be carried out as asked.
            log.warning("command %s (%s) failed: %s", env.id, env.name, exc)
            return CommandResult(
                id=env.id, name=env.name, state="failed", reason=str(exc), ts=iso(self._now())
            )
        except Exception as exc:
            log.exception("command %s (%s) failed unexpectedly", env.id, env.name)
            return CommandResult(
                id=env.id,
                name=env.name,
                state="failed",
                reason=f"{type(exc).__name__}: {exc}",
                ts=iso(self._now()),
            )
        return CommandResult(id=env.id, name=env.name, state="done", result=result, ts=iso(now))

    def _check_location(self, location: str | None) -> None:
        if location is not None and self.locations is not None and location not in self.locations:
            known = ", ".join(sorted(self.locations)) or "none"
            raise ValueError(f"unknown location {location!r} (known: {known})")

    async def _run(self, name: str, verdict: Verdict, now: datetime) -> dict[str, Any]:
        args = verdict.args
        actor = self._actor(verdict)
        if name == "status":
            return await self._status() if self._status else {}
        if name == "reload":
            return await self._reload() if self._reload else {"reloaded": False}
        if isinstance(args, HoldArgs):
            from edge_agent.holds import hold_doc, place_hold

            self._check_location(args.location)
            hold = await asyncio.to_thread(
                place_hold,
                self.catalog,
                kind=HoldKind(args.kind),
                reason=args.reason,
                by=actor,
                now=now,
                recording_ids=args.recording_ids,
                location=args.location,
                start=_opt_ts(args.start),
                end=_opt_ts(args.end),
                until=_opt_ts(args.until),
            )
            return hold_doc(hold)
        if isinstance(args, ReleaseArgs):
            from edge_agent.holds import hold_doc, release_hold

            hold = await asyncio.to_thread(
                release_hold, self.catalog, args.hold_id, by=actor, reason=args.reason, now=now
            )
            return hold_doc(hold)
        if isinstance(args, EraseArgs):
            from edge_agent.erasure import execute_request

            self._check_location(args.location)
            req = EraseRequest(
                ref=args.ref,
                location=args.location,
                start=parse_ts(args.start),
                end=parse_ts(args.end),
                mode=RequestMode.RESTRICT if name == "restrict" else RequestMode.ERASE,
            )
            receipt = await asyncio.to_thread(
                execute_request,
                self.catalog,
                self.storage_root,
                req,
                dry_run=args.dry_run,
                actor=actor,
                now=now,
            )
            doc: dict[str, Any] = receipt.as_dict()
            return doc
        raise ValueError(f"command {name!r} has no handler")

    # -- answering ------------------------------------------------------------------

    def _answer(self, msg: InMessage, cmd_id: str, result: CommandResult) -> None:
        payload = result_payload(result)
        try:
            self.link.publish(f"{self.root}/cmd-result/{cmd_id}", payload, qos=1)
            if msg.response_topic:
                props = _response_props(msg.correlation_data)
                self.link.publish(msg.response_topic, payload, qos=1, properties=props)
        except NotConnected:
            log.warning(
                "%s answer to command %s not published: not connected", result.state, cmd_id
            )


def _response_props(correlation: bytes | None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if correlation is not None:
        props.CorrelationData = correlation
    return props
