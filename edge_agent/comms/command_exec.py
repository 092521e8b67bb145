"""Carrying out a verified command: holds, erasure, anonymization, clock, status.

The dispatcher (command_dispatch.py) decides whether a message is a command
this device accepts; this module runs it against the catalog and answers with
a :class:`CommandResult` whatever happens (docs/mqtt.md, "Commands").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.core.commands import (
    AnonymizeArgs,
    ClockConfirmArgs,
    CommandResult,
    EraseArgs,
    HoldArgs,
    ReleaseArgs,
    Verdict,
)
from edge_agent.core.model import EraseRequest, HoldKind, RequestMode, iso, parse_ts
from edge_agent.store.catalog import Catalog

log = logging.getLogger(__name__)

__all__ = ["ClockHooks", "CommandExecutor", "StatusProvider"]

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


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


class CommandExecutor:
    """Runs verified commands; one per dispatcher."""

    def __init__(
        self,
        catalog: Catalog,
        storage_root: Path,
        *,
        now: Callable[[], datetime],
        locations: frozenset[str] | None = None,
        status: StatusProvider | None = None,
        reload: StatusProvider | None = None,
        clock: ClockHooks | None = None,
    ) -> None:
        self.catalog = catalog
        self.storage_root = storage_root
        self._now = now
        self.locations = locations
        # The anonymization worker's wake-up; None: [anonymize] is off and the
        # command fails (app/anon_worker.py sets it).
        self.anonymize_queued: Callable[[], None] | None = None
        self._status = status
        self._reload = reload
        self._clock = clock

    @staticmethod
    def _actor(verdict: Verdict) -> str:
        return f"key:{verdict.key.name}" if verdict.key else "mqtt"

    async def execute(self, verdict: Verdict) -> CommandResult:
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
                keep_derivatives=args.keep_derivatives,
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
        if isinstance(args, AnonymizeArgs):
            return await self._anonymize(args, actor, now)
        raise ValueError(f"command {name!r} has no handler")

    async def _anonymize(self, args: AnonymizeArgs, actor: str, now: datetime) -> dict[str, Any]:
        """Queue jobs for the daemon's worker (docs/anonymization.md); the answer lists them."""
        from edge_agent.core.anon_policy import choose

        if self.anonymize_queued is None:
            raise ValueError("anonymization is not enabled on this device ([anonymize] enabled)")
        await self._check_location(args.location)

        def queue() -> dict[str, Any]:
            recs = self.catalog.recordings
            if args.location is not None:
                found = recs.overlapping(
                    args.location, parse_ts(args.start or ""), parse_ts(args.end or "")
                )
                missing: list[dict[str, str]] = []
            else:
                got = {i: recs.get(i) for i in args.recording_ids}
                found = [r for r in got.values() if r is not None]
                missing = [{"id": i, "why": "not in the catalog"} for i, r in got.items() if not r]
            chosen, refused = choose(found, now)
            jobs = []
            if not args.dry_run:
                for rec in chosen:
                    job, _ = self.catalog.anon_jobs.enqueue(
                        rec.id, requested_by=actor, origin="command"
                    )
                    jobs.append({"job": job.id, "recording_id": rec.id, "state": job.state})
            return {
                "dry_run": args.dry_run,
                "would_anonymize": [r.id for r in chosen] if args.dry_run else [],
                "queued": jobs,
                "refused": missing + refused,
            }

        doc = await asyncio.to_thread(queue)
        if doc["queued"]:
            self.anonymize_queued()
        return doc
