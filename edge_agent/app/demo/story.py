"""The demo's story: each rule of the privacy notice, and what the agent did about it.

Every step prints a title, what the notice says and what happened, and adds an
``outcome`` (plain data) to the ``--json`` document, so a test checks the
outcomes rather than the prose. Operator actions (holds, erasure, export,
sweeps) run as the real CLI in a subprocess, the commands an installer would
type; recording and adoption run in-process, the way the daemon does them.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from edge_agent.app.demo.clips import face_clip, make_clip, still_jpeg
from edge_agent.app.demo.events import broker_answers, demo_broker, publish_local
from edge_agent.app.settings import janitor_settings, source_plans
from edge_agent.config.config import Config, load_config
from edge_agent.core.model import Purpose, Recording, iso, utcnow
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, Outcome
from edge_agent.intake.runtime import intake_settings, origin_for, origin_for_watch
from edge_agent.media import media
from edge_agent.store.audit import AuditLog
from edge_agent.store.catalog import Catalog, open_catalog_from_config
from edge_agent.store.outbox_store import Outbox

__all__ = ["CONFIG", "Demo"]

CONFIG = """\
# Written by `edge-agent demo`.
[device]
id = "gw-demo-01"
hw_profile = "generic-linux"

[storage]
root = "{root}/recordings"
catalog = "{root}/state/catalog.db"
free_space_floor = "1MiB"

[[locations]]
id = "lab-audio-1"
kind = "premises"
audio_room = true
signage = true

[[locations]]
id = "gate"
kind = "premises"
signage = true

[[locations]]
id = "street"
kind = "external"
signage = true

[[sources]]
id = "cam-lab-1"
url = "testsrc://?size=640x360&rate=15&bitrate=600k&tone=1"
location = "lab-audio-1"
purpose = "rnd"
audio = true
segment_seconds = {segment}

[[sources]]
id = "cam-gate-1"
url = "testsrc://?size=640x360&rate=15&bitrate=600k&tone=1"
location = "gate"
purpose = "security"
audio = true
segment_seconds = {segment}

[[watch]]
path = "{root}/drop/gate"
location = "gate"
purpose = "security"
stable_seconds = 1

[[watch]]
path = "{root}/drop/lab"
location = "lab-audio-1"
purpose = "rnd"
stable_seconds = 1

[liveview]
listen = "127.0.0.1:{port}"
token_file = "{root}/liveview.token"
"""


class Demo:
    def __init__(
        self,
        workdir: Path,
        out: TextIO = sys.stdout,
        record_seconds: float = 12,
        *,
        keep: bool = False,
        port: int = 8088,
    ) -> None:
        self.workdir = workdir
        self.out = out
        self.record_seconds = record_seconds
        self.keep = keep
        self.port = port
        self.steps: list[dict[str, Any]] = []
        self.cfg_path = workdir / "config.toml"
        self.now = utcnow()
        self._ids: dict[str, str] = {}  # clip name -> recording id
        self._quarantined = 0

    # -- output ---------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str, notice: str, run: Callable[[], dict[str, Any]]) -> None:
        n = len(self.steps) + 1
        self.say(f"\n== {n}. {title}")
        self.say(f"   notice: {notice}")
        t0 = time.monotonic()
        outcome = run()
        self.steps.append(
            {
                "n": n,
                "title": title,
                "notice": notice,
                "seconds": round(time.monotonic() - t0, 2),
                "outcome": outcome,
            }
        )

    def cli(self, *args: str) -> dict[str, Any]:
        """One CLI command with ``--json``, as an operator would run it; its JSON answer."""
        cmd = [sys.executable, "-m", "edge_agent", *args, "--config", str(self.cfg_path), "--json"]
        self.say("   $ edge-agent " + " ".join(_quote(a) for a in args))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        try:
            doc: Any = json.loads(done.stdout) if done.stdout.strip() else {}
        except ValueError:
            doc = {"output": done.stdout}
        answer: dict[str, Any] = doc if isinstance(doc, dict) else {"items": doc}
        answer["exit_code"] = done.returncode
        if done.returncode not in (0, 1):
            answer["error"] = done.stderr.strip()[-400:]
            self.say(f"   failed: {answer['error']}")
        return answer

    # -- the story --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        segment = max(2, min(10, int(self.record_seconds / 2) or 2))
        (self.workdir / "liveview.token").write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(self.workdir / "liveview.token", 0o600)
        self.cfg_path.write_text(
            CONFIG.format(root=self.workdir, segment=segment, port=self.port), encoding="utf-8"
        )
        cfg = load_config(self.cfg_path)
        for w in cfg.watch:
            w.path.mkdir(parents=True, exist_ok=True)
        (self.workdir / "recordings").mkdir(exist_ok=True)
        self.say(f"edge-agent demo in {self.workdir} (config: {self.cfg_path})")
        started = time.monotonic()
        with open_catalog_from_config(cfg) as catalog:
            self.step(
                "Two cameras and a watched folder",
                "audio is recorded only in rooms marked as audio rooms",
                lambda: self._cameras(cfg, catalog),
            )
            self.step(
                "Footage made outside the premises",
                "R&D and marketing footage made outside is kept at most 2 months",
                lambda: self._outside(cfg, catalog),
            )
        self.step(
            "A hold on an incident, then a retention sweep",
            "security footage goes after 3 days, unless it is needed for an incident",
            self._hold_and_sweep,
        )
        self.step(
            "An erase request and a restrict request",
            "people may ask for their footage to be erased or its use restricted",
            self._erase_and_restrict,
        )
        with open_catalog_from_config(cfg) as catalog:
            self.step(
                "An anonymized derivative",
                "recorded material is anonymized; anonymized material has no time limit",
                lambda: self._anonymize(cfg, catalog),
            )
        self.step(
            "An export with a signed manifest",
            "footage is shown only to those who need it, and its deadline travels with it",
            self._export,
        )
        with open_catalog_from_config(cfg) as catalog:
            self.step(
                "The clock set back to 1970 for one sweep",
                "deletion is on time only if the device knows the time",
                lambda: self._clock_1970(cfg, catalog),
            )
        self.step(
            "The installer's console",
            "(the device shows its state to the people who install it)",
            self._console,
        )
        with open_catalog_from_config(cfg) as catalog:
            self.step(
                "Compliance summary",
                "every rule above holds, and the audit log proves it",
                lambda: self._summary(cfg, catalog),
            )
        return {
            "workdir": str(self.workdir),
            "config": str(self.cfg_path),
            "steps": self.steps,
            "seconds": round(time.monotonic() - started, 1),
        }

    # -- 1 ----------------------------------------------------------------------------------

    def _cameras(self, cfg: Config, catalog: Catalog) -> dict[str, Any]:
        if self.record_seconds > 0:
            asyncio.run(self._record(cfg, catalog))
        asyncio.run(self._adopt_drops(cfg, catalog))
        rows = []
        for rec in catalog.recordings.list():
            probe = media.probe(cfg.storage.root / rec.path)
            rows.append((rec, probe.has_audio))
            self.say(
                f"   {rec.tags.location:<12} {rec.tags.purpose:<9} "
                f"{'audio' if probe.has_audio else 'no audio':<9} {Path(rec.path).name}"
            )
        rooms = {loc.id for loc in cfg.locations if loc.audio_room}
        outside = sum(1 for r, a in rows if a and r.tags.location not in rooms)
        inside = sum(1 for r, a in rows if a and r.tags.location in rooms)
        self.say(f"   probed every file: {inside} with audio in the audio room, {outside} outside")
        return {
            "recordings": len(rows),
            "recorded_segments": sum(1 for r, _ in rows if r.source_id),
            "audio_in_audio_rooms": inside,
            "audio_outside_audio_rooms": outside,
            "quarantined": self._quarantined,
        }

    async def _record(self, cfg: Config, catalog: Catalog) -> None:
        from edge_agent.recording.recorder_manager import RecorderManager

        self.say(
            f"   recording cam-lab-1 (audio room) and cam-gate-1 for {self.record_seconds:.0f} s;"
            " both send a tone"
        )
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        manager = RecorderManager(source_plans(cfg), intake, cfg.storage.root)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        await asyncio.sleep(self.record_seconds)
        stop.set()
        await task

    async def _adopt_drops(self, cfg: Config, catalog: Catalog) -> None:
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        now = self.now
        gate, lab = cfg.watch[0].path, cfg.watch[1].path
        drops = [
            (gate / "gate-cam_incident.mp4", now - timedelta(days=4)),
            (gate / "gate-cam_old.mp4", now - timedelta(days=4, hours=3)),
            (gate / "gate-cam_recent.mp4", now - timedelta(minutes=20)),
            (lab / "lab-cam_session.mp4", now - timedelta(days=4)),
        ]
        for path, start in drops:
            make_clip(path, seconds=2, start=start, tone=True)
        (gate / "notes.mp4").write_text("not a video\n")
        self.say("   a recorder drops 4 clips (H.264 + AAC) and a text file named notes.mp4")
        self._quarantined = 0
        for w in cfg.watch:
            spec = WatchSpec(w.path, origin_for_watch(cfg, w), stable_seconds=1)
            for r in await FolderAdopter(spec, intake, now=utcnow).pass_once(force=True):
                name = Path(r.source).name
                if r.outcome is Outcome.ADOPTED and r.recording is not None:
                    self._ids[Path(name).stem] = r.recording.id
                    extra = " (audio removed: not an audio room)" if r.audio_removed else ""
                    self.say(f"   adopted {name}{extra}")
                else:
                    self._quarantined += 1
                    self.say(f"   {r.outcome} {name}: {r.reason}")

    # -- 2 ----------------------------------------------------------------------------------

    def _outside(self, cfg: Config, catalog: Catalog) -> dict[str, Any]:
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        out: dict[str, Any] = {}
        for name, purpose in (("promo", Purpose.MARKETING), ("traffic-study", Purpose.RND)):
            src = make_clip(self.workdir / f"{name}.mp4", seconds=2, start=self.now, tone=True)
            r = intake.adopt(src, origin_for(cfg, "street", purpose), utcnow())
            rec = r.recording
            assert rec is not None, r.reason
            self._ids[name] = rec.id
            days = (rec.deadline - rec.start).days if rec.deadline else None
            self.say(
                f"   ingest {name}.mp4 --location street --purpose {purpose}: site "
                f"{rec.tags.site}, kept until {iso(rec.deadline) if rec.deadline else '-'} "
                f"({days} days)"
            )
            out[str(purpose)] = {"site": str(rec.tags.site), "days_kept": days}
        return out

    # -- 3 ----------------------------------------------------------------------------------

    def _hold_and_sweep(self) -> dict[str, Any]:
        start = self.now - timedelta(days=4, minutes=10)
        hold = self.cli(
            "hold", "add", "--location", "gate", "--from", iso(start),
            "--to", iso(start + timedelta(minutes=30)), "--kind", "incident",
            "--reason", "bicycle theft, police report 117", "--by", "demo",
        )  # fmt: skip
        sweep = self.cli("retention", "sweep")
        deleted = sweep.get("deleted_ids", [])
        kept = [k["id"] for k in sweep.get("kept_by_hold", [])]
        self.say(
            f"   hold {hold.get('id')}; the sweep deleted {len(deleted)} recording(s) past "
            f"their deadline and kept {len(kept)} held"
        )
        return {
            "hold": hold.get("id"),
            "deleted": deleted,
            "kept_by_hold": kept,
            "expected_deleted": [self._ids.get("gate-cam_old")],
            "expected_kept": [self._ids.get("gate-cam_incident")],
        }

    # -- 4 ----------------------------------------------------------------------------------

    def _erase_and_restrict(self) -> dict[str, Any]:
        t = self.now - timedelta(days=4)
        erase = self.cli(
            "erase", "--location", "lab-audio-1", "--from", iso(t - timedelta(minutes=5)),
            "--to", iso(t + timedelta(minutes=5)), "--request-ref", "DSR-2026-001",
        )  # fmt: skip
        t2 = self.now - timedelta(minutes=20)
        restrict = self.cli(
            "erase", "--restrict", "--location", "gate", "--from", iso(t2 - timedelta(minutes=5)),
            "--to", iso(t2 + timedelta(minutes=5)), "--request-ref", "DSR-2026-002",
        )  # fmt: skip
        erased = [r.get("id") for r in erase.get("touched", [])]
        restricted = [r.get("id") for r in restrict.get("touched", [])]
        self.say(f"   erased {len(erased)} recording(s); restricted {len(restricted)}")
        return {
            "erased": erased,
            "restricted": restricted,
            "expected_erased": [self._ids.get("lab-cam_session")],
            "expected_restricted": [self._ids.get("gate-cam_recent")],
            "receipts": [erase.get("ref") or "DSR-2026-001", restrict.get("ref") or "DSR-2026-002"],
        }

    # -- 5 ----------------------------------------------------------------------------------

    def _anonymize(self, cfg: Config, catalog: Catalog) -> dict[str, Any]:
        try:
            from edge_agent.anonymize.engine import anonymize_file
            from edge_agent.anonymize.settings import AnonSettings
        except ImportError:
            self.say(
                "   not shown: install the anonymize extra (pip install 'edge-agent[anonymize]')"
            )
            return {"built": False, "why": "the anonymize extra is not installed"}
        clip = face_clip(self.workdir / "face-study.mp4", seconds=2, start=self.now)
        if clip is None:
            return {"built": False, "why": "scikit-image (its photograph) is not installed"}
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        r = intake.adopt(clip, origin_for(cfg, "street", Purpose.RND), utcnow())
        original = r.recording
        assert original is not None, r.reason
        src = cfg.storage.root / original.path
        dst = self.workdir / "face-study.anonymized.mkv"
        res = anonymize_file(src, dst, AnonSettings(threads=2))
        before = still_jpeg(src, self.workdir / "before.jpg")
        after = still_jpeg(dst, self.workdir / "after.jpg") if dst.exists() else None
        derived = self._catalogue_derivative(cfg, catalog, original, dst, res.verified)
        self.say(
            f"   {res.frames} frames, faces filled {res.filled_boxes} times, residual "
            f"detections {sum(res.residuals.values())}: "
            f"{'verified' if res.verified else 'NOT verified'}"
        )
        self.say(f"   before: {before}  after: {after}")
        return {
            "built": True,
            "original": original.id,
            "original_deadline": iso(original.deadline) if original.deadline else None,
            "derivative": derived.id if derived else None,
            "derivative_deadline": iso(derived.deadline) if derived and derived.deadline else None,
            "verified": res.verified,
            "residuals": sum(res.residuals.values()),
            "audio_in_derivative": (
                media.probe(cfg.storage.root / derived.path).has_audio if derived else None
            ),
            "before": str(before),
            "after": str(after) if after else None,
        }

    def _catalogue_derivative(
        self, cfg: Config, catalog: Catalog, original: Recording, path: Path, verified: bool
    ) -> Recording | None:
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        origin = origin_for(cfg, "street", Purpose.RND, anonymized=verified)
        r = intake.adopt(path, origin, utcnow())
        return r.recording

    # -- 6 ----------------------------------------------------------------------------------

    def _export(self) -> dict[str, Any]:
        out = self.workdir / "export-street"
        receipt = self.cli(
            "export", "--location", "street", "--from", iso(self.now - timedelta(hours=1)),
            "--to", iso(self.now + timedelta(hours=1)), "--request-ref", "PRESS-2026-7",
            "--reason", "press kit for the traffic study", "--out", str(out),
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", "export", "verify", str(out), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.say(f"   $ edge-agent export verify {out}")
        self.say(
            f"   exported {receipt.get('file_count', 0)} file(s), left out "
            f"{receipt.get('left_out', {})}; verify: {'ok' if done.returncode == 0 else 'FAILED'}"
        )
        return {
            "status": receipt.get("status"),
            "files": receipt.get("file_count", 0),
            "left_out": receipt.get("left_out", {}),
            "left_out_why": receipt.get("left_out_why", {}),
            "manifest_sha256": receipt.get("manifest_sha256"),
            "verified": done.returncode == 0,
            "out": str(out),
        }

    # -- 7 ----------------------------------------------------------------------------------

    def _clock_1970(self, cfg: Config, catalog: Catalog) -> dict[str, Any]:
        from edge_agent.retention.janitor import Janitor

        janitor = Janitor.from_settings(janitor_settings(cfg), catalog)
        res = janitor.sweep_once(datetime(1970, 1, 1, tzinfo=UTC))
        self.say(
            f"   sweep at 1970-01-01: deleted {len(res.deleted)}; "
            f"clock {'trusted' if res.clock_trusted else 'untrusted'}: {res.clock_reason}"
        )
        back = janitor.guard.check()
        self.say(f"   the clock back at {iso(utcnow())}: {'trusted' if back.trusted else 'not'}")
        return {
            "deleted": len(res.deleted),
            "clock_trusted": res.clock_trusted,
            "reason": res.clock_reason,
            "trusted_again": back.trusted,
        }

    # -- 8 ----------------------------------------------------------------------------------

    def _console(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/console"
        token_file = self.workdir / "liveview.token"
        if not self.keep:
            self.say("   run `edge-agent demo --keep` to keep this site and open its console")
            return {"shown": False, "url": url}
        self.say(f"   start the agent:  edge-agent run --config {self.cfg_path}")
        self.say(f"   then open {url} and log in with the token in {token_file}")
        return {"shown": True, "url": url, "token_file": str(token_file)}

    # -- 9 ----------------------------------------------------------------------------------

    def _summary(self, cfg: Config, catalog: Catalog) -> dict[str, Any]:
        from edge_agent.core.retention_plan import plan

        now = utcnow()
        # Past deadline and not kept by a hold: what a sweep would delete now.
        due = plan(
            catalog.schedule.due_page(now, 10_000), catalog.holds.list(), now, clock_trusted=True
        )
        overdue = len(due.deletions)
        rooms = {loc.id for loc in cfg.locations if loc.audio_room}
        audio_outside = sum(
            1
            for rec in catalog.recordings.list()
            if rec.tags.location not in rooms and media.probe(cfg.storage.root / rec.path).has_audio
        )
        verdict = AuditLog(catalog).verify()
        outbox = Outbox(catalog)
        entries = outbox.peek(1000)
        published = 0
        if broker_answers():
            published = publish_local("edge/gw-demo-01/events", [e.payload for e in entries])
            outbox.ack([e.seq for e in entries[:published]])
        where = ":".join(map(str, demo_broker()))
        self.say(f"   recordings past their deadline (not held): {max(0, overdue)}")
        self.say(f"   recordings with audio outside audio rooms: {audio_outside}")
        self.say(
            f"   audit chain: {'verified' if verdict.ok else 'BROKEN'} ({verdict.entries} entries)"
        )
        if published:
            self.say(f"   events: {published} published to the broker on {where}")
        else:
            self.say(f"   events: {len(entries)} queued in the outbox (no broker on {where})")
        return {
            "past_deadline": max(0, overdue),
            "audio_outside_audio_rooms": audio_outside,
            "audit_verified": verdict.ok,
            "audit_entries": verdict.entries,
            "events_queued": len(entries) - published,
            "events_published": published,
        }


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or not arg) else arg
