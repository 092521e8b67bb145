"""The daemon's anonymization worker: one job at a time, at low priority.

docs/anonymization.md, "jobs" and "policy". One component owned by the
lifecycle's TaskGroup, one job at a time. A job runs as ``edge-agent
anonymize --job ID`` in its own process, niced (``[anonymize] nice``) with the
``[anonymize] threads`` bound: it never holds the daemon's interpreter lock,
its memory (onnxruntime, the model) is returned when it ends, and it dies with
the daemon (PR_SET_PDEATHSIG). With a config built in memory (no file to give
the child) the job runs in one niced thread instead; Linux threads are
scheduled on their own, and the detector's and codecs' threads inherit the
niceness of the thread that starts them. The worker waits while the clock is
untrusted or the disk is under pressure (core.anon_policy.pause_reason); a
running job is then stopped (SIGTERM: cancelled at the next frame) and queued
again. Interrupted jobs (a crash, a restart) are taken first. The [anonymize]
extra is imported only by the job, and this component is built only with
``[anonymize] enabled = true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.app.anon_job import JobOutcome, run_job
from edge_agent.config.config import Config
from edge_agent.core.anon_policy import AnonPolicy, pause_reason, policy_wants
from edge_agent.host.libc import libc
from edge_agent.store.catalog import Catalog

if TYPE_CHECKING:
    from edge_agent.app.status import AgentStatus
    from edge_agent.comms.command_dispatch import CommandDispatcher
    from edge_agent.intake.intake import Intake
    from edge_agent.retention.janitor import Janitor

log = logging.getLogger(__name__)

POLICY_MARK = "anon_policy_rowid"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def policy_of(cfg: Config) -> AnonPolicy:
    a = cfg.anonymize
    return AnonPolicy(a.on, a.days_before, tuple(a.purposes), tuple(a.locations))


class AnonWorker:
    name = "anonymizer"

    def __init__(
        self,
        catalog: Catalog,
        config: Callable[[], Config],
        *,
        intake: Intake,
        janitor: Janitor,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll: float = 5.0,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.intake = intake
        self.janitor = janitor
        self.now = now
        self.poll = poll
        self.paused: str | None = None
        self.current: int | None = None
        self._wake = asyncio.Event()
        self._pool: ThreadPoolExecutor | None = None

    def wake(self) -> None:
        """A job was queued (the command): look now rather than at the next poll."""
        self._wake.set()

    def pause_why(self) -> str | None:
        if not self.config().anonymize.enabled:
            return "[anonymize] disabled (a restart stops the worker)"
        last = self.janitor.last
        return pause_reason(
            clock_trusted=self.intake.clock_trusted,
            disk_pressure=bool(last and last.disk_pressure),
            storage_full=self.janitor.storage_full_held,
            storage_unavailable=last.storage_unavailable if last else None,
            free_bytes=last.free_bytes if last else None,
            floor_bytes=last.floor_bytes if last else None,
        )

    def jobs(self) -> list[dict[str, Any]]:
        """Queued and running jobs for the control socket (blocking: a catalog read)."""
        out = []
        for job in self.catalog.anon_jobs.open_jobs():
            doc = job.as_dict()
            if job.state == "running" and job.id != self.current:
                doc["state"] = "interrupted"
            if self.paused and job.state == "queued":
                doc["waiting"] = self.paused
            out.append(doc)
        return out

    def _niced(self) -> None:
        nice = self.config().anonymize.nice
        with contextlib.suppress(OSError):
            os.nice(nice)

    async def run(self, stop: asyncio.Event) -> None:
        self._pool = ThreadPoolExecutor(1, "anonymize", initializer=self._niced)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                self.paused = self.pause_why()
                job_id = None
                if self.paused is None:
                    job_id = await asyncio.to_thread(self._next)
                if job_id is not None:
                    self.current = job_id
                    try:
                        if self.config().path is not None:
                            state, reason = await self._run_process(job_id, stop)
                        else:  # a config built in memory (tests): a niced thread
                            out = await loop.run_in_executor(self._pool, self._run, job_id, stop)
                            state, reason = out.state, out.reason
                    finally:
                        self.current = None
                    log.info("anonymization job %s: %s (%s)", job_id, state, reason)
                    if state != "busy":  # busy: `edge-agent anonymize` runs it now
                        continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait(stop), self.poll)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def _wait(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()

    async def _run_process(self, job_id: int, stop: asyncio.Event) -> tuple[str, str]:
        """The job in its own process: no share of the event loop's interpreter
        lock, its memory returned when it ends, niced as a whole; SIGTERM when the
        daemon stops or must pause (the job is queued again), and it dies with
        the daemon (a SIGKILLed daemon leaves no job running: it resumes)."""
        cfg = self.config()
        nice = cfg.anonymize.nice

        def child() -> None:  # between fork and exec: only async-signal-safe calls
            os.nice(nice)
            with contextlib.suppress(OSError):
                libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_agent", "anonymize", "--job", str(job_id),
            "--config", str(cfg.path), "--by", "agent:anonymize",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=child,
        )  # fmt: skip
        output = asyncio.create_task(proc.communicate())
        try:
            while not output.done():
                if stop.is_set() or self.pause_why() is not None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                await asyncio.wait({output}, timeout=1.0)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await output
        stdout, _ = output.result()
        try:
            doc = json.loads(stdout or b"{}")
        except ValueError:
            doc = {}
        return str(doc.get("state", "failed")), str(doc.get("reason", f"exit {proc.returncode}"))

    def _run(self, job_id: int, stop: asyncio.Event) -> JobOutcome:
        # is_set and the janitor's last pass are plain reads: safe from this thread.
        def cancel() -> bool:
            return stop.is_set() or self.pause_why() is not None

        return run_job(
            self.catalog, self.config(), job_id, actor="agent:anonymize",
            cancel=cancel, gate=self.intake.gate, now=self.now,
        )  # fmt: skip

    def _next(self) -> int | None:
        """Queue what the policy asks for, then the next open job."""
        self.sweep()
        job = self.catalog.anon_jobs.next_open()
        return None if job is None else job.id

    def sweep(self) -> int:
        """Queue jobs the ``[anonymize]`` policy asks for; how many (blocking)."""
        policy = policy_of(self.config())
        if policy.on is None:
            return 0
        now, jobs, queued = self.now(), self.catalog.anon_jobs, 0
        if policy.on == "catalogued":
            mark = int(self.catalog.get_meta(POLICY_MARK) or 0)
            while True:
                recs, new_mark = jobs.candidates_added(mark)
                for rec in recs:
                    if policy_wants(policy, rec, now):
                        queued += jobs.enqueue(rec.id, requested_by="policy", origin="policy")[1]
                if new_mark == mark:
                    break
                mark = new_mark
                self.catalog.set_meta(POLICY_MARK, str(mark))
        else:
            horizon = now + timedelta(days=policy.days_before)
            for rec in jobs.candidates_due(now, horizon):
                if policy_wants(policy, rec, now):
                    queued += jobs.enqueue(rec.id, requested_by="policy", origin="policy")[1]
        return queued


class _AgentLike(Protocol):
    cfg: Config
    catalog: Catalog
    intake: Intake
    janitor: Janitor
    status: AgentStatus
    dispatcher: CommandDispatcher | None

    def now(self) -> datetime: ...


def attach(agent: _AgentLike) -> AnonWorker:
    """The worker for ``agent`` (app/daemon.py), its jobs shown on the control socket."""
    worker = AnonWorker(
        agent.catalog,
        lambda: agent.cfg,
        intake=agent.intake,
        janitor=agent.janitor,
        now=agent.now,
    )
    agent.status.jobs = worker.jobs
    if agent.dispatcher is not None:
        agent.dispatcher.anonymize_queued = worker.wake
    return worker
