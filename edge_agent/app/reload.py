"""Config reload (SIGHUP, or the ``reload`` command): what changed, what can change live.

:func:`plan_reload` is pure: it compares the running config with a freshly
loaded one and says which sources and watches to start, stop or restart, and
which changes only a restart can apply. :func:`effective_config` is what the
daemon then runs: the new file, except for the sections that need a restart,
which keep their running values so that nothing runs half old, half new (a
recorder must not tag footage with a device id the catalog does not know).

:class:`Reloader` is the IO side: load, validate, apply through the daemon's
callback, audit the outcome (``config.reloaded`` / ``config.reload_rejected``)
and tell systemd (``RELOADING=1``, then ``READY=1``). An invalid file never
replaces a working config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.config.config import Config, ConfigError, load_config
from edge_agent.host import sdnotify
from edge_agent.intake.runtime import origin_for_source, origin_for_watch
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog
from edge_agent.store.outbox_store import Outbox

log = logging.getLogger(__name__)

__all__ = ["RESTART_SECTIONS", "ReloadPlan", "Reloader", "effective_config", "plan_reload"]

# Sections only a restart applies: the catalog, the storage layout, the broker
# session and the live-view listener are opened once; retention and clock settings
# are baked into the intake and the janitor.
RESTART_SECTIONS = ("device", "storage", "mqtt", "liveview", "retention", "clock")


@dataclass
class ReloadPlan:
    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    sources_changed: list[str] = field(default_factory=list)
    watches_added: list[str] = field(default_factory=list)
    watches_removed: list[str] = field(default_factory=list)
    watches_changed: list[str] = field(default_factory=list)
    trusted_keys_changed: bool = False
    needs_restart: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.sources_added
            or self.sources_removed
            or self.sources_changed
            or self.watches_added
            or self.watches_removed
            or self.watches_changed
            or self.trusted_keys_changed
            or self.needs_restart
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources_added": self.sources_added,
            "sources_removed": self.sources_removed,
            "sources_changed": self.sources_changed,
            "watches_added": self.watches_added,
            "watches_removed": self.watches_removed,
            "watches_changed": self.watches_changed,
            "trusted_keys_changed": self.trusted_keys_changed,
            "needs_restart": self.needs_restart,
        }

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(ids)}"
            for label, ids in (
                ("sources added:", self.sources_added),
                ("sources removed:", self.sources_removed),
                ("sources changed:", self.sources_changed),
                ("watches added:", self.watches_added),
                ("watches removed:", self.watches_removed),
                ("watches changed:", self.watches_changed),
            )
            if ids
        ]
        if self.trusted_keys_changed:
            parts.append("trusted keys changed")
        if self.needs_restart:
            parts.append(f"needs a restart to apply: {', '.join(self.needs_restart)}")
        return "; ".join(parts) or "no changes"


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two configs (pure)."""
    plan = ReloadPlan()
    for section in RESTART_SECTIONS:
        if getattr(old, section) != getattr(new, section):
            plan.needs_restart.append(section)
    # The restart-only sections keep their running values: compare what will run.
    eff = effective_config(old, new)
    old_src = {s.id: (s, origin_for_source(old, s)) for s in old.sources}
    new_src = {s.id: (s, origin_for_source(eff, s)) for s in eff.sources}
    plan.sources_added = [i for i in new_src if i not in old_src]
    plan.sources_removed = [i for i in old_src if i not in new_src]
    plan.sources_changed = [i for i in new_src if i in old_src and new_src[i] != old_src[i]]
    old_w = {str(w.path): (w, origin_for_watch(old, w)) for w in old.watch}
    new_w = {str(w.path): (w, origin_for_watch(eff, w)) for w in eff.watch}
    plan.watches_added = [p for p in new_w if p not in old_w]
    plan.watches_removed = [p for p in old_w if p not in new_w]
    plan.watches_changed = [p for p in new_w if p in old_w and new_w[p] != old_w[p]]
    plan.trusted_keys_changed = old.commands != new.commands
    return plan


def effective_config(old: Config, new: Config) -> Config:
    """``new`` with the restart-only sections taken from ``old``."""
    eff = new.model_copy(update={s: getattr(old, s) for s in RESTART_SECTIONS})
    # The hardware profile belongs to the device section: keep the running one.
    eff._profile = old._profile
    return eff


Apply = Callable[[Config, ReloadPlan], Awaitable[None]]


class Reloader:
    """Serialises reloads; returns a document for logs and the ``reload`` command."""

    def __init__(
        self,
        catalog: Catalog,
        current: Callable[[], Config],
        apply: Apply,
        *,
        now: Callable[[], datetime],
        validate: Callable[[Config], None] | None = None,
        ready_status: Callable[[], str] | None = None,
    ) -> None:
        self.catalog = catalog
        self._current = current
        self._apply = apply
        self._now = now
        self._validate = validate
        self._ready_status = ready_status
        self._lock = asyncio.Lock()

    async def reload(self, actor: str = "signal:SIGHUP") -> dict[str, Any]:
        async with self._lock:
            sdnotify.reloading()
            try:
                return await self._reload(actor)
            finally:
                sdnotify.ready(self._ready_status() if self._ready_status else None)

    async def _reload(self, actor: str) -> dict[str, Any]:
        old = self._current()
        path = old.path
        if path is None:
            return {"reloaded": False, "reason": "the config was not loaded from a file"}
        try:
            fresh = await asyncio.to_thread(load_config, path)
            if self._validate is not None:
                self._validate(fresh)
        except ConfigError as exc:
            problems = list(exc.problems) or [str(exc)]
            log.error("config reload rejected, the running config stays: %s", path)
            for line in problems:
                log.error("  %s", line)
            await self._record(
                "config.reload_rejected", {"config": str(path), "problems": problems}, actor
            )
            return {"reloaded": False, "reason": "; ".join(problems), "problems": problems}
        plan = plan_reload(old, fresh)
        await self._apply(effective_config(old, fresh), plan)
        level = logging.WARNING if plan.needs_restart else logging.INFO
        log.log(level, "config reloaded from %s: %s", path, plan.summary())
        doc = {"config": str(path), **plan.as_dict()}
        await self._record("config.reloaded", doc, actor)
        return {"reloaded": True, "restart_needed": bool(plan.needs_restart), **doc}

    async def _record(self, action: str, data: dict[str, Any], actor: str) -> None:
        now = self._now()

        def write() -> None:
            with self.catalog.transaction():
                AuditLog(self.catalog).append(action, actor=actor, subject=None, data=data, ts=now)
                Outbox(self.catalog).enqueue(action, data, ts=now)

        try:
            await asyncio.to_thread(write)
        except Exception:
            log.exception("cannot record %s in the audit log", action)
