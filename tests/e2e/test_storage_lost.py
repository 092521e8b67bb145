"""The recordings disk goes away while a camera records, and comes back (docs/storage.md).

The real daemon records to a real tmpfs mounted at the storage root (standing
in for a USB disk). The tmpfs is lazily unmounted, as when the disk is pulled:
the bare mount point, a folder on the system disk, must stay empty; the alarm
and the status say why; then a tmpfs with the disk's content (its marker
above all) is mounted back: recording resumes, and catalog and disk agree,
the recordings that went away with the disk reported ``missing``, none
``deleted``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.media import media
from edge_agent.store.catalog import STORAGE_MARKER
from tests.support.broker import Broker, Subscriber
from tests.support.cli import run_cli_config as cli
from tests.support.daemon import ROOT, start, stop, wait_until, write_config
from tests.support.mediagen import make_video
from tests.support.storage import files, rows
from tests.support.tmpfs import mounted_tmpfs

CAM = "cam-door"


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_disk_pulled_while_recording_then_back(tmp_path: Path, broker: Broker) -> None:
    disk = tmp_path / "disk"
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg = write_config(tmp_path, [CAM], broker=broker, root=disk, watch=drop)
    topics = [f"{ROOT}/status", f"{ROOT}/events", f"{ROOT}/telemetry"]
    sub = Subscriber(broker, topics, client_id="storage-lost")
    log = tmp_path / "agent.log"
    backup = tmp_path / "disk-content"
    with mounted_tmpfs(disk, "48m"):
        agent = start(cfg, log)
        try:
            sub.wait_for(f"{ROOT}/status", lambda g: any(p["state"] == "online" for p in g))
            wait_until(lambda: len(files(disk)) >= 3, what="three segments")
            assert (disk / STORAGE_MARKER).is_file()
            # What the disk will hold when it comes back: the segments filed after this
            # copy go away with the disk (as if their writes never reached it).
            shutil.copytree(disk, backup)
            copied = len(files(backup))
            wait_until(lambda: len(files(disk)) > copied, what="a segment after the copy")
            subprocess.run(["umount", "-l", str(disk)], check=True)
            pulled = time.monotonic()

            lost = sub.wait_for(
                f"{ROOT}/events",
                lambda g: any(e["type"] == "alarm.storage_lost" for e in g),
                timeout=15,
            )
            noticed = time.monotonic() - pulled
            alarm = next(e for e in lost if e["type"] == "alarm.storage_lost")
            assert "no storage marker" in alarm["reason"], alarm
            assert alarm["storage_root"] == str(disk)
            status = sub.wait_for(
                f"{ROOT}/status",
                lambda g: any("storage lost" in r for r in g[-1].get("reasons", [])),
                timeout=15,
            )[-1]
            assert status["state"] == "degraded"
            # A file dropped for adoption meanwhile waits where it is.
            clip = make_video(
                drop / "clip.mkv", container="mkv", seconds=1.0, creation_time=datetime.now(UTC)
            )
            # Longer than a few segments: nothing may appear on the system disk.
            time.sleep(6)
            assert everything(disk) == [], "written to the bare mount point"
            assert clip.exists(), "adopted while the disk was gone"
            assert agent.poll() is None
            text = log.read_text()
            assert "recording and adoption paused" in text
            assert "component_failed" not in json.dumps(sub.payloads(f"{ROOT}/events"))

            # The disk comes back (a new mount: a new device number, the same marker).
            res = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert res.returncode == 0, res.stderr
            try:
                shutil.copytree(backup, disk, dirs_exist_ok=True)
                back = sub.wait_for(
                    f"{ROOT}/events",
                    lambda g: any(
                        e["type"] == "alarm.cleared" and e.get("alarm") == "storage_lost" for e in g
                    ),
                    timeout=20,
                )
                cleared = next(
                    e
                    for e in back
                    if e["type"] == "alarm.cleared" and e.get("alarm") == "storage_lost"
                )
                assert cleared["reconcile_refused"] is None, cleared
                assert cleared["missing"] >= 1, cleared
                before = len(files(disk))
                wait_until(lambda: len(files(disk)) >= before + 2, what="recording again")
                wait_until(lambda: not clip.exists(), what="the dropped file adopted")
                sub.wait_for(
                    f"{ROOT}/status",
                    lambda g: not any("storage" in r for r in g[-1].get("reasons", [])),
                    timeout=15,
                )
                assert stop(agent) == 0
                check_catalog_against_disk(cfg, disk)
            finally:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait(5)
                subprocess.run(["umount", "-l", str(disk)], check=False)
        finally:
            sub.close()
            if agent.poll() is None:
                agent.kill()
                agent.wait(5)
    print(f"storage loss noticed {noticed:.2f} s after the unmount")


def check_catalog_against_disk(cfg: Path, disk: Path) -> None:
    """Every live row's file is on the disk, whole; rows of lost files are missing."""
    res = cli(cfg, "reconcile", "--dry-run", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads(res.stdout)
    assert rep["readopted"] == [] and rep["missing"] == [], rep
    assert rep["untagged"] == [] and rep["conflicts"] == [], rep
    all_rows = rows(cfg)
    assert not [r for r in all_rows if r["state"] in ("deleted", "deleting")], all_rows
    live = [r for r in all_rows if r["state"] == "active"]
    missing = [r for r in all_rows if r["state"] == "missing"]
    # The segments filed after the copy was taken went away with the disk.
    assert 1 <= len(missing) <= 3, missing
    for r in live:
        f = disk / r["path"]
        assert f.is_file() and f.stat().st_size == r["size"], r
        assert media.sha256_file(f) == r["sha256"], r
    assert {str(p.relative_to(disk)) for p in files(disk)} == {r["path"] for r in live}
    for r in missing:
        assert not (disk / r["path"]).exists(), r
