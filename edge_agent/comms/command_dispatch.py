"""Receive commands on ``cmd/+``, decide (pure :mod:`edge_agent.core.commands`), act, answer.

Receipt (event loop, no IO): a payload over the size limit is acknowledged at
once and only its size and hash are kept; the rest wait in one of two bounded
lanes, the first for messages that name a trusted key (so a signed command
is not stuck behind a flood of junk). A full lane means the message is
acknowledged and counted, never left unacknowledged: the broker's in-flight
window must not fill up. The signed lane has one worker of its own, so
signed commands are decided and run in the order they arrived; a fixed
number of workers share the other lane. Per message:

1. validate against the trusted keys, the device id, the clock and the replay
   memory (the ``commands`` table); whatever goes wrong is a rejection;
2. in one transaction: remember an authenticated accepted id until it expires,
   and audit ``command.accepted`` or ``command.rejected``;
3. only then acknowledge the PUBLISH to the broker (manual ack), so a crash
   before step 2 gets the command delivered again on the persistent session;
4. publish ``accepted``/``rejected`` on ``cmd-result/{cmd_id}`` (and on the
   MQTT 5 response topic with the correlation data, when it is under the
   reply prefix), best effort;
5. run it (one command at a time), store the result (``done`` or ``failed``)
   and publish it until the broker acknowledges it
   (:mod:`edge_agent.store.command_results`): the final answer survives an outage
   or a restart.

Only authenticated commands enter the replay memory: an unsigned or forged
message must not be able to burn the id of a real one. Unauthenticated
traffic (rejections and unsigned ``status``/``reload``) is rate limited: the
first few per window get a fixed-size audit record and an answer, the rest
are counted into one ``command.rejected_summary`` entry per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.comms.mqtt import InMessage, MqttLink, NotConnected
from edge_agent.core.command_limits import (
    DEFAULT_QUEUE,
    DEFAULT_WORKERS,
    MAX_PAYLOAD_BYTES,
    RejectionLimiter,
    RejectionSummary,
    check_reply_topic,
    default_reply_prefix,
    label,
)
from edge_agent.core.commands import (
    COMMAND_NAMES,
    ClockConfirmArgs,
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
from edge_agent.core.model import EraseRequest, HoldKind, RequestMode, iso, parse_ts
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.command_results import ResultStore, result_payload

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ClockHooks:
    """The clock guard as commands reach it (docs/design/time.md).

    ``offer(issued_at, what)``: every authenticated command's signed time, as
    evidence for the next check. ``confirm(issued_at, actor, reason, what)``:
    a ``clock-confirm`` command, run in a worker thread, returning its result.
    """

    offer: Callable[[datetime, str], None]
    confirm: Callable[[datetime, str, str, str], dict[str, Any]]


UNSIGNED_ACCEPTED = "accepted_unsigned"  # the limiter's name for unsigned status/reload


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    redelivered: CommandResult | None = None  # a broker re-delivery of a known command
    silent: bool = False  # over the rate: counted for the summary, no record, no answer
    summary: RejectionSummary | None = None  # a closed window to write


@dataclass(frozen=True)
class _Queued:
    msg: InMessage
    size: int
    # Set at receipt for a payload that was not kept (too large): its verdict and hash.
    verdict: Verdict | None = None
    digest: str | None = None


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
        clock: ClockHooks | None = None,
        max_payload: int = MAX_PAYLOAD_BYTES,
        queue_depth: int = DEFAULT_QUEUE,
        workers: int = DEFAULT_WORKERS,
        reply_prefix: str | None = None,
        limiter: RejectionLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self.max_payload = max_payload
        self.queue_depth = queue_depth
        self.workers = workers
        self.reply_prefix = reply_prefix or default_reply_prefix(topic_root)
        self._monotonic = monotonic
        self._limiter = limiter or RejectionLimiter()
        self._limit_lock = threading.Lock()  # receipt (loop) and workers (threads) share it
        self._summaries: list[RejectionSummary] = []
        # Signed-looking messages first; each lane bounded by queue_depth.
        self._lanes: tuple[deque[_Queued], deque[_Queued]] = (deque(), deque())
        self._ready = (asyncio.Semaphore(0), asyncio.Semaphore(0))
        self._exec_lock = asyncio.Lock()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.audit = AuditLog(catalog)
        self.results = ResultStore(catalog)
        self._wake = asyncio.Event()
        link.subscribe(f"{topic_root}/cmd/+", self._on_message, qos=1)
        link.on_connect(self._on_connect)

    async def run(self, stop: asyncio.Event) -> None:
        """Work the queue; publish stored results and rejection summaries when due."""
        workers = [asyncio.create_task(self._worker(0), name="command-worker-signed")]
        workers += [
            asyncio.create_task(self._worker(1), name=f"command-worker-{i}")
            for i in range(self.workers)
        ]
        try:
            while not stop.is_set():
                self._wake.clear()
                await self._flush()
                await self._write_summaries()
                # The timeout retries a publish the broker did not acknowledge in time.
                timeout = 30.0
                with self._limit_lock:
                    due = self._limiter.next_due(self._monotonic())
                if due is not None:
                    timeout = min(timeout, due + 0.05)
                waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
                try:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in waits:
                        t.cancel()
        finally:
            # Finish the messages being handled; queued ones were never acknowledged,
            # so the broker delivers them again on the persistent session.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 5.0)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with self._limit_lock:
                last = self._limiter.due(self._monotonic(), force=True)
            if last is not None:
                self._summaries.append(last)
            await self._write_summaries()
            await self._flush()

    async def _on_connect(self, _link: MqttLink) -> None:
        self._wake.set()

    async def _flush(self) -> None:
        if not self.link.connected:
            return
        for p in await asyncio.to_thread(self.results.pending):
            # A stored reply topic is checked again: rows written before the check
            # existed may hold one that paho refuses (a wildcard) or that is not ours.
            reply = p.response_topic
            if reply is not None and check_reply_topic(reply, self.reply_prefix) is not None:
                log.warning("result of command %s: stored response topic refused", p.cmd_id)
                reply = None
            try:
                ok = await self.link.publish_wait(
                    f"{self.root}/cmd-result/{p.cmd_id}", p.payload, qos=1
                )
                if ok and reply:
                    ok = await self.link.publish_wait(
                        reply, p.payload, qos=1, properties=_response_props(p.correlation)
                    )
            except NotConnected:
                return  # the next connection's hook wakes us
            except (ValueError, TypeError) as exc:
                # Never deliverable: retrying it on every start would be a crash loop.
                log.error("result of command %s cannot be published (%s); dropped",
                          label(p.cmd_id, 128), type(exc).__name__)  # fmt: skip
                ok = True
            if not ok:
                log.warning("result of command %s not acknowledged; will retry", p.cmd_id)
                return
            await asyncio.to_thread(self.results.mark_acked, p.cmd_id)

    async def _write_summaries(self) -> None:
        with self._limit_lock:
            due = self._limiter.due(self._monotonic())
        if due is not None:
            self._summaries.append(due)
        while self._summaries:
            summary = self._summaries.pop(0)
            now = self._now()
            try:
                await asyncio.to_thread(
                    self.audit.append,
                    "command.rejected_summary",
                    actor="mqtt",
                    data=summary.as_dict(),
                    ts=now,
                )
            except Exception:
                # A full catalog disk must not stop the commands component: the
                # summary is in the log line below and the storage alarm says why.
                log.exception("command.rejected_summary not written to the audit log")
            log.warning(
                "commands: %d more rejected without a record of their own in %.0f s: %s",
                sum(summary.counts.values()),
                summary.seconds,
                ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())),
            )

    # -- receipt: bounded, no IO ----------------------------------------------------

    def _on_message(self, msg: InMessage) -> None:
        size = len(msg.payload)
        too_large = size > self.max_payload
        # 0: names a trusted key (ordered, own worker); 1: everything else.
        which = 0 if not too_large and self._signed_looking(msg.payload) else 1
        lane = self._lanes[which]
        if too_large or len(lane) >= self.queue_depth:
            # Acknowledged at once: a full lane must never hold the broker's window.
            msg.ack()
        if len(lane) >= self.queue_depth:
            reason = Reason.TOO_LARGE if too_large else Reason.BUSY
            with self._limit_lock:
                closed = self._limiter.count(self._monotonic(), str(reason), size)
            self._keep(closed)
            return
        item = _Queued(msg, size)
        if too_large:
            # Not kept: only its size and hash, and a record within the rate.
            with self._limit_lock:
                admitted, closed = self._limiter.admit(
                    self._monotonic(), str(Reason.TOO_LARGE), size
                )
            self._keep(closed)
            if not admitted:
                return
            verdict = Verdict(
                None, Reason.TOO_LARGE, f"payload of {size} bytes (at most {self.max_payload})"
            )
            stub = dataclasses.replace(msg, payload=b"")
            item = _Queued(stub, size, verdict, _digest(msg.payload))
        lane.append(item)
        self._ready[which].release()

    def _signed_looking(self, payload: bytes) -> bool:
        # Cheap and only a priority: the worker still checks the signature.
        return any(kid.encode("ascii", "replace") in payload for kid in self.trusted)

    def _keep(self, summary: RejectionSummary | None) -> None:
        if summary is not None:
            self._summaries.append(summary)
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    async def _worker(self, which: int) -> None:
        while True:
            await self._ready[which].acquire()
            item = self._lanes[which].popleft()
            self._busy += 1
            self._idle.clear()
            try:
                if item.verdict is not None:
                    await self._reject_unkept(item)
                else:
                    await self.handle(item.msg)
            except Exception:
                log.exception("command worker failed on a message; acknowledged")
                item.msg.ack()
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    # -- the steps ---------------------------------------------------------------

    async def handle(self, msg: InMessage) -> CommandResult | None:
        """Decide, record, acknowledge, answer and run one message; never raises."""
        try:
            return await self._handle(msg)
        except Exception:
            # E.g. the catalog's disk is full: the verdict cannot be recorded. Still
            # acknowledged, so one message cannot hold the broker's window; logged
            # within the rejection rate, so a flood cannot fill the journal either.
            msg.ack()
            admitted, closed = self._admit(str(Reason.INTERNAL), len(msg.payload))
            self._keep(closed)
            if not admitted:
                return None
            log.exception("command message could not be handled; acknowledged")
            failed = CommandResult(
                id="unknown", state="rejected", reason=str(Reason.INTERNAL), ts=iso(self._now())
            )
            self._answer("unknown", failed, None, None)
            return failed

    async def _handle(self, msg: InMessage) -> CommandResult | None:
        name = msg.topic.rsplit("/", 1)[-1]
        now = self._now()
        reply_problem = check_reply_topic(msg.response_topic, self.reply_prefix)
        decision = await asyncio.to_thread(self._decide_and_record, msg, name, now, reply_problem)
        msg.ack()
        self._keep(decision.summary)
        verdict = decision.verdict
        cmd_id = verdict.cmd_id or "unknown"
        reply_to = msg.response_topic if reply_problem is None else None
        corr = msg.correlation_data
        if decision.redelivered is not None:
            self._answer(cmd_id, decision.redelivered, reply_to, corr)
            return decision.redelivered
        if decision.silent:
            return None
        detail = verdict.detail
        if verdict.accepted and reply_problem is not None:
            detail = f"response topic refused ({reply_problem}); answers only on cmd-result"
        first = CommandResult(
            id=cmd_id,
            name=verdict.envelope.name if verdict.envelope else None,
            state="accepted" if verdict.accepted else "rejected",
            reason=None if verdict.accepted else str(verdict.reason),
            detail=detail,
            ts=iso(now),
        )
        self._answer(cmd_id, first, reply_to, corr)
        if not verdict.accepted:
            log.warning("command rejected: %s (%s)", verdict.reason, verdict.detail)
            return first
        async with self._exec_lock:
            result = await self._execute(verdict)
        if verdict.key is not None:
            await asyncio.to_thread(self.results.store, result)
            self._wake.set()
        else:
            # Not in the replay memory, so nothing to store against: best effort.
            self._answer(cmd_id, result, reply_to, corr)
        return result

    async def _reject_unkept(self, item: _Queued) -> None:
        verdict = item.verdict
        assert verdict is not None and item.digest is not None
        msg = item.msg
        now = self._now()
        reply_problem = check_reply_topic(msg.response_topic, self.reply_prefix)
        name = msg.topic.rsplit("/", 1)[-1]
        data = _rejection_record(verdict, name, item.size, item.digest, reply_problem)
        await asyncio.to_thread(
            self.audit.append, "command.rejected", actor="mqtt", subject=None, data=data, ts=now
        )
        log.warning("command rejected: %s (%s)", verdict.reason, verdict.detail)
        answer = CommandResult(
            id="unknown", state="rejected", reason=str(verdict.reason), detail=verdict.detail,
            ts=iso(now),
        )  # fmt: skip
        reply_to = msg.response_topic if reply_problem is None else None
        self._answer("unknown", answer, reply_to, msg.correlation_data)

    def _admit(self, reason: str, size: int) -> tuple[bool, RejectionSummary | None]:
        with self._limit_lock:
            return self._limiter.admit(self._monotonic(), reason, size)

    def _decide_and_record(
        self, msg: InMessage, name: str, now: datetime, reply_problem: str | None
    ) -> Decision:
        cat = self.catalog
        digest = _digest(msg.payload)
        size = len(msg.payload)

        with cat.transaction():
            verdict = validate(
                msg.payload,
                topic_name=name,
                device_id=self.device_id,
                trusted=self.trusted,
                now=now,
                seen=self.results.known,
                max_payload=self.max_payload,
            )
            env = verdict.envelope
            if verdict.reason is Reason.REPLAYED and env is not None and msg.dup:
                stored = self.results.stored(env.id, digest)
                if stored is not None:
                    return Decision(verdict, redelivered=stored)
            summary = None
            if verdict.key is None:
                # Unauthenticated: anyone on the broker can send it, as fast as they like.
                reason = UNSIGNED_ACCEPTED if verdict.accepted else str(verdict.reason)
                admitted, summary = self._admit(reason, size)
                if not admitted:
                    return Decision(verdict, silent=True, summary=summary)
            if verdict.accepted and env is not None and verdict.key is not None:
                self.results.remember(
                    id=env.id,
                    name=env.name,
                    key_id=env.key_id,
                    digest=digest,
                    received=now,
                    expires=expiry_of(env),
                    response_topic=msg.response_topic if reply_problem is None else None,
                    correlation=msg.correlation_data if reply_problem is None else None,
                )
                data: dict[str, Any] = {
                    "topic": label(name),
                    "payload_sha256": digest,
                    "name": env.name,
                    "key_id": env.key_id,
                    "key": verdict.key.name,
                    "args": env.args,
                    "issued_at": env.issued_at,
                    "expires_at": env.expires_at,
                    "reply_topic": reply_problem,
                }
                self.audit.append(
                    "command.accepted",
                    actor=self._actor(verdict),
                    subject=env.id,
                    data=data,
                    ts=now,
                )
            elif verdict.accepted and env is not None:
                # Unsigned status/reload: a fixed-size record, and no id remembered.
                data = _rejection_record(verdict, name, size, digest, reply_problem)
                del data["reason"]
                self.audit.append("command.accepted", actor="mqtt", data=data, ts=now)
            else:
                self.audit.append(
                    "command.rejected",
                    actor=self._actor(verdict),
                    subject=env.id if env is not None and verdict.key is not None else None,
                    data=_rejection_record(verdict, name, size, digest, reply_problem),
                    ts=now,
                )
        return Decision(verdict, summary=summary)

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

    async def _check_location(self, location: str | None) -> None:
        # Footage outlives its place in the config: a removed location that still
        # holds recordings can be erased, restricted and held (docs/retention-policy.md).
        if location is None or self.locations is None or location in self.locations:
            return
        if await asyncio.to_thread(self.catalog.recordings.has_location, location):
            return
        known = ", ".join(sorted(self.locations)) or "none"
        raise ValueError(
            f"unknown location {location!r} (known: {known}, or one the catalog holds footage for)"
        )

    async def _run(self, name: str, verdict: Verdict, now: datetime) -> dict[str, Any]:
        args = verdict.args
        actor = self._actor(verdict)
        env = verdict.envelope
        if self._clock is not None and verdict.key is not None and env is not None:
            what = f"signed command {env.id} ({env.name}) from key {verdict.key.name}"
            issued = parse_ts(env.issued_at)
            if isinstance(args, ClockConfirmArgs):
                return await asyncio.to_thread(
                    self._clock.confirm, issued, actor, args.reason, what
                )
            self._clock.offer(issued, what)
        if isinstance(args, ClockConfirmArgs):
            raise ValueError("this agent has no clock guard to confirm")
        if name == "status":
            return await self._status() if self._status else {}
        if name == "reload":
            return await self._reload() if self._reload else {"reloaded": False}
        if isinstance(args, HoldArgs):
            from edge_agent.retention.holds import hold_doc, place_hold

            await self._check_location(args.location)
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
            from edge_agent.retention.holds import hold_doc, release_hold

            hold = await asyncio.to_thread(
                release_hold, self.catalog, args.hold_id, by=actor, reason=args.reason, now=now
            )
            return hold_doc(hold)
        if isinstance(args, EraseArgs):
            from edge_agent.retention.erasure import execute_request

            await self._check_location(args.location)
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

    def _answer(
        self,
        cmd_id: str,
        result: CommandResult,
        reply_to: str | None,
        correlation: bytes | None,
    ) -> None:
        payload = result_payload(result)
        try:
            self.link.publish(f"{self.root}/cmd-result/{cmd_id}", payload, qos=1)
            if reply_to:
                props = _response_props(correlation)
                self.link.publish(reply_to, payload, qos=1, properties=props)
        except NotConnected:
            log.warning(
                "%s answer to command %s not published: not connected", result.state, cmd_id
            )
        except (ValueError, TypeError) as exc:
            log.warning("%s answer to command %s not published (%s)", result.state, cmd_id,
                        type(exc).__name__)  # fmt: skip


def _rejection_record(
    verdict: Verdict, name: str, size: int, digest: str, reply_problem: str | None
) -> dict[str, Any]:
    """The fixed-size audit data of an unauthenticated or rejected message.

    Nothing the sender wrote is kept but bounded, checked values: the command
    name only if it is a known one, the key only if it is trusted, the topic's
    last level escaped and cut to a few characters; no ``detail``, no args.
    """
    env = verdict.envelope
    return {
        "reason": str(verdict.reason),
        "size": size,
        "payload_sha256": digest,
        "topic": label(name),
        "name": env.name if env is not None and env.name in COMMAND_NAMES else None,
        "key": verdict.key.name if verdict.key is not None else None,
        "reply_topic": reply_problem,
    }


def _response_props(correlation: bytes | None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if correlation is not None:
        props.CorrelationData = correlation
    return props
