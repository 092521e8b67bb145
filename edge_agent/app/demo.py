"""``edge-agent demo``: the whole pipeline on a fresh machine, in a temporary folder.

No camera and no broker needed. It writes a config with two locations (an audio
room and a gate), makes clips the way a camera or NVR would drop them, adopts
them through the same watched-folder path the daemon uses, then shows the
catalog with its tags, proves the gate's recordings carry no audio, prints the
retention plan and the events that would be published over MQTT.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import sys
import tempfile
from array import array
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from edge_agent.config.config import Config, load_config
from edge_agent.core.model import Purpose, iso, utcnow
from edge_agent.core.retention_plan import plan
from edge_agent.intake.adopter import FolderAdopter, WatchSpec
from edge_agent.intake.intake import Intake, Outcome
from edge_agent.intake.runtime import intake_settings, origin_for, origin_for_watch
from edge_agent.media import media
from edge_agent.store.catalog import Catalog, open_catalog_from_config
from edge_agent.store.outbox_store import Outbox

CONFIG = """\
# Written by `edge-agent demo`.
[device]
id = "gw-demo-01"
hw_profile = "generic-linux"

[storage]
root = "{root}/recordings"
catalog = "{root}/catalog.db"

[[locations]]
id = "lab-audio-1"
kind = "premises"
audio_room = true
signage = true

[[locations]]
id = "gate"
kind = "premises"
audio_room = false
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
"""


def _frame(index: int, w: int, h: int, seed: int) -> Any:
    import av

    frame = av.VideoFrame(w, h, "yuv420p")
    for n, plane in enumerate(frame.planes):
        ph = h if n == 0 else h // 2
        row = bytes((x + index * 4 + n * 64 + seed) & 0xFF for x in range(plane.line_size + ph))
        plane.update(b"".join(row[y : y + plane.line_size] for y in range(ph)))
    frame.pts = index
    return frame


def make_clip(path: Path, *, seconds: float, start: datetime, tone: bool) -> Path:
    """A camera-like clip: H.264 test pattern, AAC tone when asked, creation_time set."""
    import av

    fps, (w, h), sr, n = 15, (320, 180), 48000, 1024
    seed = sum(path.name.encode()) % 251  # each camera's picture differs, like real ones
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata["creation_time"] = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        a = out.add_stream("aac", rate=sr) if tone else None
        for i in range(int(seconds * fps)):
            out.mux(v.encode(_frame(i, w, h, seed)))
        out.mux(v.encode(None))
        if a is not None:
            for k in range(0, int(seconds * sr) - n, n):
                pcm = array(
                    "h", (int(6000 * math.sin(2 * math.pi * 440 * (k + i) / sr)) for i in range(n))
                )
                af = av.AudioFrame(format="s16", layout="mono", samples=n)
                af.planes[0].update(pcm.tobytes())
                af.sample_rate, af.pts, af.time_base = sr, k, Fraction(1, sr)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def demo_broker() -> tuple[str, int]:
    """Where the demo looks for a broker: ``$EDGE_AGENT_DEMO_BROKER`` or 127.0.0.1:1883."""
    host, _, port = os.environ.get("EDGE_AGENT_DEMO_BROKER", "127.0.0.1:1883").rpartition(":")
    return host or "127.0.0.1", int(port)


def broker_answers() -> bool:
    try:
        with socket.create_connection(demo_broker(), timeout=0.5):
            return True
    except OSError:
        return False


class Demo:
    def __init__(self, workdir: Path, out: TextIO = sys.stdout, record_seconds: float = 20) -> None:
        self.workdir = workdir
        self.out = out
        self.record_seconds = record_seconds

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> int:
        cfg_path = self.workdir / "config.toml"
        segment = max(2, min(10, int(self.record_seconds / 2)))
        cfg_path.write_text(CONFIG.format(root=self.workdir, segment=segment))
        cfg = load_config(cfg_path)
        for w in cfg.watch:
            w.path.mkdir(parents=True, exist_ok=True)
        self.say(f"== edge-agent demo in {self.workdir}")
        self.say(f"config: {cfg_path} (two locations: lab-audio-1 is an audio room, gate is not)")
        catalog = open_catalog_from_config(cfg)
        with catalog:
            if self.record_seconds > 0:
                asyncio.run(self._record(cfg, catalog))
            asyncio.run(self._adopt_drops(cfg, catalog))
            self._direct_ingest(cfg, catalog)
            self._show_catalog(cfg, catalog)
            self._show_plan(catalog)
            self._show_events(catalog)
        return 0

    async def _record(self, cfg: Config, catalog: Catalog) -> None:
        from edge_agent.recording.recorder_manager import RecorderManager

        self.say(
            f"\n-- recording two virtual cameras for {self.record_seconds:.0f} s "
            "(both send a test pattern and a tone; only the audio room keeps the tone)"
        )
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        manager = RecorderManager(cfg, intake)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.record_seconds
        while loop.time() < deadline and not task.done():
            await asyncio.sleep(min(5.0, max(0.1, deadline - loop.time())))
            states = ", ".join(
                f"{st.as_dict()['id']}: {st.as_dict()['state']} "
                f"({st.as_dict()['segments']} segments)"
                for st in manager.snapshot()
            )
            self.say(f"   {states}")
        stop.set()
        await task

    async def _adopt_drops(self, cfg: Config, catalog: Catalog) -> None:
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        now = utcnow()
        self.say("\n-- another recorder drops files into the watched folders")
        drops = [
            (cfg.watch[0].path / "gate-cam_1.mp4", now - timedelta(days=4), True),
            (cfg.watch[0].path / "gate-cam_2.mp4", now - timedelta(minutes=5), True),
            (cfg.watch[1].path / "lab-cam_1.mp4", now - timedelta(days=4), True),
        ]
        for path, start, tone in drops:
            make_clip(path, seconds=2, start=start, tone=tone)
            self.say(f"dropped {path.name} (H.264 + AAC, recorded {iso(start)})")
        (cfg.watch[0].path / "notes.mp4").write_text("not a video\n")
        self.say("dropped notes.mp4 (a text file pretending to be video)")
        adopters = [
            FolderAdopter(
                WatchSpec(w.path, origin_for_watch(cfg, w), stable_seconds=1), intake, now=utcnow
            )
            for w in cfg.watch
        ]
        for adopter in adopters:
            for result in await adopter.pass_once(force=True):
                self._print_result(
                    result.outcome, result.source, result.reason, result.audio_removed
                )

    def _direct_ingest(self, cfg: Config, catalog: Catalog) -> None:
        self.say("\n-- `edge-agent ingest` of a marketing clip shot outside")
        src = make_clip(self.workdir / "promo.mp4", seconds=2, start=utcnow(), tone=True)
        intake = Intake(catalog, intake_settings(cfg), actor="demo")
        result = intake.adopt(src, origin_for(cfg, "gate", Purpose.MARKETING), utcnow())
        self._print_result(result.outcome, result.source, result.reason, result.audio_removed)

    def _print_result(
        self, outcome: Outcome, source: str, reason: str | None, stripped: bool
    ) -> None:
        name = Path(source).name
        if outcome is Outcome.ADOPTED:
            extra = " (audio removed: not an audio room)" if stripped else ""
            self.say(f"adopted {name}{extra}")
        else:
            self.say(f"{outcome} {name}: {reason}")

    def _show_catalog(self, cfg: Config, catalog: Catalog) -> None:
        self.say("\n-- catalog (tags are also inside each file)")
        self.say(
            f"{'location':<12} {'purpose':<9} {'site':<8} {'audio':<5} {'start':<20} "
            f"{'deadline':<20} streams (ffprobe-equivalent)"
        )
        for rec in catalog.recordings.list():
            probe = media.probe(cfg.storage.root / rec.path)
            kinds = ",".join(s.type for s in probe.streams)
            self.say(
                f"{rec.tags.location:<12} {rec.tags.purpose:<9} {rec.tags.site:<8} "
                f"{'yes' if rec.tags.audio else 'no':<5} {iso(rec.tags.start):<27} "
                f"{iso(rec.deadline) if rec.deadline else 'none':<27} {kinds}"
            )
            if rec.tags.location != "lab-audio-1" and probe.has_audio:
                raise SystemExit("demo failed: audio found outside the audio room")
        self.say("check: no recording outside lab-audio-1 has an audio stream")

    def _show_plan(self, catalog: Catalog) -> None:
        now = utcnow()
        recs = catalog.recordings.list()
        holds = catalog.holds.list()
        p = plan(recs, holds, now, clock_trusted=True)
        self.say(f"\n-- retention plan at {iso(now)}")
        for d in p.deletions:
            self.say(f"delete {d.path}: {d.detail}")
        if p.next_deadline:
            self.say(f"next deadline: {iso(p.next_deadline)}")
        kept = [r for r in recs if r.id not in {d.recording_id for d in p.deletions}]
        for r in kept:
            self.say(f"keep   {r.path} until {iso(r.deadline) if r.deadline else 'no limit'}")

    def _show_events(self, catalog: Catalog) -> None:
        outbox = Outbox(catalog)
        entries = outbox.peek(1000)
        topic = "edge/gw-demo-01/events"
        sent = self._publish_local(topic, [e.payload for e in entries]) if broker_answers() else 0
        if sent:
            outbox.ack([e.seq for e in entries[:sent]])
            where = f"published to the broker on {':'.join(map(str, demo_broker()))} as {topic}"
        else:
            where = (
                f"no broker on {':'.join(map(str, demo_broker()))}: "
                "they stay queued in the durable outbox"
            )
        self.say(f"\n-- events ({where})")
        for e in entries:
            what = e.payload.get("path") or e.payload.get("reason") or ""
            self.say(f"seq {e.seq:>3} {e.type:<24} {what}")

    def _publish_local(self, topic: str, payloads: list[dict[str, Any]]) -> int:
        """QoS 1 publish of the queued events; returns how many the broker acknowledged."""
        import json

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edge-agent-demo")
        try:
            host, port = demo_broker()
            client.connect(host, port, keepalive=10)
            client.loop_start()
            infos = [client.publish(topic, json.dumps(p), qos=1) for p in payloads]
            done = 0
            for info in infos:
                info.wait_for_publish(timeout=5)
                if not info.is_published():
                    break
                done += 1
            return done
        except (OSError, RuntimeError, ValueError):
            return 0
        finally:
            client.loop_stop()
            client.disconnect()


def run_demo(
    keep: bool = False,
    workdir: Path | None = None,
    out: TextIO = sys.stdout,
    record_seconds: float = 20,
) -> int:
    own = workdir is None
    wd = workdir or Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    try:
        return Demo(wd, out, record_seconds).run()
    finally:
        if own and not keep:
            shutil.rmtree(wd, ignore_errors=True)
        elif own:
            out.write(f"\nkept {wd} (config.toml, recordings/, catalog.db)\n")
